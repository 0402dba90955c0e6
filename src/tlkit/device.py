"""Where tensors compute and in which precision: the device a run asks for, and autocast."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tlkit.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use device: auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision: bf16 where the device has it (every CPU; recent GPUs), else fp16."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", dtype=torch.bfloat16)
