#!/usr/bin/env bash
# Installs the peers the benchmarks in bench/ compare tlkit with (fastai, Lightning, and accelerate
# for Hugging Face Trainer) into the project's venv, as tlkit's optional extra `bench`, then
# SetFit (bench/few_shot.py) and its metrics library `evaluate`, pinned and with --no-deps: pip
# then leaves the installed stack (datasets, transformers, sentence-transformers) as it is, and
# everything they import is there (datasets from the extra, sentence-transformers from the
# packaged MiniLM, the rest tlkit's own). None of them is a runtime dependency of tlkit. torch and
# torchvision stay exactly as installed: pip gets them as constraints (the pair that imports here
# is torch 2.14.1 + torchvision 0.29.1).
# Idempotent: a second run returns at once when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || ./scripts/setup.sh
PY="$VENV/bin/python"
SETFIT="setfit==1.2.0 evaluate==0.4.6"
STAMP="$VENV/.tlkit-bench-$(cat pyproject.toml bench/setup.sh | sha1sum | cut -c1-12)"
if [ -f "$STAMP" ] && "$PY" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m)
    for m in ('fastai', 'lightning', 'accelerate', 'setfit', 'evaluate')))" 2>/dev/null; then
  exit 0
fi

constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"$PY" - > "$constraints" <<'PYEOF'
from importlib.metadata import version
for name in ("torch", "torchvision"):
    print(f"{name}=={version(name)}")
PYEOF
echo "bench/setup.sh: installing tlkit[bench] with $(tr '\n' ' ' < "$constraints")held"
{ "$VENV/bin/pip" install --disable-pip-version-check -q -c "$constraints" -e ".[bench]" 2>&1; } \
  | { grep -v "is ignored: it is neither a file nor a directory" || true; }
echo "bench/setup.sh: installing $SETFIT (--no-deps)"
"$VENV/bin/pip" install --disable-pip-version-check -q --no-deps $SETFIT
"$PY" - <<'PYEOF'
from importlib.metadata import version
print("bench/setup.sh: " + ", ".join(
    f"{d} {version(d)}" for d in ("torch", "torchvision", "fastai", "lightning", "accelerate",
                                  "transformers", "timm", "setfit", "evaluate", "datasets",
                                  "sentence-transformers")))
PYEOF
touch "$STAMP"
