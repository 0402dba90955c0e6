"""Each strategy's own keys in the flat ``transfer_config``: the fields of every registered
strategy's ``Settings`` (``tlkit.strategies``) merged into ``TransferConfig`` (after
``auto_budget``) and into its ``PlanSettings`` view (after ``epochs``), in the registry's order,
sections (a nested mapping, as ``lora``) after the plain keys.
The YAML stays flat, and a strategy's key is checked like any other (its type and bounds at its
dotted path, an unknown key's closest match, the dumped config.yaml); ``tlkit.config.rules``
refuses it under another strategy. A strategy with keys is then one file and one registry line.

The merge follows the registry: ``strategies.register`` of a plug-in adds its keys,
``unregister`` takes them away. pydantic has no public call that adds a field to a model class,
so ``_set_fields`` replaces the class's fields and rebuilds its schema in place (and that of
``Config``, which holds it): every module that imported ``TransferConfig`` keeps the one class.
"""

from __future__ import annotations

import copy
import typing

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tlkit import strategies
from tlkit.config.schema import Config
from tlkit.config.transfer import PlanSettings, TransferConfig

# the models that hold the strategies' keys, and the key each model has them after
_AFTER: dict[type[BaseModel], str] = {TransferConfig: "auto_budget", PlanSettings: "epochs"}
# each model's own fields, without any strategy's
_OWN: dict[type[BaseModel], dict[str, FieldInfo]] = {m: dict(m.model_fields) for m in _AFTER}


def strategy_fields() -> dict[str, FieldInfo]:
    """Every registered strategy's own keys, as its ``Settings`` declares them: the plain keys,
    then the sections (so that a dumped config keeps its one-line keys together, in the order
    config.yaml has always had)."""
    fields = {key: field for name in strategies.names()
              for key, field in strategies.get(name).Settings.model_fields.items()}
    return dict(sorted(fields.items(), key=lambda kv: _is_section(kv[1].annotation)))


def _is_section(annotation: object) -> bool:
    """A nested model, or a union with one (``LoraSettings | None``); not a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return typing.get_origin(annotation) is not list and any(
        _is_section(a) for a in typing.get_args(annotation))


def _set_fields(model: type[BaseModel], fields: dict[str, FieldInfo]) -> None:
    # pydantic (2.10 and later, pyproject's floor) keeps a model's fields in __pydantic_fields__
    model.__pydantic_fields__ = fields
    model.model_rebuild(force=True)


def merge() -> None:
    """Give ``TransferConfig`` and ``PlanSettings`` the keys of the strategies registered now;
    ValueError where a strategy's key is one of theirs already."""
    own = strategy_fields()
    for model, after in _AFTER.items():
        clash = sorted(set(own) & set(_OWN[model]))
        if clash:
            raise ValueError(f"a strategy's keys {', '.join(clash)} are transfer_config keys "
                             "already; give them other names")
        fields: dict[str, FieldInfo] = {}
        for key, field in _OWN[model].items():
            fields[key] = field
            if key == after:  # a copy each: pydantic completes a field in its own model
                fields.update({k: copy.copy(f) for k, f in own.items()})
        _set_fields(model, fields)
    Config.model_rebuild(force=True)


merge()
strategies.watch(merge)
