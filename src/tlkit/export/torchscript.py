"""TorchScript: the run's model as one ``.pt`` file, loaded by ``torch.jit.load`` for the check.

``torch.jit.trace``, not ``torch.jit.script``: scripting compiles the Python source, which the timm
and transformers models (dynamic kwargs, dataclass outputs, Python-side config) do not support;
tracing records the operations one forward runs, which is all inference needs. Its limit, control
flow that depends on the input's values, is why the example has padding and why the export is
checked against PyTorch on real data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit.export.common import Runner, graph_inputs, quiet


def export_torchscript(module: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> str:
    """Write ``module`` traced on ``example`` to ``path``; which exporter wrote it."""
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))
    return f"torch.jit.trace, torch {torch.__version__}"


def torchscript_runner(path: Path, names: list[str]) -> Runner:
    """The file at ``path``, loaded on the CPU."""
    with quiet():  # torch 2.14 calls TorchScript deprecated; it still runs
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            return module(*graph_inputs(inputs, names)).float().numpy()

    return run
