"""What the peer benchmarks share: one child process per row, peak memory, the same data and
model for every row, frozen BatchNorm for the peers, and the markdown table.

Each row of a benchmark (tlkit, the plain loop, fastai, ...) runs in a child process of its own:
its peak memory (``ru_maxrss``, the resident-set high-water mark) is then that row's alone, and
no row warms another's caches. The child re-reads the parent's flags, runs one row and writes
its result as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Row = Callable[[argparse.Namespace], dict[str, Any]]


# --------------------------------------------------------------------------------------------------
# Rows in child processes
# --------------------------------------------------------------------------------------------------


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in every row (default 1: the issue's figures are one core)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default=None, help="comma-separated subset of the rows to run")
    p.add_argument("--json", default=None, help="also write every row's result to this file")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONWARNINGS": "ignore"}
    env.update(extra or {})
    return env


def run_row(script: str, row: str, argv: Sequence[str], env: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """Run one row of ``script`` in a child process with the parent's flags; its result."""
    print(f"[bench] {Path(script).name}: {row} ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-row-") as tmp:
        result = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(script).resolve()), *argv, "--child", row,
             "--result", str(result)],
            env=child_env(env), stdout=sys.stderr, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not result.is_file():
            print(f"[bench] {row} failed (exit code {proc.returncode})", file=sys.stderr)
            return {"row": row, "error": f"exit code {proc.returncode}"}
        out = json.loads(result.read_text())
    out.setdefault("row", row)
    out["process_seconds"] = round(wall, 2)
    print(f"[bench] {row}: done in {wall:.0f} s", file=sys.stderr, flush=True)
    return out


def child_main(rows: dict[str, Row], args: argparse.Namespace) -> int:
    """In a child: set the threads, run ``args.child``, write its result (plus peak RSS)."""
    import torch

    torch.set_num_threads(args.threads)
    out = rows[args.child](args)
    out["peak_rss_mib"] = round(peak_rss_mib(), 1)
    out["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(out))
    return 0


def selected(all_rows: Sequence[str], spec: str | None) -> list[str]:
    if not spec:
        return list(all_rows)
    want = [r.strip() for r in spec.split(",") if r.strip()]
    bad = [r for r in want if r not in all_rows]
    if bad:
        raise SystemExit(f"unknown row(s) {', '.join(bad)}; rows: {', '.join(all_rows)}")
    return [r for r in all_rows if r in want]


def preimport_tlkit() -> None:
    """Import what ``fit_run`` imports on its first call, so that no row's time counts imports."""
    import safetensors.torch  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import timm  # noqa: F401
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # noqa: F401

    import tlkit.assemble  # noqa: F401
    import tlkit.backbones.hf  # noqa: F401
    import tlkit.backbones.timm_backbone  # noqa: F401
    import tlkit.cache  # noqa: F401
    import tlkit.data.collate  # noqa: F401
    import tlkit.data.datasets  # noqa: F401
    import tlkit.data.sources  # noqa: F401
    import tlkit.data.splits  # noqa: F401
    import tlkit.plan  # noqa: F401
    import tlkit.saved  # noqa: F401
    import tlkit.train.checkpoint  # noqa: F401
    import tlkit.train.loop  # noqa: F401


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Marks:
    """Timestamps of named moments, relative to the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.at: dict[str, float] = {}

    def mark(self, name: str) -> float:
        self.at[name] = time.perf_counter() - self.t0
        return self.at[name]

    def since(self, name: str) -> float:
        return time.perf_counter() - self.t0 - self.at[name]


# --------------------------------------------------------------------------------------------------
# tlkit's disk cache, cold
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def cold_tlkit_cache() -> Iterator[Path]:
    """A fresh, empty TLKIT_CACHE for the benchmark's tlkit rows (nobody else's cache is
    touched): the feature cache starts cold; ``backbones/`` links the converted weights of the
    user's cache, so the one-time conversion of the packaged file is not what is timed."""
    from tlkit.backbones.packaged import PACKAGED_VISION, cache_dir, convert_to_safetensors

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-cache-") as tmp:
        root = Path(tmp)
        (root / "backbones").mkdir()
        for pv in PACKAGED_VISION.values():
            if pv.source_file() is not None:
                src = convert_to_safetensors(pv)
                (root / "backbones" / src.name).symlink_to(src)
        assert cache_dir() != root
        yield root


# --------------------------------------------------------------------------------------------------
# The same data and model for every row
# --------------------------------------------------------------------------------------------------


def image_data_section(n_train: int, n_val: int, image_size: int, seed: int) -> dict[str, Any]:
    """tlkit's data section for Fashion-MNIST: ``n_train + n_val`` images of its training
    split (stratified), of which ``n_val`` validate; the test split is the set's own."""
    return {"source": "fashion_mnist", "limit": n_train + n_val,
            "val_fraction": n_val / (n_train + n_val), "image_size": image_size, "seed": seed}


def splits_as_tlkit(raw: dict[str, Any], test_limit: int | None) -> Any:
    """The train / validation / test splits that ``tlkit.run.fit_run(cfg, test_limit=...)``
    trains and tests on, built with tlkit's own functions (same seed, same stratification)."""
    from tlkit.config import validate
    from tlkit.data import load_source, make_splits
    from tlkit.inputs import subset as _subset  # what fit_run's test_limit does

    cfg = validate(raw, "<bench>")
    splits = make_splits(load_source(cfg.data), cfg.data)
    if test_limit is not None and len(splits.test) > test_limit:
        splits.test = _subset(splits.test, test_limit, cfg.data.seed)
    return cfg, splits


def image_datasets(raw: dict[str, Any], test_limit: int | None) -> tuple[Any, Any, Any, int]:
    """tlkit's datasets (its decode, resize, crop and normalisation, per item) for the peers:
    (train, val, test, number of classes)."""
    from tlkit.backbones.registry import load_backbone
    from tlkit.data import build_dataset, resolve_preprocessing

    cfg, splits = splits_as_tlkit(raw, test_limit)
    prep = resolve_preprocessing(load_backbone(cfg.transfer_config.source_model).preprocessing,
                                 cfg.data)
    return (build_dataset(splits.train, prep), build_dataset(splits.val, prep),
            build_dataset(splits.test, prep), len(splits.classes or []))


def packaged_timm(name: str = "mobilenetv2", num_classes: int = 0) -> Any:
    """The timm model with the same weights file tlkit converts from the package (and the same
    pretrained config overlay)."""
    import timm

    from tlkit.backbones.packaged import PACKAGED_VISION, convert_to_safetensors

    pv = PACKAGED_VISION[name]
    return timm.create_model(pv.timm_arch, pretrained=True, num_classes=num_classes,
                             pretrained_cfg_overlay=dict(file=str(convert_to_safetensors(pv)),
                                                         **dict(pv.cfg_overlay)))


def timm_kwargs(name: str = "mobilenetv2") -> tuple[str, dict[str, Any]]:
    """(architecture, create_model keyword arguments) for libraries that call timm themselves."""
    from tlkit.backbones.packaged import PACKAGED_VISION, convert_to_safetensors

    pv = PACKAGED_VISION[name]
    return pv.timm_arch, {"pretrained_cfg_overlay": dict(
        file=str(convert_to_safetensors(pv)), **dict(pv.cfg_overlay))}


def top_group_params(name: str, k: int) -> list[list[str]]:
    """The parameter names (timm's, without tlkit's ``model.`` prefix) of tlkit's top ``k``
    layer groups of backbone ``name``, top first: what tlkit's ``last_block`` and
    ``last_two_blocks`` unfreeze."""
    from tlkit.backbones.registry import load_backbone

    groups = load_backbone(name).layer_groups()
    return [[p.removeprefix("model.") for p in g.param_names] for g in reversed(groups[-k:])]


def modules_of(model: Any, param_names: Sequence[str]) -> list[str]:
    """The largest submodules of ``model`` whose parameters all lie in ``param_names``."""
    names = set(param_names)
    out: list[str] = []
    for mname, m in model.named_modules():
        if mname == "" or any(mname.startswith(t + ".") for t in out):
            continue
        own = [f"{mname}.{p}" for p, _ in m.named_parameters()]
        if own and all(p in names for p in own):
            out.append(mname)
    covered = {f"{m}.{p}" for m in out for p, _ in model.get_submodule(m).named_parameters()}
    assert covered == names, sorted(names - covered)[:5]
    return out


def freeze_bn_stats(model: Any) -> None:
    """Put every BatchNorm whose parameters are all frozen in eval mode (call after
    ``model.train()``): a frozen layer then keeps its pretrained statistics, as tlkit does
    (and fastai's BnFreeze callback)."""
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters())
            if ps and not any(p.requires_grad for p in ps):
                m.eval()


def bn_stats(model: Any) -> dict[str, Any]:
    """A copy of every BatchNorm running statistic, to check later that frozen ones stayed."""
    return {n: b.detach().clone() for n, b in model.named_buffers() if ".running_" in n}


def frozen_bn_kept(model: Any, before: dict[str, Any]) -> bool:
    """Whether every BatchNorm whose parameters are frozen now kept its statistics."""
    import torch
    from torch import nn

    for mname, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            ps = list(m.parameters())
            if ps and not any(p.requires_grad for p in ps):
                for b in ("running_mean", "running_var"):
                    key = f"{mname}.{b}" if mname else b
                    if key in before and not torch.equal(before[key], getattr(m, b)):
                        return False
    return True


def accuracy_of(model: Any, loader: Any) -> float:
    import torch

    was = model.training
    model.eval()
    right = n = 0
    with torch.inference_mode():
        for x, y in loader:
            right += int((model(x).argmax(1) == y).sum())
            n += len(y)
    model.train(was)
    return right / max(1, n)


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def table(head: Sequence[str], body: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def fmt(x: float | None, spec: str = ".1f", none: str = "-") -> str:
    return none if x is None else format(x, spec)


def ratio(x: float | None, base: float | None) -> str:
    if x is None or not base:
        return "-"
    return f"{x / base:.2f}x"


def machine_line(threads: int) -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"{threads} torch thread(s) per row, no DataLoader workers")


def command_line(script: str, argv: Sequence[str]) -> str:
    return " ".join(["python", f"bench/{Path(script).name}", *argv])


def closing_notes(results: dict[str, dict[str, Any]], default_threads: int, script: str,
                  argv: Sequence[str], optimizer: bool = False) -> list[str]:
    """The last lines of a bench table's notes: each row's optimizer (where asked and given),
    the machine with the rows' torch threads, and the command that printed the table."""
    lines = []
    opts = {r: x.get("optimizer") for r, x in results.items() if x.get("optimizer")}
    if optimizer and opts:
        lines.append("- optimizer: " + "; ".join(f"{r}: {o}" for r, o in opts.items()) + ".")
    threads = next((x["threads"] for x in results.values() if "threads" in x), default_threads)
    return [*lines, f"- machine: {machine_line(threads)}.",
            f"- command: {command_line(script, argv)}"]


def rows_main(script: str, rows: Sequence[str], args: Any, argv: Sequence[str],
              report: Any) -> int:
    """Run the selected rows, each in a child process, print the table ``report`` makes of
    their results and save them (``--json``)."""
    results = {r: run_row(script, r, argv) for r in selected(rows, args.rows)}
    text = report(results, args, list(argv))
    print(text)
    save_json(args.json, {"argv": list(argv), "results": results, "table": text})
    return 0


def save_json(path: str | None, payload: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=1))


def add_replay_flags(p: argparse.ArgumentParser) -> None:
    """--json and --table-from for the benchmarks that train in one process."""
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--table-from", default=None, metavar="JSON",
                   help="print the table of an earlier run's --json file (no training)")


def replayed(args: argparse.Namespace, argv: Sequence[str],
             render: Callable[[dict[str, Any], list[str]], str]) -> bool:
    """With --table-from: print ``render(saved, argv of that run)`` and say so (no training)."""
    if not args.table_from:
        return False
    saved = json.loads(Path(args.table_from).read_text())
    print(render(saved, list(saved.get("argv", argv))))
    return True


# --------------------------------------------------------------------------------------------------
# Shifted target images
# --------------------------------------------------------------------------------------------------


def write_images(data: Any, idx: Sequence[int], folder: Path, seed: int,
                 recipe: Callable[[Any, Any], Any]) -> Path:
    """``recipe(image, rng)`` of each of ``data``'s images at ``idx`` as PNGs, and a CSV
    (image, label) that tlkit reads as a source; one seeded generator for the whole draw."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for k, i in enumerate(idx):
        f = folder / f"{k:05d}.png"
        out = recipe(np.asarray(data.inputs[i]), rng)
        Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(f)
        rows.append({"image": str(f), "label": data.classes[int(data.targets[i])]})
    path = folder / "images.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "label"])
        w.writeheader()
        w.writerows(rows)
    return path
