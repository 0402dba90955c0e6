"""Freeze strategies: one file per strategy, and the one registry that the config's accepted
values, ``tlkit plan``, ``compare``, ``advise`` and the command line's help all read.

Adding a strategy is adding one file here (a subclass of ``base.Strategy`` with ``name``,
``summary``, ``phases`` and, if it has keys of its own, ``Settings``) and one line in ``BUILTIN``
below. ``register`` adds one at run time (a plug-in, or a test's toy strategy); the config then
accepts its name and its keys (``tlkit.config.keys`` watches the registry).
"""

from __future__ import annotations

from collections.abc import Callable

from tlkit.errors import UserError
from tlkit.strategies import all_frozen, contrastive, gradual, lora, lp_ft, none, top_n_unfrozen
from tlkit.strategies.base import PhaseSpec, Strategy, StrategySettings, phase_at, selector_count

BUILTIN: tuple[Strategy, ...] = (
    all_frozen.STRATEGY,
    top_n_unfrozen.STRATEGY,
    gradual.STRATEGY,
    none.STRATEGY,
    lora.STRATEGY,
    lp_ft.STRATEGY,
    contrastive.STRATEGY,
)

_REGISTRY: dict[str, Strategy] = {s.name: s for s in BUILTIN}
# called after the registry changes: the config merges the strategies' keys (tlkit.config.keys)
_WATCHERS: list[Callable[[], None]] = []


def watch(changed: Callable[[], None]) -> None:
    """Call ``changed`` after each ``register`` and ``unregister``."""
    _WATCHERS.append(changed)


def _tell_watchers() -> None:
    for changed in _WATCHERS:
        changed()


def register(strategy: Strategy) -> Strategy:
    """Make ``strategy`` a valid ``freeze_strategy`` everywhere, its keys valid under it;
    returns it."""
    if not strategy.name or strategy.name in _REGISTRY:
        raise ValueError(f"a strategy needs a new name; {strategy.name!r} is taken or empty")
    if not isinstance(getattr(type(strategy), "keys", None), property):
        # the interface before strategies declared their keys: a tuple the config never read
        raise ValueError(f"strategy {strategy.name}: declare its keys as fields of a nested "
                         "`class Settings(StrategySettings)`, not as `keys = (...)`")
    taken = [f"{k} ({owner})" for owner, k in owned_keys() if k in strategy.keys]
    if taken:
        raise ValueError(f"strategy {strategy.name}: keys of another strategy: {', '.join(taken)}")
    _REGISTRY[strategy.name] = strategy
    try:
        _tell_watchers()  # the config refuses a key it has already (ValueError)
    except Exception:
        del _REGISTRY[strategy.name]
        _tell_watchers()
        raise
    return strategy


def unregister(name: str) -> None:
    if any(s.name == name for s in BUILTIN):
        raise ValueError(f"{name} is built in")
    if _REGISTRY.pop(name, None) is not None:
        _tell_watchers()


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


def auto_candidates() -> tuple[str, ...]:
    """freeze_strategy auto's candidates, in their order (``Strategy.auto_rank``)."""
    ranked = sorted((s for s in _REGISTRY.values() if s.auto_rank is not None),
                    key=lambda s: s.auto_rank or 0)
    return tuple(s.name for s in ranked)


def with_role(role: str) -> str:
    """The strategy in ``role``'s row of the concept's table (``base.FEATURE_EXTRACTION``,
    ``base.PARTIAL``, ``base.FULL``)."""
    return next(s.name for s in _REGISTRY.values() if s.role == role)


def trains_backbone(name: str) -> bool:
    """Whether strategy ``name`` trains any backbone group (a name not registered, auto: it may)."""
    return name not in _REGISTRY or _REGISTRY[name].trains_backbone


def describe() -> str:
    """One line per strategy: for the command line's help."""
    return "\n".join(f"  {s.name:<15} {s.summary}" for s in _REGISTRY.values())


__all__ = ["BUILTIN", "PhaseSpec", "Strategy", "StrategySettings", "auto_candidates",
           "describe", "get", "names", "phase_at", "register", "owned_keys", "selector_count",
           "trains_backbone", "unregister", "watch", "with_role"]
