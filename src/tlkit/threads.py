"""One BLAS thread for the small solver problems tlkit hands to scikit-learn.

A logistic regression on a few thousand pooled features spends its time in thin matrix products
(examples x features times features x classes), where OpenBLAS's threads cost more than they
give: on this project's 2-core CPU, one solve of the convex head (31 fits) took 0.75 s on one
BLAS thread against 5.18 s on two for 200 x 768 features and 10 classes, 2.56 s against 8.75 s
for 2,000 x 1,280, and 0.45 s against 0.41 s for a binary 1,000 x 384 (bench/blas_threads.py,
bench/README.md). The heads agree to 1e-14. torch's own threads are not touched.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which numpy's and scipy's BLAS run on one thread (threadpoolctl, the
    library scikit-learn itself uses to size its thread pools)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
