"""A raw config (a mapping, as YAML gives it) validated into a ``Config``: pydantic's errors
become one ``UserError`` that lists every error at once, each at its dotted path
(``transfer_config.unfreeze_schedule[0].unfreeze``), an unknown key with the closest valid one
and the valid keys of its section.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from tlkit.config.schema import Config
from tlkit.errors import UserError


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the model at ``loc`` (a pydantic error location, without the key)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _explain(e: ValidationError, source: str) -> UserError:
    msgs = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic reports which member of a union failed; drop those tags
        loc = tuple(p for p in loc if p not in ("list[UnfreezeStep]", "list[LayerGroupPattern]"))
        dotted = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _fields_at(loc[:-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            parent = _format_loc(loc[:-1]) or "the top level"
            msgs.append(
                f"unknown key {key!r} at {dotted}: {hint}valid keys in {parent}: {', '.join(valid)}"
            )
        elif err["type"] == "missing":
            msgs.append(f"missing required key {dotted}")
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msgs.append(f"{dotted}: {err['input']!r} is not one of {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            where = f"{dotted}: " if dotted else ""
            shown = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"
            msgs.append(f"{where}{msg}{shown}")
    return UserError(f"{source}: invalid config:\n  " + "\n  ".join(msgs))


def validate(raw: Any, source: str = "<config>") -> Config:
    if not isinstance(raw, dict):
        raise UserError(
            f"{source}: the config must be a mapping with transfer_config and data sections, "
            f"got {type(raw).__name__}"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, source) from None
