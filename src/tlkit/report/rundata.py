"""What a report reads from a finished run directory: the files fit wrote, nothing recomputed.

The plan comes back from plan.json (the plan table as data, ``tlkit.plan.table.plan_record``), so
the report needs neither the backbone nor torch. A run directory written before plan.json existed
has its plan read back from plan.txt's text (what ``tlkit plan`` prints).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import UserError
from tlkit.summary_json import read_summary


@dataclass(frozen=True)
class Block:
    """One row of a phase's plan: a backbone group, or the head."""

    name: str
    n_params: int
    trainable: bool
    lr: float
    adapters_only: bool = False  # LoRA: only the group's adapter matrices train


@dataclass(frozen=True)
class PhasePlan:
    index: int  # 1-based, as plan.txt and metrics.jsonl number phases
    epochs: tuple[int, int]  # first and last epoch, inclusive
    label: str
    blocks: tuple[Block, ...]  # input -> output, the head last

    @property
    def trainable(self) -> dict[str, bool]:
        return {b.name: b.trainable for b in self.blocks}


@dataclass
class RunData:
    path: Path
    summary: dict[str, Any]
    config_text: str = ""
    plan_text: str = ""
    phases: list[PhasePlan] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def load_run(path: Path) -> RunData:
    """The files of a finished run; a UserError for a directory that is not one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory; give the run directory that "
                        "`tlkit fit --out` wrote")
    summary_file = path / "summary.json"
    if not summary_file.is_file():
        how = (f"finish it with `tlkit fit CONFIG --out {path} --resume`"
               if (path / "checkpoints" / "last.pt").is_file()
               else "give the run directory that `tlkit fit --out` wrote")
        raise UserError(f"{path} is not a finished run: it has no summary.json (fit writes it "
                        f"at the end); {how}")
    # checked as tlkit.load checks it: a damaged file or field is a UserError naming it
    summary = read_summary(path)
    plan_text = _read_text(path / "plan.txt")
    return RunData(path=path, summary=summary, config_text=_read_text(path / "config.yaml"),
                   plan_text=plan_text, phases=read_plan(path, plan_text),
                   metrics=read_metrics(path / "metrics.jsonl"))


def read_plan(path: Path, plan_text: str) -> list[PhasePlan]:
    """The phases of the run at ``path``: from plan.json; from ``plan_text`` (plan.txt) where
    there is no plan.json (a run of an earlier tlkit) or it cannot be read as one."""
    phases = plan_from_record(_read_json(path / "plan.json"))
    return parse_plan(plan_text) if phases is None else phases


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; None where the file is missing or is not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """One row per epoch; a line cut by a crash ends the list."""
    rows: list[dict[str, Any]] = []
    for line in _read_text(path).splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def plan_from_record(record: Any) -> list[PhasePlan] | None:
    """The phases of a plan.json record (``tlkit.plan.table.plan_record``: phases and epochs
    counted from 0, ``end_epoch`` exclusive, rows input -> output with the head last), as
    ``parse_plan`` gives them; None for anything else."""
    try:
        return [PhasePlan(int(p["index"]) + 1, (int(p["start_epoch"]), int(p["end_epoch"]) - 1),
                          str(p["label"]), tuple(_block(r) for r in p["rows"]))
                for p in record["phases"]]
    except (KeyError, TypeError, ValueError):
        return None


def _block(row: dict[str, Any]) -> Block:
    """One row of a plan.json phase (a ``tlkit.plan.table.GroupRow``)."""
    if not isinstance(row["trainable"], bool) or not isinstance(row["n_params"], int):
        raise ValueError("not a plan row")
    trainable = row["trainable"]
    return Block(str(row["name"]), row["n_params"], trainable, float(row["lr"]),
                 trainable and row.get("adapters_only") is True)


_PHASE = re.compile(r"^phase (\d+) \(epochs? (\d+)(?:-(\d+))?(?:, optimizer steps [^)]*)?\): (.*?)  trainable ")


def parse_plan(text: str) -> list[PhasePlan]:
    """The phases of plan.txt, each with its blocks in stack order (input first, head last)."""
    phases: list[dict[str, Any]] = []  # index, epochs, label and rows of each phase
    current: dict[str, Any] | None = None
    adapters = False  # the table has a trainable-count column (a LoRA plan)
    for line in text.splitlines():
        m = _PHASE.match(line)
        if m:
            first = int(m.group(2))
            current = {"index": int(m.group(1)), "epochs": (first, int(m.group(3) or first)),
                       "label": m.group(4), "rows": []}
            phases.append(current)
        elif current is not None and line.split()[:1] == ["group"]:
            adapters = "trainable" in line.split()
        elif current is not None and line.startswith("  "):
            block = _parse_row(line.split(), adapters)
            if block is not None:
                current["rows"].append(block)
    return [PhasePlan(p["index"], p["epochs"], p["label"], tuple(reversed(p["rows"])))
            for p in phases]


def _parse_row(tokens: list[str], adapters: bool) -> Block | None:
    """``name params [trainable] state lr wd no-wd`` (plan.txt lists the top of the stack
    first); None for the total line."""
    params_at = -6 if adapters else -5
    if len(tokens) < 1 - params_at or tokens[-4] not in ("frozen", "trainable", "lora"):
        return None
    try:
        lr = float(tokens[-3].strip("()"))
        n_params = int(tokens[params_at].replace(",", ""))
    except ValueError:
        return None
    state = tokens[-4]
    return Block(" ".join(tokens[:len(tokens) + params_at]), n_params, state != "frozen", lr,
                 state == "lora")
