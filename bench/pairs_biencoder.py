"""STS-B's test pairs scored without training: the frozen MiniLM bi-encoder's cosine, against a
tlkit cross-encoder run (examples/pairs.yaml) on the same pairs.

The bi-encoder is the packaged all-MiniLM-L6-v2 folder loaded by sentence-transformers (its own
mean pooling and normalisation): each sentence embedded alone, the pair scored by the cosine of
the two embeddings, compared with the gold scores by Pearson and Spearman correlation. A run
directory given with ``--run`` adds its summary.json's test correlations (the same 1,379 pairs).

    .venv/bin/python bench/pairs_biencoder.py --run runs/pairs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common
import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a tlkit run directory of examples/pairs.yaml")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    import torch
    from scipy import stats
    from sentence_transformers import SentenceTransformer

    from tlkit.backbones.packaged import minilm_folder
    from tlkit.data.packaged import load_packaged

    torch.set_num_threads(args.threads)
    test = load_packaged("stsb").test
    first, second = [x[0] for x in test.inputs], [x[1] for x in test.inputs]
    gold = np.asarray(test.targets, dtype=np.float64)
    t0 = time.perf_counter()
    model = SentenceTransformer(str(minilm_folder()), device="cpu")
    a = model.encode(first, batch_size=64, normalize_embeddings=True)
    b = model.encode(second, batch_size=64, normalize_embeddings=True)
    cosine = (a * b).sum(axis=1)
    seconds = time.perf_counter() - t0
    rows = [["frozen MiniLM bi-encoder, cosine (no training)",
             f"{stats.pearsonr(cosine, gold)[0]:.4f}", f"{stats.spearmanr(cosine, gold)[0]:.4f}",
             f"{seconds:.1f}"]]
    if args.run:
        s = json.loads((Path(args.run) / "summary.json").read_text())
        rows.append([f"tlkit run {args.run} ({s['strategy']})", f"{s['test']['pearson']:.4f}",
                     f"{s['test']['spearman']:.4f}", f"{s['total_seconds']:.1f}"])
    print(common.table(["model", "test Pearson", "test Spearman", "seconds"], rows, {1, 2, 3}))
    print(f"\n- STS-B test, {len(gold):,} pairs; machine: {common.machine_line(args.threads)}.")
    print(f"- command: {common.command_line(__file__, argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
