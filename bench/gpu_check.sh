#!/usr/bin/env bash
# On a CUDA machine: the quickstart with mixed precision on the GPU, the feature-extraction
# benchmark's tlkit and floor rows on the GPU, and, with two GPUs or more, the quickstart again
# on all of them (torchrun, one process per GPU). Prints the card and the throughput of each.
# Without a CUDA GPU visible to torch it refuses (exit code 3) and runs nothing.
#
#   make setup && bench/gpu_check.sh              # writes runs/gpu_check/
#
# Environment: OUT (default runs/gpu_check), DEVICE (default cuda; DEVICE=cpu runs the same steps
# on the CPU, to check the script itself), QS_SET (extra `--set KEY=VALUE` words for the
# quickstart), FE_ARGS (extra flags for bench/feature_extraction.py, e.g. "--train 200 --val 50").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/gpu_check}
DEVICE=${DEVICE:-cuda}
QS_SET=${QS_SET:-}
FE_ARGS=${FE_ARGS:-}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ ! -x "$PY" ]; then
  echo "gpu_check: $PY not found; run make setup first" >&2
  exit 2
fi
if [ "$DEVICE" = cuda ] && ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: refused: no CUDA GPU is visible to torch" \
       "($("$PY" -c 'import torch; print(f"torch {torch.__version__}, built with CUDA {torch.version.cuda}")'))." \
       "Run it on a machine with an NVIDIA GPU and a CUDA build of torch. Nothing was run." >&2
  exit 3
fi

echo "== machine"
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader || true
fi
"$PY" - <<'EOF'
import os, torch
if torch.cuda.is_available() and os.environ.get("DEVICE", "cuda") == "cuda":
    n = torch.cuda.device_count()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {n} GPU(s): "
          + ", ".join(torch.cuda.get_device_name(i) for i in range(n))
          + f"; bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
else:
    print(f"torch {torch.__version__} on the CPU ({os.cpu_count()} CPUs): a check of the script")
EOF
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
[ "$DEVICE" = cuda ] || NGPU=0

rm -rf "$OUT"
mkdir -p "$OUT"

# Throughput of a finished run: training examples (times epochs) per second of the training
# loop (validation passes included), and test examples per second of the rest.
throughput() {
  "$PY" - "$1" "$2" <<'EOF'
import json, sys
run, what = sys.argv[1], sys.argv[2]
s = json.load(open(f"{run}/summary.json"))
n = s["data"]["sizes"]
ex = n["train"] * s["epochs_run"]
print(f"{what}: {n['train']:,} training examples x {s['epochs_run']} epochs in "
      f"{s['train_seconds']:.1f} s = {ex / s['train_seconds']:,.0f} examples/s "
      f"(validation passes included); {s['total_seconds']:.1f} s in all with loading and the "
      f"test split ({n['test']:,}); test accuracy {s['test']['accuracy']:.4f}"
      + (f"; {s['processes']} processes" if s.get("processes") else ""))
EOF
}

echo "== quickstart (MiniLM, gradual unfreezing), mixed precision on $DEVICE"
# shellcheck disable=SC2086
"$PY" -m tlkit.cli fit examples/quickstart.yaml --out "$OUT/quickstart" --no-report \
  --set transfer_config.device="$DEVICE" --set transfer_config.mixed_precision=true $QS_SET
throughput "$OUT/quickstart" "quickstart, 1 process"

echo "== feature extraction (MobileNetV2, Fashion-MNIST): tlkit and the floor on $DEVICE"
# shellcheck disable=SC2086
"$PY" bench/feature_extraction.py --device "$DEVICE" --rows tlkit,tlkit-warm,floor --threads 4 \
  --json "$OUT/feature_extraction.json" $FE_ARGS
"$PY" - "$OUT/feature_extraction.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
t, w, f = r.get("tlkit", {}), r.get("tlkit-warm", {}), r.get("floor", {})
if "features_seconds" in t:
    n = t["n_train"] + t["n_val"]
    print(f"feature extraction: tlkit computed the features of {n:,} images in "
          f"{t['features_seconds']:.2f} s = {n / t['features_seconds']:,.0f} images/s "
          f"(cold cache); the run took {t['seconds']:.1f} s end to end")
if "seconds" in w:
    print(f"feature extraction: tlkit with the warm disk cache took {w['seconds']:.1f} s end to end")
if "seconds" in f:
    print(f"feature extraction: the floor (one forward pass, batches of 64) ran "
          f"{f['n_images']:,} images in {f['seconds']:.2f} s = "
          f"{f['n_images'] / f['seconds']:,.0f} images/s")
EOF

if [ "$NGPU" -ge 2 ]; then
  echo "== quickstart on $NGPU GPUs (torchrun, one process per GPU, the same global batch)"
  # shellcheck disable=SC2086
  "$PY" -m torch.distributed.run --standalone --nproc_per_node "$NGPU" -m tlkit.cli fit \
    examples/quickstart.yaml --out "$OUT/quickstart-$NGPU" --no-report \
    --set transfer_config.mixed_precision=true $QS_SET
  throughput "$OUT/quickstart-$NGPU" "quickstart, $NGPU processes"
fi
echo "== done: $OUT"
