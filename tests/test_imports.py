"""The import graph of src/tlkit, read from the source (module-top and function-local imports
alike): no cycles between modules or between top-level packages, every import goes downward
through the layers of the data flow, and nobody imports another module's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    ("tlkit.errors", "tlkit.tensors", "tlkit.device", "tlkit.files", "tlkit.metrics",
     "tlkit.token_rows", "tlkit.distributed", "tlkit.threads", "tlkit.outputs", "tlkit.events"),
    ("tlkit.backbones", "tlkit.data", "tlkit.heads", "tlkit.model", "tlkit.strategies",
     "tlkit.qa"),
    ("tlkit.config",),
    ("tlkit.plan", "tlkit.assemble", "tlkit.regularization", "tlkit.rundir", "tlkit.saved",
     "tlkit.model_json", "tlkit.summary_json", "tlkit.predictions", "tlkit.tensorboard",
     "tlkit.tracking"),
    ("tlkit.train", "tlkit.cache"),
    ("tlkit.inputs",),  # a config's data, model, cache and hooks: for fit, auto, the diagnostics
    ("tlkit.adapt", "tlkit.diagnose", "tlkit.distillation"),
    ("tlkit.report",),  # reads run directories; run.after_fit writes a fit's card and report
    ("tlkit.select",),  # what chooses: below run, as a fit resolves auto before it trains
    ("tlkit.run",),
    ("tlkit.export",),
    ("tlkit.cli", "tlkit.api", "tlkit.progress"),  # the edges: only they print progress
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "tlkit").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _resolve(name: str) -> str:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) for every tlkit import."""
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tlkit"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if full in MODULES:
                    out.append((full, None, node.lineno))
                else:
                    out.append((_resolve(node.module), a.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(_resolve(a.name), None, node.lineno) for a in node.names
                    if a.name.startswith("tlkit")]
    return out


GRAPH = {m: {t for t, _, _ in _imports(p) if t != m} for m, p in MODULES.items()}


def _layer(module: str) -> int:
    for i, names in enumerate(LAYERS):
        if any(module == n or module.startswith(n + ".") for n in names):
            return i
    if module == "tlkit":
        return 0
    raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_packages():
    def top(m: str) -> str:
        return ".".join(m.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for m, targets in GRAPH.items():
        packages.setdefault(top(m), set()).update(top(t) for t in targets if top(t) != top(m))
    assert _cycles(packages) == []


def test_imports_only_go_down_the_layers():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, targets in GRAPH.items() for t in targets if _layer(t) > _layer(m)]
    assert upward == []


def test_no_module_imports_another_modules_private_names():
    private = [f"{MODULES[m].relative_to(SRC)}:{line} imports {name} from {t}"
               for m, p in MODULES.items() for t, name, line in _imports(p)
               if name is not None and name.startswith("_") and not name.startswith("__")
               and t != m]
    assert private == []


@pytest.mark.parametrize("lower,higher", [("tlkit.backbones", "tlkit.train"),
                                          ("tlkit.plan", "tlkit.run"),
                                          ("tlkit.data", "tlkit.cli")])
def test_the_check_sees_an_upward_import(lower: str, higher: str):
    assert _layer(lower) < _layer(higher)  # such an import would be reported above
