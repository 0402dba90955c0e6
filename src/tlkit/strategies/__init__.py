"""Freeze strategies: one file per strategy, and the one registry that the config's accepted
values, ``tlkit plan``, ``compare``, ``advise`` and the command line's help all read.

Adding a strategy is adding one file here (a subclass of ``base.Strategy`` with ``name``,
``summary``, ``keys`` and ``phases``) and one line in ``BUILTIN`` below. ``register`` adds one at
run time (a plug-in, or a test's toy strategy).
"""

from __future__ import annotations

from tlkit.errors import UserError
from tlkit.strategies import all_frozen, gradual, lora, lp_ft, none, top_n_unfrozen
from tlkit.strategies.base import PhaseSpec, Strategy, phase_at, selector_count

BUILTIN: tuple[Strategy, ...] = (
    all_frozen.STRATEGY,
    top_n_unfrozen.STRATEGY,
    gradual.STRATEGY,
    none.STRATEGY,
    lora.STRATEGY,
    lp_ft.STRATEGY,
)

_REGISTRY: dict[str, Strategy] = {s.name: s for s in BUILTIN}


def register(strategy: Strategy) -> Strategy:
    """Make ``strategy`` a valid ``freeze_strategy`` everywhere; returns it."""
    if not strategy.name or strategy.name in _REGISTRY:
        raise ValueError(f"a strategy needs a new name; {strategy.name!r} is taken or empty")
    _REGISTRY[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    if any(s.name == name for s in BUILTIN):
        raise ValueError(f"{name} is built in")
    _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
    """Every registered strategy's name, built-in ones first."""
    return tuple(_REGISTRY)


def get(name: str) -> Strategy:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown freeze_strategy {name!r}; choose "
                        f"{', '.join(names())}") from None


def owned_keys() -> list[tuple[str, str]]:
    """(strategy, key) for each transfer_config key that belongs to one strategy only."""
    return [(s.name, k) for s in _REGISTRY.values() for k in s.keys]


def describe() -> str:
    """One line per strategy: for the command line's help."""
    return "\n".join(f"  {s.name:<15} {s.summary}" for s in _REGISTRY.values())


__all__ = ["BUILTIN", "PhaseSpec", "Strategy", "describe", "get", "names",
           "phase_at", "register", "owned_keys", "selector_count", "unregister"]
