"""The student's config, made from the teacher's run: the teacher's data section (so both are
tested on the same split), its transfer_config with the student's strategy (``none`` by
default: every layer of the smaller network trains), no adaptation (the student learns the
adapted teacher's outputs; the teacher's target inputs become the unlabelled ones), and the
``distill`` section. The student is then an ordinary fit of that config, and its
config.yaml is what ``tlkit fit STUDENT/config.yaml --out STUDENT --resume`` resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit import strategies
from tlkit.config import Config, load_config, validate, without_strategy_keys
from tlkit.errors import UserError

STUDENT_STRATEGY = "none"
STUDENT_DECAY = 1.0


def student_config(teacher: str | Path, *, student: str | None = None,
                   layers: int | None = None, unlabelled: str | None = None,
                   unlabelled_limit: int | None = None, temperature: float | None = None,
                   alpha: float | None = None, epochs: int | None = None,
                   overrides: list[str] | None = None) -> Config:
    """The student of the run in ``teacher``: a truncated copy of it (``student`` None) or the
    registry backbone ``student``; ``unlabelled``: a file or folder of inputs the teacher
    labels (default: the teacher's adaptation.target, where it had one); ``overrides``:
    ``--set KEY=VALUE`` on the result."""
    path = Path(teacher).expanduser().resolve()
    config = path / "config.yaml"
    if not config.is_file():
        raise UserError(f"tlkit distill {teacher}: no run directory with a config.yaml there; "
                        "give the --out folder of a finished `tlkit fit`")
    from tlkit.distillation.teacher import finished

    finished(path, str(teacher))  # before anything loads or is written
    if student is None:
        _can_truncate(path, layers)
    cfg = load_config(config, [])
    raw = cfg.model_dump(mode="json")
    tc = without_strategy_keys(raw["transfer_config"])
    own = {k: getattr(cfg.transfer_config, k) for owner, k in strategies.owned_keys()
           if owner == STUDENT_STRATEGY}
    tc.update(own, freeze_strategy=STUDENT_STRATEGY)
    # One rate for every layer: the student starts from weights the teacher already adapted,
    # which the teacher's discriminative decay was there to protect in their pretrained state.
    # The quickstart's 3-layer student: 0.767 with the teacher's decay 0.5, 0.788 with 1.0
    # (teacher 0.782; README, "Serve it cheaply").
    tc["lr_decay_per_layer"] = STUDENT_DECAY
    if student is not None:
        tc["source_model"] = student
        tc["pretrained_weights"] = "packaged"
        tc["l2sp_lambda"] = 0.0  # the teacher's source weights are not this backbone's
    if epochs is not None:
        tc["epochs"] = epochs
    ad = raw.get("adaptation") or {}
    target = ad.get("target")
    pool: dict[str, Any] | None = None
    if unlabelled is not None:
        pool = {"source": unlabelled}
    elif target:
        pool = {k: v for k, v in target.items() if k != "test"}
    raw["adaptation"] = {}
    raw["distill"] = {
        "teacher": str(path), "student": "truncate" if student is None else "backbone",
        **({"layers": layers} if layers is not None else {}),
        **({"temperature": temperature} if temperature is not None else {}),
        **({"alpha": alpha} if alpha is not None else {}),
        **({"unlabelled": pool} if pool is not None else {}),
        **({"unlabelled_limit": unlabelled_limit} if unlabelled_limit is not None else {}),
    }
    out = validate(raw, f"the student config made from {config}")
    if overrides:
        from tlkit.config import apply_override

        raw = out.model_dump(mode="json")
        for item in overrides:
            apply_override(raw, item)
        out = validate(raw, f"the student config made from {config} with --set")
    return out


def _can_truncate(path: Path, layers: int | None) -> None:
    """Refuse, from the teacher's model.json (nothing loads), a ``--layers`` its architecture
    has no use for."""
    import json

    try:
        backbone = json.loads((path / "model" / "model.json").read_text(encoding="utf-8"))[
            "backbone"]
        adapter = backbone["adapter"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # a damaged model.json: loading the teacher names it
    if layers is None:
        return
    if adapter != "hf":
        raise UserError(f"--layers {layers} counts a transformer's encoder layers; the "
                        f"teacher's backbone is {adapter}, whose truncated student keeps the "
                        "first block of each stage: remove --layers (distill.layers)")
    total = (backbone.get("config") or {}).get("num_hidden_layers")
    if isinstance(total, int) and layers >= total:
        raise UserError(f"--layers {layers} keeps every one of the teacher's {total} encoder "
                        f"layers: give fewer (1..{total - 1})")
