"""Compute frozen layers once: the feature cache and the frozen-prefix cache.

A frozen group is a fixed function (its BatchNorm statistics fixed, its dropout off), so with
deterministic preprocessing its output for a sample is the same every epoch. When the bottom ``k``
groups are frozen, the activations at the input of group ``k + 1`` are computed once, batched, in
inference mode, and each training step runs only the trainable part on them. With every group
frozen (feature extraction) the cache holds the pooled features and an epoch costs only the head.

Pooled features are also kept on disk, keyed by the backbone's weights, the cut, the
preprocessing and the data, so a later run (another head, another learning rate) reuses them.

With several processes (``tlkit.distributed``) each computes a contiguous block of a split and
the blocks are gathered, so every process holds the whole split: its share of each global
batch can be any sample of it, the shuffled batches change every epoch, and a resume may use
another process count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.backbones.base import Backbone
from tlkit.backbones.packaged import cache_dir
from tlkit.config import CacheSettings
from tlkit.data.collate import Collate
from tlkit.device import autocast, cpu_has_bf16
from tlkit.distributed import SINGLE, Dist
from tlkit.plan import Plan
from tlkit.tensors import to_device
from tlkit.token_rows import START


@dataclass
class CachedSplit:
    """Activations of one split at one cut, in the split's order.

    Images: one tensor (N, ...). Text below the top: one (T_i, H) tensor per sample, unpadded,
    and batches are padded again per batch with their attention mask.

    Token classification (``offsets`` set): a sample is a sentence of several word rows
    (``tlkit.token_rows``); ``targets`` and pooled ``dense`` features hold one row per word,
    sentence i's rows at ``offsets[i]:offsets[i + 1]``, and below the top ``positions`` holds
    each sentence's words' first sub-word positions in its own sequence (-1: cut off).
    """

    cut: int
    dense: torch.Tensor | None  # (N, ...) for images and pooled features
    ragged: list[torch.Tensor] | None  # per-sample (T_i, H) hidden states for text
    targets: torch.Tensor
    nbytes: int
    offsets: torch.Tensor | None = None  # token classification: (N + 1) word-row offsets
    positions: list[torch.Tensor] | None = None  # token classification below the top

    def __len__(self) -> int:
        return len(self.targets) if self.offsets is None else len(self.offsets) - 1

    def rows(self, idx: list[int]) -> torch.Tensor | list[int]:
        """The word rows of the sentences ``idx`` (the samples themselves without offsets)."""
        if self.offsets is None:
            return idx
        o = self.offsets.tolist()
        return torch.cat([torch.arange(o[i], o[i + 1]) for i in idx]) if idx else \
            torch.zeros(0, dtype=torch.long)

    def batch(self, indices: Sequence[int], device: torch.device) -> tuple[Any, torch.Tensor]:
        idx = list(indices)
        rows = self.rows(idx)
        y = self.targets[rows]
        if self.dense is not None:
            return self.dense[rows].to(device), y.to(device)
        assert self.ragged is not None
        seqs = [self.ragged[i] for i in idx]
        t = max(s.shape[0] for s in seqs)
        h = seqs[0].shape[1]
        hidden = torch.zeros(len(seqs), t, h, dtype=seqs[0].dtype)
        mask = torch.zeros(len(seqs), t, dtype=torch.long)
        for j, s in enumerate(seqs):
            hidden[j, : s.shape[0]] = s
            mask[j, : s.shape[0]] = 1
        out = {"hidden": hidden.to(device), "attention_mask": mask.to(device)}
        if self.positions is not None:  # into this batch's flattened (samples x t) positions
            at = [torch.where(self.positions[i] >= 0, self.positions[i] + j * t, -1)
                  for j, i in enumerate(idx)]
            out["word_positions"] = torch.cat(at).to(device)
        return out, y.to(device)


def data_fingerprint(inputs: Sequence[Any]) -> str:
    """A hash of a split's inputs: texts and paths by value (and a file's size and mtime),
    arrays by their bytes."""
    h = hashlib.sha1()
    for x in inputs:
        if isinstance(x, np.ndarray):
            h.update(x.tobytes())
        elif isinstance(x, (str, Path)) and not isinstance(x, str):
            p = Path(x)
            st = p.stat() if p.exists() else None
            h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}".encode())
        else:
            h.update(str(x).encode())
        h.update(b"\0")
    return h.hexdigest()


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


@dataclass(eq=False)
class ActivationCache:
    """Computes and holds cached activations per (split, cut), within a memory cap."""

    backbone: Backbone
    n_groups: int
    collate: Collate
    device: torch.device
    autocast: Callable[[], Any]
    max_bytes: int
    disk_dir: Path | None
    key: dict[str, Any]
    batch_size: int = 64
    log: Callable[[str], None] = lambda s: None
    dist: Dist = SINGLE
    _splits: dict[tuple[str, int], CachedSplit | None] = field(default_factory=dict, init=False,
                                                                repr=False)
    _weights: str | None = field(default=None, init=False, repr=False)

    def fresh(self, backbone: Backbone) -> ActivationCache:
        """This cache's settings over ``backbone``, holding nothing: for a model whose layers
        train before a phase reads them (contrastive), so that its activations, and the weights'
        fingerprint that keys their disk copy, are computed from the trained weights at first
        use, never served from the pretrained ones (auto's trials share a cache over the
        pretrained backbone, which no trial trains)."""
        return dataclasses.replace(self, backbone=backbone)

    def held_bytes(self) -> int:
        return sum(s.nbytes for s in self._splits.values() if s is not None)

    def keep_only(self, cuts: set[int]) -> None:
        """Forget activations at other cuts: a later phase never goes back to them."""
        for k in [k for k in self._splits if k[1] not in cuts]:
            del self._splits[k]

    def get(self, name: str, data: Sequence[Any], cut: int, base: int | None = None
            ) -> CachedSplit | None:
        """Activations of ``data`` at the input of group ``cut + 1`` (``cut`` = number of frozen
        bottom groups; ``cut == n_groups`` means pooled features). With ``base`` (a lower cut a
        later phase will need), the bottom of the network runs once, to ``base``, and higher
        cuts are derived from there by running only the groups in between. None if they would
        not fit under the cap (the caller then runs the full forward)."""
        k = (name, cut)
        if k in self._splits:
            return self._splits[k]
        pooled = cut >= self.n_groups
        path = self._disk_path(name, data, cut) if pooled else None
        loaded = self._load(path, name, len(data), cut) if path is not None and path.is_file() \
            else None
        if self.dist.any(loaded is None):  # every process uses the disk copy, or none does
            loaded = None
        if loaded is not None:
            self._splits[k] = loaded
        elif base is not None and 0 < base < cut and self.backbone.can_cut():
            below = self.get(name, data, base)
            self._splits[k] = None if below is None else self._derive(name, below, cut, path)
        else:
            self._splits[k] = self._compute(name, data, cut, path)
        return self._splits[k]

    def _load(self, path: Path, name: str, n: int, cut: int) -> CachedSplit | None:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if len(blob["targets"]) != n:
                raise ValueError(f"{len(blob['targets'])} rows, not {n}")
        except Exception as e:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
            self.log(f"feature cache: {path.name} cannot be used ({type(e).__name__}); "
                     "computing the features again")
            return None
        self.log(f"feature cache: reused {path.name} for {name} ({n} samples)")
        return CachedSplit(cut, blob["features"], None, blob["targets"],
                           blob["features"].numel() * blob["features"].element_size())

    @torch.inference_mode()
    def _derive(self, name: str, below: CachedSplit, cut: int, path: Path | None
                ) -> CachedSplit | None:
        was_training = self.backbone.training
        self.backbone.eval()
        out, over = _Collector(), False
        block = self.dist.block(len(below))
        for start in range(block.start, block.stop, self.batch_size):
            idx = list(range(start, min(block.stop, start + self.batch_size)))
            act, y = below.batch(idx, self.device)
            with self.autocast():
                res = self.backbone.forward_between(act, below.cut, cut, self.n_groups)
            out.add(res, y)
            if out.nbytes * self.dist.world + self.held_bytes() > self.max_bytes:
                over = True
                break
        self.backbone.train(was_training)
        if self.dist.any(over):
            self._over_cap(name, cut)
            return None
        split = self._gathered(out, cut)
        self.log(f"activation cache: {name} at cut {cut} derived from cut {below.cut} "
                 f"({len(below)} samples, {split.nbytes / 2**20:.1f} MiB)")
        return self._store(split, path)

    def _over_cap(self, name: str, cut: int) -> None:
        self.log(f"activation cache: {name} at cut {cut} would pass the cap of "
                 f"{self.max_bytes / 2**20:.0f} MiB; running the full forward instead")

    def _gathered(self, out: _Collector, cut: int) -> CachedSplit:
        """This process's block, or with several processes every block in rank order."""
        if not self.dist.enabled:
            return out.split(cut)
        parts = [p for p in self.dist.gather(out.split(cut) if out.targets else None)
                 if p is not None]
        dense = (torch.cat([p.dense for p in parts if p.dense is not None])
                 if parts[0].dense is not None else None)
        ragged = ([t for p in parts for t in p.ragged or []] if parts[0].ragged is not None
                  else None)
        offsets = positions = None
        if parts[0].offsets is not None:  # token classification: offsets shifted per block
            blocks = [p.offsets for p in parts if p.offsets is not None]
            shifts = torch.tensor([0] + [int(o[-1]) for o in blocks]).cumsum(0)
            offsets = torch.cat([torch.zeros(1, dtype=torch.long)]
                                + [o[1:] + shifts[k] for k, o in enumerate(blocks)])
            positions = ([t for p in parts for t in p.positions or []]
                         if parts[0].positions is not None else None)
        return CachedSplit(cut, dense, ragged, torch.cat([p.targets for p in parts]),
                           sum(p.nbytes for p in parts), offsets, positions)

    def _store(self, split: CachedSplit, path: Path | None) -> CachedSplit:
        # with several processes, one per machine writes (the folder may be the machine's own)
        if path is not None and split.dense is not None and self.dist.is_local_main:
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as f:
                    torch.save({"features": split.dense, "targets": split.targets}, f)
                os.replace(tmp, path)
            except OSError as e:
                # The disk copy only saves a later run time: without it this run goes on.
                tmp.unlink(missing_ok=True)
                self.log(f"feature cache: could not keep {path.name} on disk "
                         f"({e.strerror or e}); continuing without it")
        return split

    # ----------------------------------------------------------------------------------------

    def _disk_path(self, name: str, data: Sequence[Any], cut: int) -> Path | None:
        if self.disk_dir is None or isinstance(getattr(data, "targets", None), list):
            return None  # no disk copy of token classification's word rows
        if self._weights is None:
            self._weights = weights_fingerprint(self.backbone)
        inputs = getattr(data, "inputs", None)
        fp = data_fingerprint(inputs) if inputs is not None else f"{name}-{len(data)}"
        targets = getattr(data, "targets", None)
        if isinstance(targets, torch.Tensor):
            fp += hashlib.sha1(targets.numpy().tobytes()).hexdigest()
        blob = json.dumps({**self.key, "weights": self._weights, "cut": cut, "data": fp},
                          sort_keys=True, default=str)
        return self.disk_dir / f"{hashlib.sha1(blob.encode()).hexdigest()[:20]}.pt"

    @torch.inference_mode()
    def _compute(self, name: str, data: Sequence[Any], cut: int, path: Path | None
                 ) -> CachedSplit | None:
        pooled = cut >= self.n_groups
        was_training = self.backbone.training
        self.backbone.eval()
        out, over = _Collector(), False
        block = self.dist.block(len(data))  # all of it with one process
        for start in range(block.start, block.stop, self.batch_size):
            items = [data[i] for i in range(start, min(block.stop, start + self.batch_size))]
            inputs, y = self.collate(items)
            inputs = to_device(inputs, self.device)
            with self.autocast():
                res = self.backbone(inputs) if pooled else self.backbone.forward_to(inputs, cut)
            out.add(res, y)
            # with several processes the whole split is about world times this block
            if out.nbytes * self.dist.world + self.held_bytes() > self.max_bytes:
                over = True
                break
        self.backbone.train(was_training)
        if self.dist.any(over):  # every process falls back together
            self._over_cap(name, cut)
            return None
        split = self._gathered(out, cut)
        what = "pooled features" if pooled else f"activations at cut {cut}"
        shards = f" in {self.dist.world} shards" if self.dist.enabled else ""
        self.log(f"activation cache: computed {what} of {name} once{shards} ({len(data)} "
                 f"samples, {split.nbytes / 2**20:.1f} MiB)")
        return self._store(split, path)


class _Collector:
    """Gathers batches of activations: dense tensors, or text hidden states cut to each
    sample's real tokens. Token classification's batches (targets of word rows, an int64
    (W, 3) tensor) also record where each sentence's rows start and, below the top, its
    words' positions in its own sequence."""

    def __init__(self) -> None:
        self.dense: list[torch.Tensor] = []
        self.ragged: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.positions: list[torch.Tensor] = []
        self.offsets: list[int] = [0]
        self.nbytes = 0

    def add(self, out: Any, y: torch.Tensor) -> None:
        words = y.ndim == 2 and y.dtype == torch.long  # token classification's word rows
        if words:
            starts = torch.nonzero(y[:, START].cpu()).flatten()
            self.offsets += [self.offsets[-1] + int(e) for e in [*starts[1:].tolist(), len(y)]]
        if isinstance(out, dict):
            lengths = out["attention_mask"].sum(1).tolist()
            for j, n in enumerate(lengths):
                t = out["hidden"][j, : int(n)].cpu().clone()
                self.ragged.append(t)
                self.nbytes += t.numel() * t.element_size()
            if words:
                t = out["hidden"].shape[1]
                sentence = torch.cumsum(y[:, START].cpu(), 0) - 1
                pos = out["word_positions"].cpu()
                local = torch.where(pos >= 0, pos - sentence * t, -1)
                bounds = [*starts.tolist(), len(y)]
                self.positions += [local[a:b].clone() for a, b in zip(bounds, bounds[1:])]
        else:
            t = out.cpu()
            self.dense.append(t)
            self.nbytes += t.numel() * t.element_size()
        self.targets.append(y.cpu())

    def split(self, cut: int) -> CachedSplit:
        words = len(self.offsets) > 1
        return CachedSplit(cut, torch.cat(self.dense) if self.dense else None,
                           self.ragged or None, torch.cat(self.targets), self.nbytes,
                           torch.tensor(self.offsets) if words else None,
                           self.positions if words and self.ragged else None)


def cache_for(backbone: Backbone, n_groups: int, collate: Collate, device: torch.device,
              cs: CacheSettings, preprocessing: Any, log: Callable[[str], None] = lambda s: None,
              dist: Dist = SINGLE) -> ActivationCache:
    """The activation cache a run uses: its cap, its disk folder, and the key that makes
    ``fit``, ``rank`` and ``compare`` reuse each other's pooled features on disk."""
    return ActivationCache(
        backbone, n_groups, collate, device,
        lambda: autocast(device, cs.mixed_precision), cs.max_mb * 2**20,
        cache_dir() / "features" if cs.disk else None,
        {"backbone": cs.source_model, "preprocessing": preprocessing.to_dict(),
         # the precision the features were computed in (bf16 only where the device has it)
         "mixed_precision": cs.mixed_precision and (device.type != "cpu" or cpu_has_bf16()),
         "device": device.type},
        batch_size=max(cs.batch_size, 64), log=log, dist=dist)


class CacheHook:
    """The training loop's ``batch_source``: in each phase, the activations of every split at
    the phase's cut, so only the groups above it run. The lowest cut any phase needs is computed
    from the inputs once; the higher cuts of earlier phases are derived from it."""

    def __init__(self, cache: ActivationCache, plan: Plan) -> None:
        self.cache = cache
        self.n_groups = cache.n_groups
        cuts = [c for c in map(plan.frozen_below, plan.phases) if c > 0]
        self.base = min(cuts) if cuts else None

    def batch_source(self, cut: int, splits: dict[str, Sequence[Any]]
                     ) -> dict[str, CachedSplit] | None:
        """Every training split at ``cut`` (None when nothing is frozen, the backbone cannot be
        cut there, or a training split passes the cap); validation where it fits."""
        if cut == 0 or not (cut == self.n_groups or self.cache.backbone.can_cut()):
            return None
        base = self.base
        self.cache.keep_only({cut} if base is None or base > cut else {cut, base})
        train = self.cache.get("train", splits["train"], cut, base)
        if train is None:
            return None
        val = self.cache.get("val", splits["val"], cut, base)
        got = {"train": train, **({"val": val} if val is not None else {})}
        for name, data in splits.items():
            if name not in got and name != "val":
                cached = self.cache.get(name, data, cut, base)
                if cached is None:  # over the cap: every split runs the full forward
                    return None
                got[name] = cached
        return got
