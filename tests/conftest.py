"""Shared test settings: one thread per test process (the machine has two cores and tests run
beside other work; a two-thread forward on a tiny model can be 50x slower under contention)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
