"""The contract every backbone meets, whatever library it comes from.

A backbone is an ``nn.Module`` that maps a batch of preprocessed inputs to pooled features of size
``feature_dim``. It knows its ordered layer groups (input to output), its own preprocessing, and it
never carries the classifier it was pretrained with: the task head is attached by ``TransferModel``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class ImagePreprocessing:
    """What the backbone expects of an image (timm's data config, in its own words)."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # one per input channel
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    kind: Literal["image"] = "image"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextPreprocessing:
    """What the backbone expects of text: its tokenizer (a local folder) and the longest input."""

    tokenizer: str = ""
    max_length: int = 128
    kind: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocessing = ImagePreprocessing | TextPreprocessing


def preprocessing_from_dict(d: dict[str, Any]) -> Preprocessing:
    d = dict(d)
    kind = d.get("kind")
    if kind == "image":
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return ImagePreprocessing(**d)
    if kind == "text":
        return TextPreprocessing(**d)
    raise ValueError(f"unknown preprocessing kind {kind!r}")


@dataclass(frozen=True)
class LayerGroup:
    """One group of backbone parameters; names are relative to the backbone module."""

    name: str
    param_names: tuple[str, ...]
    # Module paths whose forward makes up this group, in order, where the group is a clean
    # sequential stage; used by caches that cut the network between groups.
    modules: tuple[str, ...] = field(default=())


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward`` and groups."""

    kind: Literal["image", "text"]
    feature_dim: int
    preprocessing: Preprocessing
    # How the backbone was built, enough for ``tlkit predict`` to build it again offline
    # (architecture only: the weights come from the run directory's model.safetensors).
    spec: dict[str, Any]
    # Whether the pooled embedding was trained to be compared by cosine similarity (a
    # sentence-transformers model that ends with its Normalize module): head.normalize auto
    # reads it.
    cosine: bool = False

    def forward(self, inputs: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_groups(self) -> list[LayerGroup]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- cutting the network between groups (for the frozen-prefix cache) -----------------
    # A backbone whose trunk is a chain of units (stem, blocks, ...) lists them in ``units``;
    # the base class then runs any contiguous range of groups. Others return None and are
    # never cut (the cache then holds only pooled features).

    _cut_groups: list[LayerGroup] | None = None

    def units(self) -> list[str] | None:
        """Module paths (relative to the backbone) of the trunk's chain, input to output."""
        return None

    def run_unit(self, index: int, state: Any) -> Any:  # pragma: no cover - per adapter
        raise NotImplementedError

    def begin(self, inputs: Any) -> Any:
        return inputs

    def end(self, state: Any) -> torch.Tensor:  # pragma: no cover - per adapter
        raise NotImplementedError

    def export_state(self, state: Any) -> Any:
        """What is cached at a cut (a tensor, or a dict of tensors for text)."""
        return state

    def import_state(self, cached: Any) -> Any:
        return cached

    def use_groups(self, groups: list[LayerGroup]) -> None:
        """The groups the plan uses (the backbone's own, or the config's regex override)."""
        self._cut_groups = list(groups)
        self._bounds: list[int] | None = self._unit_bounds()

    def _unit_bounds(self) -> list[int] | None:
        units = self.units()
        groups = self._cut_groups
        if not units or not groups:
            return None
        group_of: dict[str, int] = {}
        for gi, g in enumerate(groups):
            for p in g.param_names:
                group_of[p] = gi
        unit_group: list[int] = []
        for u in units:
            gs = {gi for p, gi in group_of.items() if p.startswith(u + ".")}
            if len(gs) > 1:
                return None  # a unit split across groups: cannot cut there
            unit_group.append(gs.pop() if gs else (unit_group[-1] if unit_group else 0))
        if unit_group != sorted(unit_group):
            return None
        # bounds[k] = number of units that groups 0..k-1 cover
        return [sum(1 for g in unit_group if g < k) for k in range(len(groups) + 1)]

    def can_cut(self) -> bool:
        return getattr(self, "_bounds", None) is not None

    def forward_to(self, inputs: Any, cut: int) -> Any:
        """Run the bottom ``cut`` groups; return what the cache keeps."""
        assert self._bounds is not None
        state = self.begin(inputs)
        for i in range(self._bounds[cut]):
            state = self.run_unit(i, state)
        return self.export_state(state)

    def forward_from(self, cached: Any, cut: int) -> torch.Tensor:
        """Run groups ``cut + 1 ..`` and pool, from what ``forward_to`` returned (or return
        the pooled features as they are when every group is below the cut)."""
        n = len(self._cut_groups) if self._cut_groups is not None else None
        if n is not None and cut >= n:
            return cached
        assert self._bounds is not None
        state = self.import_state(cached)
        for i in range(self._bounds[cut], len(self.units() or [])):
            state = self.run_unit(i, state)
        return self.end(state)

    def forward_between(self, cached: Any, low: int, high: int, n_groups: int) -> Any:
        """From activations at cut ``low`` to those at cut ``high`` (pooled features when
        ``high`` is ``n_groups``): only the groups in between run."""
        assert self._bounds is not None
        state = self.import_state(cached)
        stop = len(self.units() or []) if high >= n_groups else self._bounds[high]
        for i in range(self._bounds[low], stop):
            state = self.run_unit(i, state)
        return self.end(state) if high >= n_groups else self.export_state(state)

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names (relative to the backbone) that take no weight decay beyond the
        norms and biases, which are excluded by rule."""
        return set()
