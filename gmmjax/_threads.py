"""A batch as concurrent calls of the engine, on a CPU.

XLA runs a compiled fit on a CPU as a sequence of small operations ("thunks"), one
after another; only large elementwise work spreads over the cores. Most of a fit keeps
one core busy. Two calls of the same compiled program from two Python threads each keep
a core busy. Measured on the 2-core CPU, warm, two parts against one call
(benchmarks/RESULTS.md):

- W3-cpu 96 -> 55 ms;
- W1-cpu 78 -> 64 ms;
- W2-shaped batches of 400 and 1,000 datasets 10.9 -> 8.0 ms and 20.2 -> 15.8 ms;
- W2-cpu itself (200 datasets) 5.6 ms either way, and 50 such datasets 1.6 -> 2.7 ms:
  below `MIN_PART_WORK` a batch stays one call.

`fit_batch` cuts a concrete batch on a CPU into parts of equal size (the last one
overlaps the one before), so that all parts share one compilation. Dataset i keeps its key ``split(key, B)[i]``: its result is the
one-call result up to rounding (only the vmap width differs), as with chunks and blocks.

Off CPU, inside jit or vmap, and above `gmmjax._covariance.WRITTEN_OUT_MAX_D` features,
a batch stays one call: jaxlib's batched LAPACK kernels on a CPU block pool threads
while they wait for their own tasks, and two at once hung a 2-thread pool (up to that
many features the CPU engine has no LAPACK call).

    default_jobs    how many parts fit_batch makes of a batch by default
    fit             the parts, run at once, gathered in the datasets' order
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from gmmjax import _covariance, _validate
from gmmjax._fit import KeyRows, _fit_batch_jit, _lane_work, default_chunk_size, default_compaction
from gmmjax._types import EMConfig, FitResult

#: A part holds at least this many point-component-feature updates per EM iteration
#: (N K D per restart, summed over its datasets' restarts): below, the threads cost
#: more than they save (see the module docstring).
MIN_PART_WORK = 250_000

_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


def cpu_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_n_jobs(n_jobs) -> None:
    if n_jobs is not None and (not _validate._is_int(n_jobs) or n_jobs == 0 or n_jobs < -1):
        raise ValueError(f"n_jobs must be None, -1 (all cores) or an integer >= 1, got {n_jobs!r}.")


def default_jobs(B: int, N: int, D: int, config: EMConfig, restarts: int, n_jobs=None, backend: str | None = None) -> int:
    """Parts of a (B, N, D) batch for `fit_batch` (1: one call).

    ``n_jobs``: None for the default (on a CPU, the cores, as far as every part keeps
    `MIN_PART_WORK`), -1 for all cores, or the most parts wanted. Always 1 off CPU and
    above `WRITTEN_OUT_MAX_D` features.
    """
    if (backend or jax.default_backend()) != "cpu" or D > _covariance.WRITTEN_OUT_MAX_D or n_jobs == 1:
        return 1
    if n_jobs is None:
        work = B * restarts * _lane_work(N, D, config)
        jobs = min(cpu_cores(), work // MIN_PART_WORK)
    else:
        jobs = cpu_cores() if n_jobs == -1 else n_jobs
    return int(max(1, min(jobs, B)))


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:  # threads start when first needed, and wait idle between calls
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="gmmjax")
        return _pool


def fit(X, w, key, init, config: EMConfig, *, jobs: int, chunk_size: int | None, restarts: int) -> FitResult:
    """`fit_batch`'s compiled call of X (B, N, D), w (B, N) or None, key (one or (B,)),
    init (leaves (B, ...)) or None, as ``jobs`` concurrent calls of B / jobs datasets
    each (one call where ``jobs`` is 1). ``chunk_size``: the caller's, or None for
    `default_chunk_size` of a part. Returns the `FitResult` of the batch.

    Every part has the same number of datasets: the last one ends at the batch's end and
    overlaps the one before (the overlap's results come from the earlier part). Parts
    are cut from host views of the arrays and gathered on the host (a CPU's device
    memory is host memory): eager slices and concatenations, and ``jnp.asarray`` of a
    host array, each compile a program of their own in the first call (20-40 ms each).
    """
    B, N, D = X.shape
    jobs = max(1, min(jobs, B))
    size = -(-B // jobs)
    chunk = int(min(chunk_size or default_chunk_size(size, N, D, config, X.dtype.itemsize, restarts=restarts), size))
    compact = default_compaction(chunk * restarts, config, lane_work=_lane_work(N, D, config))
    if jobs == 1:
        return _fit_batch_jit(X, w, key, init, config=config, chunk=chunk, compact=compact)

    host = lambda a: None if a is None else np.asarray(a)  # noqa: E731
    X, w, init = host(X), host(w), jax.tree_util.tree_map(host, init)
    if _validate._is_single_key(key):
        keys_of = lambda s: KeyRows(key, np.int32(s), B)  # noqa: E731
    elif jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl, data = jax.random.key_impl(key), np.asarray(jax.random.key_data(key))
        keys_of = lambda s: jax.random.wrap_key_data(data[s : s + size], impl=impl)  # noqa: E731
    else:  # raw uint32 keys (B, 2): the default implementation's, as typed keys (one program for both)
        data = np.asarray(key)
        keys_of = lambda s: jax.random.wrap_key_data(data[s : s + size])  # noqa: E731

    def part(s):
        rows = lambda a: None if a is None else a[s : s + size]  # noqa: E731
        res = _fit_batch_jit(
            rows(X), rows(w), keys_of(s), jax.tree_util.tree_map(rows, init), config=config, chunk=chunk, compact=compact
        )
        return jax.device_get(res)  # waited for here, so that the parts run at once

    starts = [min(s, B - size) for s in range(0, B, size)]
    futures = [_executor().submit(part, s) for s in starts]
    parts = [f.result() for f in futures]
    skip = [0] + [end - s for end, s in zip([s + size for s in starts[:-1]], starts[1:])]  # rows done before
    return jax.tree_util.tree_map(
        lambda *leaves: jax.device_put(np.concatenate([a[k:] for a, k in zip(leaves, skip)])), *parts
    )
