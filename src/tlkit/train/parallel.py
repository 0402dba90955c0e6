"""Data parallel through the engine: the part of the model a phase trains, wrapped in torch's
DistributedDataParallel, wrapped anew when a phase changes what trains.

With several processes (``tlkit.distributed``) the loop runs each micro-batch's forward through
a ``Parallel`` instead of the model. Its module, ``FromCut``, starts where the phase's batches
start: at the activation cache's cut (``forward_from_cut``), or at the inputs. DDP is set up on
the process group and device Accelerate gave this process (``Dist``), with the arguments
Accelerate's ``prepare_model`` uses (``device_ids`` the local GPU, none on CPUs). It averages
the gradients over the processes during the backward of a step's last micro-batch, overlapping
the all-reduce with the backward; the micro-batches before it run under ``no_sync`` and
accumulate locally.

A phase change flips requires_grad and may move the cut: that changes which parameters DDP
reduces and where the forward starts, so ``parallel_for`` wraps again. A parameter that trains
but that no loss reaches (none of the forward's ops nor a hook's term uses it) would stall DDP's
reducer; it is found once per phase, by walking the autograd graph of one example's forward and
of the hooks' terms, and left out of DDP, so its gradient stays None as on one process (AdamW
skips it) and no step pays ``find_unused_parameters``' graph walk.

Buffers (BatchNorm's running statistics) are not broadcast at each forward: each process's
statistics follow its own share of the batches, as before DDP (rank 0's are the ones saved).

FSDP is refused before anything loads (``tlkit.distributed.setup``): validation, the activation
cache, checkpoints and the best weights read the unwrapped model, whose parameters FSDP keeps
sharded. docs/scaling.md says what it would take.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tlkit.distributed import Dist
from tlkit.errors import UserError
from tlkit.model import TransferModel
from tlkit.train.feed import Feed
from tlkit.train.hooks import with_method

# torch 2.14 renamed broadcast_buffers (deprecated) to forward_sync_buffers
_BUFFERS: dict[str, Any] = ({"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else {"broadcast_buffers": False})


class FromCut(nn.Module):
    """The model from where a phase's batches start: the cut the training activations are
    cached at, or the inputs (``cut`` None)."""

    def __init__(self, model: TransferModel, cut: int | None) -> None:
        super().__init__()
        self.model = model
        self.cut = cut

    def forward(self, inputs: Any) -> torch.Tensor:
        if self.cut is None:
            return self.model(inputs)
        return self.model.forward_from_cut(inputs, self.cut)


@dataclass
class Parallel:
    """A phase's ``FromCut`` under DDP; ``key`` says which phase and cut it serves."""

    part: FromCut
    wrapped: nn.Module
    key: tuple[int, int | None]

    def __call__(self, inputs: Any, *, sync: bool, stand_in: bool) -> torch.Tensor:
        """The forward of this process's share of a micro-batch. ``sync``: the step's last
        micro-batch, whose backward averages the gradients over the processes (the others
        accumulate them here, under ``no_sync``). ``stand_in``: this process's share of the
        batch is empty (a last batch smaller than the processes), so it runs one example of the
        batch in eval mode (no BatchNorm statistics move, no dropout is drawn) whose loss the
        loop weights 0: the process joins the average with zeros."""
        model = self.part.model
        was = model.training
        if stand_in:
            model.eval()
        try:
            with contextlib.nullcontext() if sync else self.wrapped.no_sync():  # type: ignore[operator]
                return self.wrapped(inputs)
        finally:
            if stand_in:
                model.train(was)


def parallel_for(previous: Parallel | None, model: TransferModel, feed: Feed, phase: int,
                 hooks: Sequence[Any], dist: Dist) -> Parallel:
    """The wrapper for this phase's epoch: ``previous`` when it serves the same phase and cut,
    else a new one (every process calls this at the same epoch: DDP's setup is collective)."""
    key = (phase, feed.cut)
    if previous is not None and previous.key == key:
        return previous
    if with_method(hooks, "forward") or with_method(hooks, "parameters"):
        raise UserError("a hook with a forward or parameters of its own (domain adaptation) "
                        "runs on one process only")
    part = FromCut(model, feed.cut)
    unreached = _unreached(part, feed, hooks)
    if unreached:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(part, unreached)
    on_gpu = dist.device.type == "cuda"
    wrapped = DistributedDataParallel(part, device_ids=[dist.device] if on_gpu else None,
                                      output_device=dist.device if on_gpu else None, **_BUFFERS)
    return Parallel(part, wrapped, key)


def _unreached(part: FromCut, feed: Feed, hooks: Sequence[Any]) -> list[str]:
    """The names (in ``part``) of the parameters that train but get no gradient from one
    training example's loss and the hooks' terms: a forward in eval mode, nothing stepped."""
    trainable = [(n, p) for n, p in part.named_parameters() if p.requires_grad]
    if not trainable or not len(feed.splits["train"]):
        return []
    model = part.model
    was = model.training
    model.eval()
    try:
        inputs, _ = feed.batch("train", [0])
        roots = _tensors(part(inputs))
        roots += [t for h in with_method(hooks, "extra_loss") for t in _tensors(h.extra_loss(model))]
    finally:
        model.train(was)
    reached = _leaves(roots)
    return [n for n, p in trainable if id(p) not in reached]


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _leaves(roots: Sequence[torch.Tensor]) -> set[int]:
    """ids of the leaf tensors a backward from ``roots`` accumulates a gradient into."""
    found: set[int] = set()
    seen: set[Any] = set()
    todo = [t.grad_fn for t in roots if t.grad_fn is not None]
    while todo:
        fn = todo.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # an AccumulateGrad node
        if variable is not None:
            found.add(id(variable))
        todo.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return found
