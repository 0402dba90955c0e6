"""Gradual unfreezing, MobileNetV2 (ImageNet) to Fashion-MNIST: tlkit (frozen-prefix cache)
against the concept's plain PyTorch loop and Lightning's ``BackboneFinetuning``.

Three phases, the same in every row: the head alone, then also the last block (tlkit's
``last_block``: its top layer group, ``blocks.6 + conv_head + bn2``), then also the one below
(``last_two_blocks``: ``+ blocks.5``); the groups the peers unfreeze are read from tlkit's own
layer groups. The same images (tlkit's splits and preprocessing), epochs per phase, Adam rates
(head ``--head-lr``, unfrozen blocks ``--backbone-lr``, constant), batch size, fp32; a validation
pass per epoch and the best validation epoch kept for the test. A frozen block keeps its
BatchNorm statistics in every row (tlkit's behaviour; the peers are told to).

- tlkit: ``freeze_strategy: gradual`` with ``unfreeze_schedule``; the frozen bottom of each phase
  is computed once (pooled features in phase 1, the activations at the cut after that) and each
  step runs only the trainable top. Fresh, empty ``$TLKIT_CACHE`` (cold).
- plain: the concept's gradual code: a new Adam per phase over the trainable parameters, the
  whole network runs forward on every batch.
- lightning: a ``LightningModule`` with ``backbone`` and ``head``, and a subclass of
  ``BackboneFinetuning`` (which itself unfreezes the whole ``backbone`` at one epoch, with a
  rate that grows 1.5x per epoch): it unfreezes the top group at the second phase and the next
  at the third through BaseFinetuning's ``unfreeze_and_add_param_group``, at a constant rate,
  with the frozen body's BatchNorm frozen (``train_bn=False`` and eval mode).

    .venv/bin/python bench/gradual.py                                   # the full sizes
    .venv/bin/python bench/gradual.py --train 200 --val 50 --phases 1,1,1 --test 300   # smoke
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

ROWS = ["tlkit", "plain", "lightning"]
LABELS = {"tlkit": "tlkit (prefix cache)", "plain": "plain PyTorch loop",
          "lightning": "Lightning BackboneFinetuning"}


def phases(args: argparse.Namespace) -> list[int]:
    ps = [int(x) for x in args.phases.split(",")]
    if len(ps) != 3 or min(ps) < 1:
        raise SystemExit("--phases takes three epoch counts, e.g. 3,5,3")
    return ps


def tlkit_raw(args: argparse.Namespace) -> dict[str, Any]:
    p1, p2, p3 = phases(args)
    return {
        "transfer_config": {
            "source_model": "mobilenetv2", "pretrained_weights": "packaged",
            "freeze_strategy": "gradual",
            "unfreeze_schedule": [{"epoch": p1, "unfreeze": "last_block"},
                                  {"epoch": p1 + p2, "unfreeze": "last_two_blocks"}],
            "head": {"type": "linear"}, "dropout": 0.0,
            # one rate for every unfrozen block (the peers' phases give each block one rate)
            "head_lr": args.head_lr, "backbone_lr": args.backbone_lr, "lr_decay_per_layer": 1.0,
            "weight_decay": 0.0, "scheduler": "constant", "warmup_steps": 0,
            "max_grad_norm": None, "mixed_precision": False, "early_stopping_patience": None,
            "epochs": p1 + p2 + p3, "batch_size": args.batch_size,
            "cache": {"enabled": True, "max_mb": args.cache_mb, "disk": True},
            "seed": args.seed, "device": "cpu",
        },
        "data": common.image_data_section(args.train, args.val, args.image_size, args.seed),
    }


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def row_tlkit(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    from tlkit.config import validate
    from tlkit.run import fit_run

    cfg = validate(tlkit_raw(args), "<bench>")
    p1, p2, _ = phases(args)
    ends: dict[int, float] = {}  # phase -> when its last epoch ended
    cached: dict[int, Any] = {}
    marks = common.Marks()

    def event(kind: str, info: dict[str, Any]) -> None:
        if kind == "stage" and info.get("what") == "training":
            marks.mark("train")
        elif kind == "stage" and str(info.get("what", "")).startswith("evaluating"):
            marks.mark("test")
        elif kind == "epoch_start" and info["phase"] not in cached:
            cached[info["phase"]] = info.get("cached")
        elif kind == "epoch_end" and info["epoch"] in (p1 - 1, p1 + p2 - 1):
            # a phase ends with its last epoch: the next phase's cache is computed after this
            ends[1 if info["epoch"] == p1 - 1 else 2] = marks.mark(f"end{info['epoch']}")

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-") as tmp:
        summary = fit_run(cfg, Path(tmp) / "run", event=event, test_limit=args.test)
        end = marks.mark("end")
    from tlkit.backbones.registry import load_backbone

    n_groups = len(load_backbone("mobilenetv2").layer_groups())
    bounds = [marks.at["train"], ends.get(1), ends.get(2), marks.at["test"]]
    return {"seconds": end, "train_seconds": marks.at["test"] - marks.at["train"],
            "test_seconds": end - marks.at["test"], "setup_seconds": marks.at["train"],
            "phase_seconds": _spans(bounds), "cut": [cached.get(k) for k in (1, 2, 3)],
            "n_groups": n_groups,
            "test_accuracy": summary["test"]["accuracy"], "best_epoch": summary["best_epoch"],
            "trainable_last_phase": summary["trainable_parameters_last_phase"],
            "n_test": summary["data"]["sizes"]["test"]}


def _spans(bounds: list[float | None]) -> list[float | None]:
    return [None if a is None or b is None else b - a
            for a, b in zip(bounds, bounds[1:], strict=False)]


def _loaders(args: argparse.Namespace) -> tuple[Any, Any, Any, int]:
    from torch.utils.data import DataLoader

    train, val, test, n_classes = common.image_datasets(tlkit_raw(args), args.test)
    return (DataLoader(train, batch_size=args.batch_size, shuffle=True, num_workers=0),
            DataLoader(val, batch_size=args.batch_size, num_workers=0),
            DataLoader(test, batch_size=args.batch_size, num_workers=0), n_classes)


def row_plain(args: argparse.Namespace) -> dict[str, Any]:
    """The concept's gradual unfreezing: phase by phase, a new Adam over what trains."""
    import timm  # noqa: F401 - imports are not timed, in any row
    import torch
    from torch import nn

    p1, p2, p3 = phases(args)
    top, second = common.top_group_params("mobilenetv2", 2)
    marks = common.Marks()
    train_loader, val_loader, test_loader, n_classes = _loaders(args)
    marks.mark("model")
    torch.manual_seed(args.seed)
    model = common.packaged_timm("mobilenetv2", num_classes=0)
    stats = common.bn_stats(model)
    params = dict(model.named_parameters())
    criterion = nn.CrossEntropyLoss()
    best = {"acc": -1.0, "epoch": -1, "state": None}
    epoch = 0

    def train_epochs(optimizer: torch.optim.Optimizer, n: int) -> None:
        nonlocal epoch
        for _ in range(n):
            model.train()
            common.freeze_bn_stats(model)  # frozen blocks keep their statistics, as in tlkit
            for images, labels in train_loader:
                loss = criterion(model(images), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            acc = common.accuracy_of(model, val_loader)
            if acc > best["acc"]:
                best.update(acc=acc, epoch=epoch, state=copy.deepcopy(model.state_dict()))
            epoch += 1

    marks.mark("train")
    # Phase 1: train only the new head
    for p in model.parameters():
        p.requires_grad = False
    model.classifier = nn.Linear(model.num_features, n_classes)
    train_epochs(torch.optim.Adam(model.classifier.parameters(), lr=args.head_lr), p1)
    # Phase 2: unfreeze the last block + head
    marks.mark("phase2")
    for n in top:
        params[n].requires_grad = True
    opt = torch.optim.Adam([
        {"params": [params[n] for n in top], "lr": args.backbone_lr},
        {"params": model.classifier.parameters(), "lr": args.head_lr},
    ])
    train_epochs(opt, p2)
    # Phase 3: unfreeze the last two blocks + head
    marks.mark("phase3")
    for n in second:
        params[n].requires_grad = True
    opt = torch.optim.Adam([
        {"params": [params[n] for n in top + second], "lr": args.backbone_lr},
        {"params": model.classifier.parameters(), "lr": args.head_lr},
    ])
    train_epochs(opt, p3)
    marks.mark("test")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    kept = common.frozen_bn_kept(model, stats)
    model.load_state_dict(best["state"])
    test_acc = common.accuracy_of(model, test_loader)
    end = marks.mark("end")
    at = marks.at
    return {"seconds": end - at["model"], "train_seconds": at["test"] - at["train"],
            "test_seconds": end - at["test"],
            "phase_seconds": _spans([at["train"], at["phase2"], at["phase3"], at["test"]]),
            "test_accuracy": test_acc, "best_epoch": best["epoch"],
            "trainable_last_phase": trainable, "frozen_bn_kept": kept,
            "n_test": len(test_loader.dataset)}


def row_lightning(args: argparse.Namespace) -> dict[str, Any]:
    import lightning.pytorch as pl
    import timm  # noqa: F401
    import torch
    from lightning.pytorch.callbacks import BackboneFinetuning, Callback, ModelCheckpoint
    from torch import nn

    p1, p2, p3 = phases(args)
    top, second = common.top_group_params("mobilenetv2", 2)

    class TransferModule(pl.LightningModule):
        def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone  # BackboneFinetuning needs this attribute
            self.head = head
            self.loss = nn.CrossEntropyLoss()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.backbone(x))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss(self(x), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val_acc", (self(x).argmax(1) == y).float().mean(), batch_size=len(y))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("test_acc", (self(x).argmax(1) == y).float().mean(), batch_size=len(y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            # only the head at first; the callback adds each block as it unfreezes
            return torch.optim.Adam(self.head.parameters(), lr=args.head_lr)

        def on_train_epoch_start(self) -> None:
            # Lightning puts the whole module in train mode; a frozen block keeps its
            # statistics, as in tlkit (BaseFinetuning's freeze turns tracking off, so in train
            # mode it would normalise with each batch's statistics)
            common.freeze_bn_stats(self)

    class GradualBackboneFinetuning(BackboneFinetuning):
        """BackboneFinetuning with tlkit's schedule: the top group at ``steps[0]``, the next at
        ``steps[1]``, each added to the optimizer at ``lr``; the rest stays frozen, with its
        BatchNorm (``train_bn=False``)."""

        def __init__(self, steps: list[tuple[int, list[str]]], lr: float) -> None:
            super().__init__(unfreeze_backbone_at_epoch=steps[0][0], backbone_initial_lr=lr,
                             lambda_func=lambda epoch: 1.0, should_align=False, train_bn=True)
            self.steps = steps
            self.lr = lr

        def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
            # BackboneFinetuning's own freezes with train_bn=True (BatchNorm trains)
            self.freeze(pl_module.backbone, train_bn=False)

        def finetune_function(self, pl_module: pl.LightningModule, epoch: int,
                              optimizer: torch.optim.Optimizer) -> None:
            for at, modules in self.steps:
                if epoch == at:
                    self.unfreeze_and_add_param_group(
                        [pl_module.backbone.get_submodule(m) for m in modules], optimizer,
                        lr=self.lr, train_bn=True)

    class PhaseClock(Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
            if trainer.current_epoch in (p1, p1 + p2):
                marks.mark(f"epoch{trainer.current_epoch}")

    marks = common.Marks()
    train_loader, val_loader, test_loader, n_classes = _loaders(args)
    marks.mark("model")
    torch.manual_seed(args.seed)
    body = common.packaged_timm("mobilenetv2", num_classes=0)
    stats = common.bn_stats(body)
    steps = [(p1, common.modules_of(body, top)), (p1 + p2, common.modules_of(body, second))]
    module = TransferModule(body, nn.Linear(body.num_features, n_classes))
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-lightning-") as tmp:
        ckpt = ModelCheckpoint(dirpath=tmp, monitor="val_acc", mode="max", save_top_k=1)
        trainer = pl.Trainer(
            max_epochs=p1 + p2 + p3, accelerator="cpu", devices=1, precision="32-true",
            logger=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=tmp,
            callbacks=[GradualBackboneFinetuning(steps, args.backbone_lr), ckpt, PhaseClock()])
        marks.mark("train")
        trainer.fit(module, train_loader, val_loader)
        marks.mark("test")
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        in_optimizer = sum(p.numel() for g in trainer.optimizers[0].param_groups
                           for p in g["params"])
        kept = common.frozen_bn_kept(body, stats)
        out = trainer.test(module, test_loader, ckpt_path="best", verbose=False)
        end = marks.mark("end")
        best_path = ckpt.best_model_path
    at = marks.at
    return {"seconds": end - at["model"], "train_seconds": at["test"] - at["train"],
            "test_seconds": end - at["test"],
            "phase_seconds": _spans([at["train"], at.get(f"epoch{p1}"),
                                     at.get(f"epoch{p1 + p2}"), at["test"]]),
            "test_accuracy": float(out[0]["test_acc"]), "best": Path(best_path).name,
            "trainable_last_phase": trainable, "in_optimizer": in_optimizer,
            "frozen_bn_kept": kept,
            "unfrozen_modules": [s[1] for s in steps], "n_test": len(test_loader.dataset)}


ROW_FUNCS = {"tlkit": row_tlkit, "plain": row_plain, "lightning": row_lightning}


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    base = results.get("tlkit", {})
    head = ["row", "seconds", "vs tlkit", "train s", "vs tlkit", "phase 1 / 2 / 3 s", "test s",
            "test acc", "peak RSS MiB"]
    body = []
    for r, res in results.items():
        if "error" in res:
            body.append([LABELS[r], res["error"], "", "", "", "", "", "", ""])
            continue
        body.append([
            LABELS[r], common.fmt(res["seconds"]),
            common.ratio(res["seconds"], base.get("seconds")),
            common.fmt(res["train_seconds"]),
            common.ratio(res["train_seconds"], base.get("train_seconds")),
            " / ".join(common.fmt(x) for x in res.get("phase_seconds", [])),
            common.fmt(res["test_seconds"]), common.fmt(res["test_accuracy"], ".4f"),
            common.fmt(res.get("peak_rss_mib"), ",.0f"),
        ])
    p1, p2, p3 = phases(args)
    n_test = next((x.get("n_test") for x in results.values() if x.get("n_test")), None)
    lines = [common.table(head, body, {1, 2, 3, 4, 5, 6, 7, 8}), "", "Notes:"]
    lines.append(
        f"- data: Fashion-MNIST, {args.train:,} training + {args.val:,} validation images "
        f"(stratified, seed {args.seed}) at {args.image_size} px; test: "
        + (f"a stratified subset of {n_test:,} of the 10,000 test images (the same for every row)"
           if args.test else f"the set's own test split ({n_test or 10000:,} images)") + ".")
    unfrozen = results.get("lightning", {}).get("unfrozen_modules",
                                                [["blocks.6", "conv_head", "bn2"], ["blocks.5"]])
    lines.append(
        f"- schedule: {p1} epoch(s) head only, {p2} with the last block "
        f"(timm {', '.join(unfrozen[0])}), {p3} with the last two (+ {', '.join(unfrozen[1])}); "
        f"Adam, head lr {args.head_lr:g}, unfrozen blocks lr {args.backbone_lr:g}, constant, no "
        f"weight decay, batch {args.batch_size}, fp32; the best validation epoch is tested.")
    lines.append(
        "- optimizer state: tlkit keeps one AdamW (weight decay 0) whose moments carry across "
        "phases; Lightning adds each block as a new group to the same Adam; the plain loop "
        "builds a new Adam per phase, as the concept's code does.")
    tr = {r: x["trainable_last_phase"] for r, x in results.items() if "trainable_last_phase" in x}
    if tr:
        lines.append("- trainable parameters in the last phase (head included): "
                     + ", ".join(f"{r} {n:,}" for r, n in tr.items())
                     + (f"; in Lightning's optimizer: {results['lightning']['in_optimizer']:,}"
                        if "in_optimizer" in results.get("lightning", {}) else "") + ".")
    kept = {r: x["frozen_bn_kept"] for r, x in results.items() if "frozen_bn_kept" in x}
    if kept:
        lines.append("- BatchNorm statistics of the blocks still frozen at the end unchanged by "
                     "training: " + ", ".join(f"{r} {'yes' if k else 'NO'}"
                                              for r, k in kept.items()) + ".")
    if "cut" in base:
        lines.append(f"- tlkit's cache per phase: activations below "
                     f"{' / '.join(str(c) for c in base['cut'])} frozen layer groups of "
                     f"{base['n_groups']} ({base['n_groups']}: the pooled features; none: the "
                     "full forward); the frozen bottom runs once per split, to the lowest of these cuts, "
                     "when the first phase starts, and the higher cuts are derived from it.")
    lines.append(
        "- seconds: from building the model to the test accuracy, in the row's own process "
        "(imports excluded; tlkit's includes loading the data and writing its run directory). "
        "train s: all epochs with their validation (tlkit: with computing its caches); phase "
        "s: each phase's share of it (tlkit's includes computing that phase's cache).")
    for name, key in (("the plain loop", "plain"), ("Lightning", "lightning")):
        res = results.get(key, {})
        if "seconds" in res and "seconds" in base:
            lines.append(
                f"- {name} takes {res['train_seconds'] / base['train_seconds']:.2f}x tlkit's time "
                f"in training, {res['seconds'] / base['seconds']:.2f}x end to end (issue 5 asks "
                f"for at least 2x); tlkit's test accuracy is "
                f"{100 * (base['test_accuracy'] - res['test_accuracy']):+.2f} points from it "
                "(within 0.5 of the plain loop's asked).")
    lines += common.closing_notes(results, args.threads, __file__, argv)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--test", type=int, default=None,
                   help="a stratified subset of this many test images (default: all 10,000)")
    p.add_argument("--phases", default="3,5,3",
                   help="epochs of the three phases: head, + last block, + last two (default "
                        "3,5,3, the concept's phase lengths)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--backbone-lr", type=float, default=1e-4)
    from tlkit.config import CacheConfig

    p.add_argument("--cache-mb", type=int, default=CacheConfig().max_mb)
    common.add_common_flags(p)
    args = p.parse_args(argv)
    phases(args)
    if args.child:
        return common.child_main(ROW_FUNCS, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    results: dict[str, dict[str, Any]] = {}
    with common.cold_tlkit_cache() as cache:
        for r in common.selected(ROWS, args.rows):
            env = {"TLKIT_CACHE": str(cache)} if r == "tlkit" else None
            results[r] = common.run_row(__file__, r, argv, env)
    text = report(results, args, argv)
    print(text)
    common.save_json(args.json, {"argv": argv, "results": results, "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
