"""Where tensors compute and in which precision: the device a run asks for, and autocast."""

from __future__ import annotations

import contextlib
import functools
import platform
from pathlib import Path
from typing import Any

import torch

from tlkit.errors import UserError


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device cuda was asked for but no CUDA GPU is available; use device: auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# CPU flags of native bf16 arithmetic: x86's AVX-512 BF16 and AMX (Intel Cooper Lake, Sapphire
# Rapids and later; AMD Zen 4 and later), Arm's BF16 extension (Graviton 3, Apple M2 and later)
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 natively. Without it PyTorch emulates bf16 through fp32
    conversions: measured on a 2-core AVX2 EPYC, a MobileNetV2 training step at batch 32 took
    12x (32 px) and 9x (96 px) as long under bf16 autocast as in fp32. ``cpuinfo``: the text of
    /proc/cpuinfo (read here on Linux; elsewhere only Apple silicon is assumed to have it)."""
    if cpuinfo is None:
        return _cpu_has_bf16_here()
    flags = {w for line in cpuinfo.splitlines()
             if line.split(":")[0].strip() in ("flags", "Features") for w in line.split()}
    return bool(flags & _BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def _cpu_has_bf16_here() -> bool:
    try:
        return cpu_has_bf16(Path("/proc/cpuinfo").read_text())
    except OSError:
        return platform.system() == "Darwin" and platform.machine() == "arm64"


def mixed_precision_note(device: torch.device, enabled: bool) -> str | None:
    """What ``mixed_precision: true`` does on ``device`` when it is not what the config says."""
    if enabled and device.type == "cpu" and not cpu_has_bf16():
        return ("mixed_precision: off on this CPU, which has no native bf16 (no avx512_bf16 "
                "or amx); emulated bf16 trains several times slower than fp32 here")
    return None


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision: bf16 where the device has it (CPUs with native bf16; recent GPUs),
    fp16 on older GPUs, and fp32 on a CPU without native bf16 (``mixed_precision_note``)."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if not cpu_has_bf16():
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)
