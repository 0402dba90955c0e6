"""A run from config to run directory, and evaluate / predict on a finished one.

Order matters for the user: cheap checks first (config, data), then the model, then training, so
a mistake fails in seconds and never after an hour of training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.config import Config, DataConfig, dump_config, validate
from tlkit.errors import UserError
from tlkit.rundir import RunDir

Event = Callable[[str, dict[str, Any]], None]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use device: auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def num_outputs_of(data: Any) -> int:
    if data.task == "regression":
        return 1 if data.targets.ndim == 1 else int(data.targets.shape[1])
    return len(data.classes)


def fit_run(cfg: Config, out: Path, resume: bool = False, event: Event = lambda k, i: None,
            checkpoint_every: int | None = None, test_limit: int | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into the run directory ``out``. ``test_limit`` evaluates the test split
    on a stratified subset of that many examples (benchmarks on slow machines; the summary
    says so). Under torchrun or accelerate launch each process trains its share of every batch
    (``tlkit.distributed``); rank 0 alone writes ``out`` and returns the summary, the others
    return the validation and test metrics."""
    from tlkit.assemble import assemble
    from tlkit.data import build_collate, build_dataset, load_source, make_splits
    from tlkit.data.transforms import resolve_preprocessing
    from tlkit.diagnose.preprocessing import check_preprocessing
    from tlkit.metrics import subgroup_metrics
    from tlkit.plan import format_plan
    from tlkit.saved import save_model
    from tlkit.train.checkpoint import load_checkpoint, save_checkpoint
    from tlkit.train.loop import Hooks, evaluate_cached, evaluate_split, fit

    tc = cfg.transfer_config
    dist = _processes(cfg, tc.device)
    if not dist.is_main:
        event = _silent  # rank 0 reports
    run = RunDir(out)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    starting_over = resume and not run.last.is_file()
    if starting_over:
        # Killed before its first checkpoint (or never started): resuming is starting. So a run
        # killed at any moment continues with the same command.
        if run.summary.is_file():
            raise UserError(f"{out} holds a finished run without checkpoints/last.pt; choose "
                            "another --out (nothing was changed)")
        resume = False
    if resume:
        saved = run.config.read_text() if run.config.is_file() else None
        if saved is not None and saved != dump_config(cfg):
            raise UserError(f"the config differs from the one {out} was started with "
                            f"({run.config}); resume with that config, or start a new --out")
    elif run.path.is_dir() and (run.last.is_file() or run.summary.is_file()):
        raise UserError(f"{out} already holds a run; add --resume to continue it, or choose "
                        "another --out (nothing was changed)")
    if dist.is_main:
        run.lock()
    try:
        if starting_over:
            event("stage", {"what": f"nothing to resume in {out} (no checkpoint yet): starting "
                                    "from the beginning"})
        t_start = time.perf_counter()
        device = dist.device
        event("stage", {"what": f"loading data {cfg.data.source}"})
        data = load_source(cfg.data)
        splits = make_splits(data, cfg.data)
        if test_limit is not None and len(splits.test) > test_limit:
            splits.test = _subset(splits.test, test_limit, cfg.data.seed)
        event("stage", {"what": f"loading backbone {tc.source_model}",
                        "sizes": splits.sizes()})
        torch.manual_seed(tc.seed)  # the head's initialisation
        asm = assemble(tc, num_outputs_of(splits.train), modality=data.modality,
                       max_length=cfg.data.max_length)
        regularizer = None
        if tc.l2sp_lambda > 0:
            from tlkit.regularization import L2SP

            # The source weights are the pretrained ones: snapshot them now, before a resumed
            # run's checkpoint is loaded into the model.
            regularizer = L2SP(asm.model.backbone, tc.l2sp_lambda)
        prep = resolve_preprocessing(asm.model.backbone.preprocessing, cfg.data)
        collate = build_collate(prep)
        augment = cfg.data.augment if data.modality == "image" else "none"
        train_ds = build_dataset(splits.train, prep, augment)
        val_ds = build_dataset(splits.val, prep)
        test_ds = build_dataset(splits.test, prep)
        findings = check_preprocessing(asm.model.backbone, collate, train_ds,
                                       cfg.diagnostics.check_preprocessing,
                                       lambda m: event("stage", {"what": m}))
        classes = splits.classes

        if dist.is_main:
            run.write_text(run.config, dump_config(cfg))
            run.write_text(run.plan, format_plan(asm.plan) + "\n")
        # rank 0 reads the checkpoint and sends it to the others (their disk may not hold it)
        state_in = dist.on_main(lambda: load_checkpoint(run.last) if resume else None)
        if dist.is_main and state_in is not None:
            run.truncate_metrics(int(state_in["state"]["epoch"]))
        elif dist.is_main and run.metrics.exists():
            run.metrics.unlink()

        def save_best(model: torch.nn.Module, state: Any) -> None:
            from safetensors.torch import save_model as st_save

            from tlkit.train.checkpoint import atomic_write

            atomic_write(run.best, lambda tmp: st_save(model, str(tmp)))

        def load_best(model: torch.nn.Module) -> None:
            from safetensors.torch import load_model as st_load

            if run.best.is_file():
                st_load(model, str(run.best))

        hooks = Hooks(save_last=lambda payload: save_checkpoint(run.last, payload),
                      save_best=save_best, load_best=load_best,
                      log_epoch=run.append_metrics, event=event)
        if not dist.is_main:  # rank 0 writes; fit sends the best weights it loads to the others
            hooks = Hooks(save_last=lambda p: None, save_best=lambda m, s: None,
                          load_best=lambda m: None, log_epoch=lambda r: None, event=event)
        cache = None
        if tc.cache.enabled and augment != "none":
            # Random augmentation gives another input each epoch: a cached activation would be
            # wrong. Frozen layers then run every epoch, and the log says so.
            event("stage", {"what": f"data.augment is {augment}: frozen layers run every epoch "
                                    "(the activation cache is off)"})
        elif tc.cache.enabled:
            from tlkit.cache import cache_for

            # Without random augmentation the preprocessing is deterministic: cached activations
            # are exactly what the full forward would compute each epoch.
            cache = cache_for(asm.model.backbone, len(asm.groups), collate, device, tc, prep,
                              log=lambda msg: event("stage", {"what": msg}), dist=dist)
        lengths = None
        if data.modality == "text" and cfg.data.group_by_length:
            enc = collate.tokenizer(list(train_ds.inputs), truncation=True,
                                    max_length=prep.max_length)
            lengths = [len(x) for x in enc["input_ids"]]
        adaptation, target = None, None
        if cfg.adaptation.target is not None:  # method none: the target is only measured
            from tlkit.adapt.target import prepare_target

            target = prepare_target(cfg, data.modality, classes, prep, asm.model.backbone,
                                    len(asm.groups), train_ds, collate, device, event)
            if target.loss is not None:
                from tlkit.train.loop import Adaptation

                adaptation = Adaptation(target.loss, target.train, cfg.adaptation.weight)
        # Forgetting compares the adapted backbone with the pretrained one: keep a copy when
        # any backbone group trains (the model still holds the pretrained weights here; a
        # resumed run's checkpoint loads inside fit).
        pretrained = None
        if any(r.trainable for ph in asm.plan.phases for r in ph.rows[:len(asm.groups)]) \
                and tc.pretrained_weights != "none" and dist.is_main:
            import copy

            pretrained = copy.deepcopy(asm.model.backbone).eval()
        event("stage", {"what": "training", "device": str(device),
                        "cache": "on" if cache is not None else "off",
                        **({"processes": dist.world} if dist.enabled else {})})
        state = fit(asm.model, asm.groups, asm.plan, tc, data.task, classes, train_ds, val_ds,
                    collate, hooks, device, checkpoint_every=checkpoint_every, resume=state_in,
                    cache=cache, lengths=lengths, regularizer=regularizer,
                    adaptation=adaptation, dist=dist)
        if target is not None and cfg.adaptation.method == "adabn":
            from tlkit.adapt.adabn import adabn

            n_bn = adabn(asm.model.backbone, target.train, collate, device,
                         max(tc.batch_size, 64))
            event("stage", {"what": f"AdaBN: re-estimated {n_bn} BatchNorm layers' statistics "
                                    f"on {len(target.train):,} target examples"})

        event("stage", {"what": "evaluating on the test split"})
        n_groups = len(asm.groups)
        last = asm.plan.phases[-1]
        frozen_to_the_end = (not any(r.trainable for r in last.rows[:n_groups])
                             and cfg.adaptation.method != "adabn")
        val_cached = (cache.get("val", val_ds, n_groups)
                      if cache is not None and frozen_to_the_end else None)
        if val_cached is not None:  # the backbone never changed: its cached features hold
            val, val_outputs, val_targets = evaluate_cached(
                asm.model, val_cached, data.task, tc.batch_size, device, classes,
                tc.mixed_precision, return_outputs=True, dist=dist)
        else:
            val, val_outputs, val_targets = evaluate_split(
                asm.model, val_ds, collate, data.task, tc.batch_size, device, classes,
                tc.mixed_precision, return_outputs=True, dist=dist)
        test, test_outputs, test_targets = evaluate_split(
            asm.model, test_ds, collate, data.task, tc.batch_size, device, classes,
            tc.mixed_precision, return_outputs=True, dist=dist)
        if not dist.is_main:  # rank 0 measures the rest and writes the run directory
            return {"val": val, "test": test}
        if splits.test.groups is not None:
            test["subgroups"] = subgroup_metrics(test_outputs, test_targets, splits.test.groups,
                                                 data.task, classes)
        run.write_predictions(val_outputs, val_targets, test_outputs, test_targets)
        diagnostics: dict[str, Any] = {}
        if data.task == "single_label" and cfg.diagnostics.calibration and len(val_targets):
            from tlkit.diagnose.calibration import calibration_report

            diagnostics["calibration"] = calibration_report(val_outputs, val_targets,
                                                            test_outputs, test_targets)
        if target is not None:
            diagnostics["adaptation"] = target.report(asm.model, train_ds, collate, device,
                                                      data.task, classes, tc)
        if pretrained is not None:
            from tlkit.diagnose.forgetting import forgetting

            event("stage", {"what": "measuring forgetting (CKA of each group against the "
                                    "pretrained backbone)"})
            diagnostics["forgetting"] = forgetting(
                pretrained, asm.model.backbone, asm.groups, val_ds, collate, device,
                cfg.diagnostics.sample, tc.mixed_precision,
                source_task=cfg.diagnostics.source_task, source_model=tc.source_model)
        head = {"type": tc.head.type, "hidden_size": tc.head.hidden_size, "dropout": tc.dropout,
                "num_outputs": num_outputs_of(splits.train)}
        asm.model.cpu()
        save_model(run.model, asm.model, prep, head, data.task, classes,
                   {"source_model": tc.source_model})
        summary = {
            "source_model": tc.source_model,
            "strategy": tc.freeze_strategy,
            "task": data.task,
            "data": splits.summary(),
            "skipped_images": splits.skipped,
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "train_seconds": round(state.seconds, 2),
            **({"processes": dist.world} if dist.enabled else {}),
            "total_seconds": round(time.perf_counter() - t_start, 2),
            **({"test_limit": test_limit} if test_limit is not None else {}),
            "parameters": asm.plan.total_params,
            "trainable_parameters_last_phase": asm.plan.phases[-1].trainable_params,
            "val": val,
            "test": test,
            "preprocessing_findings": [f.__dict__ for f in findings],
            **diagnostics,
        }
        run.write_json(run.summary, summary)
        return summary
    finally:
        run.unlock()


def _silent(kind: str, info: dict[str, Any]) -> None:
    pass


def _processes(cfg: Config, device: str) -> Any:
    """This process's place (``tlkit.distributed.Dist``): one process, or one of several."""
    from tlkit.distributed import launched, setup

    if launched() and cfg.adaptation.target is not None:
        raise UserError("adaptation.target runs on one process; run this config without "
                        "torchrun / accelerate launch, or remove the adaptation section")
    return setup(device)


def test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test outputs (logits or values) and targets a finished run saved."""
    f = RunDir(Path(path)).predictions
    if not f.is_file():
        raise UserError(f"{path} has no predictions.npz; it was trained by an older tlkit or "
                        "did not finish; run fit again")
    with np.load(f) as z:
        return z["test_outputs"], z["test_targets"]


def _subset(data: Any, n: int, seed: int) -> Any:
    """A subset of ``n`` examples, stratified for single-label data."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data))
    strat = data.targets if data.task == "single_label" else None
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=strat, random_state=seed)
    except ValueError:  # too few of some class to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return data.subset(np.sort(keep), name=data.name)


# --------------------------------------------------------------------------------------------------
# evaluate / predict
# --------------------------------------------------------------------------------------------------


def _run_config(run: RunDir) -> Config:
    from tlkit.config import parse_yaml

    if not run.config.is_file():
        raise UserError(f"{run.path} is not a run directory (no config.yaml)")
    return validate(parse_yaml(run.config.read_text(), str(run.config)), str(run.config))


def _data_for(run: RunDir, spec: str | None, classes: list[str] | None) -> Any:
    """The labelled data to evaluate: the run's own split (train / val / test, default test),
    or another source (a path or packaged name) read with the run's data settings."""
    from tlkit.data import load_source, make_splits

    if not run.path.is_dir():
        raise UserError(f"run directory {run.path} does not exist")
    cfg = _run_config(run)
    if spec in (None, "test", "val", "train"):
        data = load_source(cfg.data, classes=classes)
        splits = make_splits(data, cfg.data)
        return getattr(splits, spec or "test")
    dcfg = DataConfig.model_validate({**cfg.data.model_dump(), "source": spec})
    return load_source(dcfg, classes=classes)


def _mixed_precision_of(path: Path) -> bool:
    """Whether the run trained and tested in mixed precision (its config says; a model/ folder
    moved without its config runs in fp32): evaluate and predict then compute as fit did, so
    evaluate reproduces fit's test metrics."""
    cfg_path = RunDir(Path(path)).config
    if not cfg_path.is_file():
        return False
    try:
        import yaml

        raw = yaml.safe_load(cfg_path.read_text())
        return bool(raw.get("transfer_config", {}).get("mixed_precision", False))
    except Exception:  # noqa: BLE001 - an unreadable config: the safe default
        return False


def evaluate_run(path: Path, spec: str | None = None) -> dict[str, Any]:
    from tlkit.data import build_collate, build_dataset
    from tlkit.metrics import subgroup_metrics
    from tlkit.saved import load_model, model_device
    from tlkit.train.loop import evaluate_split

    run = RunDir(path)
    saved = load_model(run.model)
    data = _data_for(run, spec, saved.classes)
    device = model_device()
    saved.model.to(device)
    ds = build_dataset(data, saved.preprocessing)
    metrics, outputs, targets = evaluate_split(
        saved.model, ds, build_collate(saved.preprocessing), saved.task, 64, device,
        saved.classes, _mixed_precision_of(path), return_outputs=True)
    if data.groups is not None:  # the run's config names data.group_column
        metrics["subgroups"] = subgroup_metrics(outputs, targets, data.groups, saved.task,
                                                saved.classes)
    return {"run": str(path), "data": spec or "test", "n": len(ds), **metrics}


def predict_run(path: Path, inputs: Sequence[str] = (), spec: str | None = None
                ) -> list[dict[str, Any]]:
    from tlkit.data import build_collate, build_dataset
    from tlkit.data.types import LabelledData
    from tlkit.metrics import probabilities
    from tlkit.saved import load_model, model_device
    from tlkit.train.loop import predict_outputs

    saved = load_model(Path(path) / "model")
    kind = saved.preprocessing.kind
    if spec is not None:
        data = _data_for(RunDir(path), spec, saved.classes)
        shown = [str(x) if not isinstance(x, np.ndarray) else f"#{i}"
                 for i, x in enumerate(data.inputs)]
    else:
        if not inputs:
            raise UserError("give inputs to predict (texts or image files) or --data SPEC")
        items: list[Any] = list(inputs)
        if kind == "image":
            missing = [x for x in items if not Path(x).is_file()]
            if missing:
                raise UserError(f"image file(s) not found: {', '.join(missing[:3])}")
            items = [Path(x) for x in items]
        n_out = len(saved.classes) if saved.classes else 1
        dummy = (np.zeros(len(items), dtype=np.int64) if saved.task == "single_label"
                 else np.zeros((len(items), n_out), dtype=np.float32)
                 if saved.task == "multi_label" else np.zeros(len(items), dtype=np.float32))
        data = LabelledData(name="inputs", modality=kind, task=saved.task, inputs=items,
                            targets=dummy, classes=saved.classes)
        shown = list(inputs)
    if data.modality != kind:
        raise UserError(f"the model takes {kind} but the inputs are {data.modality}")
    device = model_device()
    saved.model.to(device)
    ds = build_dataset(data, saved.preprocessing)
    outputs, _ = predict_outputs(saved.model, ds, build_collate(saved.preprocessing), 64, device,
                                 _mixed_precision_of(Path(path)))
    probs = probabilities(outputs, saved.task)
    rows = []
    for i, p in enumerate(probs):
        if saved.task == "single_label":
            row = {"input": shown[i], "label": saved.classes[int(p.argmax())],
                   "probabilities": {c: round(float(v), 6) for c, v in zip(saved.classes, p)}}
        elif saved.task == "multi_label":
            row = {"input": shown[i], "labels": [c for c, v in zip(saved.classes, p) if v > 0.5],
                   "probabilities": {c: round(float(v), 6) for c, v in zip(saved.classes, p)}}
        else:
            row = {"input": shown[i], "value": [float(v) for v in np.atleast_1d(p)]}
        rows.append(row)
    return rows


def dumps_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)
