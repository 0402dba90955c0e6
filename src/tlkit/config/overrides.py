"""Changing a config: ``--set a.b=value`` overrides on the raw YAML before validation
(``load_config``: file, overrides, validation), and ``derive`` (a validated config with some
keys changed, validated again) for the variants that compare, auto and the diagnostics run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.config.keys import strategy_fields
from tlkit.config.loading import parse_value, parse_yaml
from tlkit.config.schema import Config
from tlkit.config.validation import validate
from tlkit.errors import UserError


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise UserError(
            f"--set {assignment!r}: expected KEY=VALUE, for example --set transfer_config.head_lr=3e-4"
        )
    key, _, value = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {assignment!r}: the key is empty")
    node: Any = raw
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {'.'.join(parts[:i])} is not a section")
        node = node.setdefault(p, {})
    if not isinstance(node, dict):
        raise UserError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")
    node[parts[-1]] = parse_value(value)


def derive(cfg: Config, source: str, **sections: dict[str, Any]) -> Config:
    """``cfg`` with some keys changed (``transfer_config={...}``, ``data={...}``), validated
    again: a derived config is checked like a user's. The keys the user set (pydantic's
    ``model_fields_set``) are those of ``cfg`` and the changed ones, so a derived config still
    tells the user's settings from the defaults (``freeze_strategy: auto`` sets rates only where
    the user left them)."""
    raw = cfg.model_dump(mode="json")
    for name, changes in sections.items():
        raw[name].update(changes)
    new = validate(raw, source)
    for name, changes in sections.items():  # what the user set stays told apart from defaults
        getattr(new, name).__pydantic_fields_set__ = (getattr(cfg, name).model_fields_set
                                                      | set(changes))
    return new


def without_strategy_keys(tc: dict[str, Any]) -> dict[str, Any]:
    """A transfer_config (as a dict) with every strategy's own keys back at their defaults: the
    start of a variant with another strategy."""
    for key, field in strategy_fields().items():
        tc[key] = field.get_default(call_default_factory=True)
    return tc


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found; give the path to a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config {str(p)!r}: {e}") from None
    raw = parse_yaml(text, str(p))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{p}: the config must be a mapping with transfer_config and data sections")
    for o in overrides:
        apply_override(raw, o)
    return validate(raw, str(p))
