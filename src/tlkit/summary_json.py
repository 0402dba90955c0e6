"""What a run's ``summary.json`` must hold for ``tlkit.load``, predict, evaluate, report and
export to use it, checked when it is read (as ``tlkit.model_json`` checks model.json).

fit writes it atomically, but a file on disk can be edited, cut short or replaced: read
without a check, a list or a cut-short file is a traceback, a ``scoring`` section that is not
what fit wrote makes predict fall back to raw probabilities without a word, and a number
written as text ends the report in a traceback. So the file is read as typed data
(pydantic, strict: a number is a number, not text that looks like one) of the fields those
commands use; fields a newer tlkit adds are kept. A damaged file is a UserError naming the file,
the field, what it holds and the fix: ``fit --resume`` writes it again where the run's last
checkpoint is still there, else restore the file from a backup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from tlkit.errors import UserError

NAME = "summary.json"

Count = Annotated[int, Field(ge=0)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # a newer tlkit's fields are kept


class Scoring(_Part):
    """What predict calibrates with (``tlkit.run.scoring.Calibration``)."""

    temperature: float | None = Field(default=None, gt=0, le=1e6, allow_inf_nan=False)
    thresholds: list[Share] | None = Field(default=None, min_length=1)
    fitted_on: str | None = None

    @model_validator(mode="after")
    def _something(self) -> Scoring:
        if self.temperature is None and self.thresholds is None:
            raise ValueError("holds neither a temperature nor thresholds")
        return self


class Data(_Part):
    source: str | None = None
    modality: str | None = None
    num_classes: Count | None = None
    sizes: dict[str, Count | None] | None = None


class Summary(_Part):
    """The fields of summary.json that tlkit reads back."""

    test: dict[str, Any] | None  # present always (None: the run had no test split)
    # runs with two domains (adapted, or given adaptation.target.test): the test split is the
    # source domain's, the model meant for the target's (adapted), the target's test metrics
    test_domain: Literal["source"] | None = None
    model_domain: Literal["target"] | None = None
    target_test: dict[str, Any] | None = None
    val: dict[str, Any] | None = None
    task: Literal["single_label", "multi_label", "regression", "token_classification",
                  "question_answering"] | None = None
    strategy: str | None = None
    source_model: str | None = None
    data: Data | None = None
    scoring: Scoring | None = None
    epochs_run: Count | None = None
    best_epoch: int | None = Field(default=None, ge=-1)
    stopped_early: bool | None = None
    train_seconds: Seconds | None = None
    total_seconds: Seconds | None = None
    parameters: Count | None = None
    trainable_parameters_last_phase: Count | None = None
    skipped_images: Count | list[str] | None = None
    calibration: dict[str, Any] | None = None
    model_selection: dict[str, Any] | None = None
    preprocessing_findings: list[dict[str, Any]] | None = None
    auto: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    classical_baseline: dict[str, Any] | None = None
    forgetting: dict[str, Any] | None = None

    @field_validator("val", "test", "target_test")
    @classmethod
    def _metrics(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, value in (v or {}).items():
            if isinstance(value, str):  # fit writes numbers, dicts and lists, never text
                raise ValueError(f"metric {key!r} is the text {value[:40]!r}, not a number")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Summary:
        s = self.scoring
        if s is None or self.task is None:
            return self
        if self.task == "multi_label" and s.thresholds is None:
            raise ValueError("scoring: a multi_label run's scoring needs its thresholds")
        if self.task in ("single_label", "token_classification") and s.temperature is None:
            raise ValueError(f"scoring: a {self.task} run's scoring needs its temperature")
        n = self.data.num_classes if self.data is not None else None
        if self.task == "multi_label" and s.thresholds is not None and n is not None \
                and len(s.thresholds) != n:
            raise ValueError(f"scoring.thresholds: {len(s.thresholds)} thresholds for "
                             f"{n} classes")
        return self


def fix_for(run_dir: Path) -> str:
    """How to get a good summary.json back."""
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return (f"run `tlkit fit CONFIG --out {run_dir} --resume` to write it again from the "
                "run's last checkpoint, or restore the file from a backup")
    return "restore the file from a backup, or run fit again into a new --out"


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(the whole file)"


def read_summary(run_dir: Path | str) -> dict[str, Any]:
    """``RUN/summary.json`` as written by fit, checked; a UserError (the file, the field, the
    fix) when it is missing, unreadable, not JSON, not an object or has a field of the wrong
    kind. The dict as the file holds it (fields a newer tlkit adds included)."""
    run_dir = Path(run_dir)
    path = run_dir / NAME
    if not path.is_file():
        how = (f"finish it with `tlkit fit CONFIG --out {run_dir} --resume`"
               if (run_dir / "checkpoints" / "last.pt").is_file()
               else "give the --out folder of a finished fit")
        raise UserError(f"{run_dir} is not a finished tlkit run (no {NAME}); {how}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{path} cannot be read ({e.strerror or e}); check its permissions"
                        ) from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not text (not UTF-8): the file is damaged; "
                        f"{fix_for(run_dir)}") from None
    except ValueError as e:  # json.JSONDecodeError: not JSON, or cut short
        raise UserError(f"{path} is not valid JSON ({e}; cut short or edited): the file is "
                        f"damaged; {fix_for(run_dir)}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds a JSON {type(raw).__name__}, not a run's summary (an "
                        f"object); {fix_for(run_dir)}")
    try:
        Summary.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        got = ("missing" if first["type"] == "missing"
               else f"got {json.dumps(first.get('input'), default=str)[:80]}")
        msg = first["msg"].removeprefix("Value error, ")
        where = f"field {_where(first)}: {msg} ({got})" if first["loc"] else msg
        raise UserError(f"{path}: {where}; the file is damaged; {fix_for(run_dir)}") from None
    return raw
