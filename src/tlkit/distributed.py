"""Data-parallel processes: which one this is, and the few collectives the loop needs.

Accelerate sets up the process group and the device from what the launcher left in the
environment (``torchrun`` and ``accelerate launch`` both set RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR): NCCL on CUDA, gloo on CPU. The rest is plain ``torch.distributed``.

The design keeps one process's result as the reference. The batches of an epoch stay the global
ones of a single process; each process takes its share of every batch, and torch's
DistributedDataParallel averages the gradients over the processes once per optimizer step
(``tlkit.train.parallel``) after each process has scaled its loss by its share of the batch
(times the processes), so the step is the single-process step of the global batch up to the
order of float additions. Validation and test outputs are gathered in
the data's order and every process computes the same metrics from them, so every process takes
the same early-stopping decision. Only rank 0 touches the run directory.

With one process (no launcher) ``Dist`` is ``SINGLE``: no process group, and every method is a
no-op that returns its input.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from tlkit.device import pick_device
from tlkit.errors import UserError

T = TypeVar("T")


def launched() -> bool:
    """Whether a launcher started this process as one of several (torchrun, accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes files and prints."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    # -- shares of the data ------------------------------------------------------------------

    def share(self, batch: Sequence[int]) -> list[int]:
        """This process's share of a global batch: every world-th index from the rank on."""
        return list(batch[self.rank::self.world])

    def block(self, n: int) -> range:
        """This process's contiguous block of ``range(n)``; the blocks in rank order are the
        whole range, so gathering them in rank order restores the data's order."""
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    # -- collectives -------------------------------------------------------------------------

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order, on every process (pickled; for outputs and
        cached activations; gradients go through DDP)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device())
        dist.all_reduce(t)
        return bool(t.item() > 0)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the processes (float64)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; its result, or the UserError it raised, reaches every
        process (which then raises the same error, so every process exits with code 2)."""
        result: Any = None
        error: str | None = None
        if self.is_main:
            try:
                result = fn()
            except UserError as e:
                error = str(e)
        if self.enabled:
            import torch.distributed as dist

            box = [result, error]
            dist.broadcast_object_list(box, src=0)
            result, error = box
        if error is not None:
            raise UserError(error)
        return result

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers on every process (after rank 0 alone loaded them)."""
        if not self.enabled:
            return
        import torch.distributed as dist

        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src=0)

    def seed_per_process(self) -> None:
        """Different dropout masks on each process: a seed drawn from the shared generator
        state (the same on every process) plus the rank."""
        if not self.enabled:
            return
        base = int(torch.randint(0, 2**62, (1,)).item())
        torch.manual_seed(base + self.rank)

    def _comm_device(self) -> torch.device:
        # NCCL moves only CUDA tensors; gloo only CPU ones
        return self.device if self.device.type == "cuda" else torch.device("cpu")


SINGLE = Dist(0, 1, 0, torch.device("cpu"))


def setup(device: str) -> Dist:
    """This process's place: one process (no launcher) on ``pick_device(device)``, or, under a
    launcher, the process group through Accelerate and this process's device (cuda:LOCAL_RANK,
    or the CPU with gloo)."""
    if not launched():
        return Dist(0, 1, 0, pick_device(device))
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes"):
        # what `accelerate launch` sets from a config with distributed_type: FSDP
        raise UserError("FSDP (distributed_type: FSDP in the accelerate config) is not supported "
                        "yet: validation, the activation cache and checkpoints read the whole "
                        "model; launch with a config without it (plain data parallel, "
                        "docs/scaling.md)")
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device {device} cannot run on several processes; use device: auto, "
                        "cuda or cpu")
    cpu = device == "cpu" or not torch.cuda.is_available()
    if device == "cuda" and cpu:
        raise UserError("device cuda was asked for but no CUDA GPU is available; use device: auto")
    try:
        from accelerate import PartialState
    except ImportError:  # pragma: no cover - a dependency; a broken install
        raise UserError("several processes need the accelerate package: pip install "
                        "'accelerate>=1.0,<2'") from None
    import torch.distributed as dist

    state = PartialState(cpu=cpu, **({"backend": "gloo"} if cpu else {}))
    if not dist.is_initialized():  # pragma: no cover - Accelerate found no launcher
        raise UserError("WORLD_SIZE is above 1 but no process group could be set up; launch "
                        "with torchrun or accelerate launch")
    atexit.register(_teardown)
    return Dist(state.process_index, state.num_processes, state.local_process_index,
                torch.device("cpu") if cpu else torch.device(state.device))


def _teardown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
