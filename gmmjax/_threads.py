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

Each part runs under its caller's JAX settings, those of context managers included
(``jax.enable_x64``, ``jax.default_device``, ...: they act on their own thread only).

Off CPU, inside jit or vmap, and above `gmmjax._covariance.WRITTEN_OUT_MAX_D` features,
a batch stays one call: jaxlib's batched LAPACK kernels on a CPU block pool threads
while they wait for their own tasks, and two at once hung a 2-thread pool (up to that
many features the CPU engine has no LAPACK call).

    default_jobs    how many parts fit_batch makes of a batch by default
    submit, gather  calls on the parts of a batch at once, results in the batch's order
    fit             fit_batch's compiled call, in parts
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
from typing import NamedTuple, Optional

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

#: At most this many parts at once, whatever ``n_jobs`` asks.
MAX_JOBS = 64

_pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
_pool_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _cgroup_cpus() -> Optional[int]:
    """The CPU quota of this container (cgroup v2 ``cpu.max``), in whole cores, or None.
    Read once per process: `default_jobs` runs twice in every `fit_batch` call."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def cpu_cores() -> int:
    """Cores this process may run on: its CPU affinity, within a container's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(cores, quota) if quota else cores)


def check_n_jobs(n_jobs) -> None:
    if n_jobs is not None and (not _validate._is_int(n_jobs) or n_jobs == 0 or n_jobs < -1):
        raise ValueError(f"n_jobs must be None, -1 (all cores) or an integer >= 1, got {n_jobs!r}.")


def can_split(D: int, backend: str | None = None) -> bool:
    """Whether fits of D features may run at once from threads: on a CPU, without LAPACK."""
    return (backend or jax.default_backend()) == "cpu" and D <= _covariance.WRITTEN_OUT_MAX_D


def default_jobs(B: int, N: int, D: int, config: EMConfig, restarts: int, n_jobs=None, backend: str | None = None) -> int:
    """Parts of a (B, N, D) batch for `fit_batch` (1: one call).

    ``n_jobs``: None for the default (on a CPU, the cores, as far as every part keeps
    `MIN_PART_WORK`), -1 for all cores, or the most parts wanted. Always 1 off CPU and
    above `WRITTEN_OUT_MAX_D` features. ``restarts``: lanes per dataset.
    """
    if not can_split(D, backend) or n_jobs == 1:
        return 1
    if n_jobs is None:
        work = B * restarts * _lane_work(N, D, config)
        jobs = min(cpu_cores(), work // MIN_PART_WORK)
    else:
        jobs = cpu_cores() if n_jobs == -1 else n_jobs
    return int(max(1, min(jobs, B, MAX_JOBS)))


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:  # threads start when first needed, and wait idle between calls
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=MAX_JOBS, thread_name_prefix="gmmjax")
        return _pool


def _local_settings():
    """The JAX settings that this thread has set apart from their global values, as
    (setting, value) pairs: context managers such as ``jax.enable_x64`` or
    ``jax.default_device`` act on their own thread only, and a part must run as its
    caller would. None where JAX's settings cannot be read this way (a JAX whose
    private ``config_states`` changed): the parts then run one after another in the
    calling thread."""
    try:
        from jax._src import config as jax_config

        local = []
        for state in list(jax_config.config_states.values()):
            value, default = state.value, state.get_global()
            if value is not default and value != default:
                local.append((state, value))
        return local
    except Exception:
        return None


def _under(settings, fn, *args):
    """fn(*args) with the JAX ``settings`` (from `_local_settings`) in force."""
    with contextlib.ExitStack() as stack:
        for state, value in settings:
            stack.enter_context(state(value))
        return fn(*args)


class _KeyRowsOf(NamedTuple):
    """One key for a batch of ``total`` datasets: each part gets its rows as `KeyRows`."""

    key: jax.Array
    total: int

    def rows(self, start: int, size: int):
        return KeyRows(self.key, np.int32(start), self.total)


class _HostKeys(NamedTuple):
    """A (B,) array of keys on the host: each part gets its rows as keys again."""

    impl: object
    data: np.ndarray  # (B, ...) uint32 key data

    def rows(self, start: int, size: int):
        return jax.random.wrap_key_data(self.data[start : start + size], impl=self.impl)


def host_keys(key, B: int):
    """A single key or (B,) keys, ready to be cut into parts (`submit`). Raw uint32 keys
    (B, 2) become typed keys of the default implementation, which is what they mean:
    one compiled program serves both."""
    if _validate._is_single_key(key):
        return _KeyRowsOf(key, B)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(np.asarray(key))
    return _HostKeys(jax.random.key_impl(key), np.asarray(jax.random.key_data(key)))


def host_arrays(a):
    """Leaves of a as host arrays: a CPU's device arrays as views, without a copy."""
    return jax.tree_util.tree_map(np.asarray, a)


def _rows(a, start: int, size: int):
    if a is None:
        return None
    if isinstance(a, (_KeyRowsOf, _HostKeys)):
        return a.rows(start, size)
    return jax.tree_util.tree_map(lambda x: x[start : start + size], a)


def submit(call, B: int, size: int, args):
    """Starts ``call(*parts of args)`` for every part of ``size`` of B datasets, at once:
    the parts' rows of each of ``args`` ((B, ...) host arrays or pytrees of them, None,
    or `host_keys`). The last part ends at B and overlaps the one before: every part has
    ``size`` rows, so all parts share one compilation. Returns the pending parts for
    `gather`."""
    starts = [min(s, B - size) for s in range(0, B, size)]

    def part(start):
        return jax.device_get(call(*(_rows(a, start, size) for a in args)))  # waited for here

    settings = _local_settings()
    if settings is None:  # cannot carry this thread's settings over: here, one after another
        futures = []
        for s in starts:
            futures.append(concurrent.futures.Future())
            futures[-1].set_result(part(s))
        return starts, size, futures
    return starts, size, [_executor().submit(_under, settings, part, s) for s in starts]


def gather(pending):
    """The results of `submit`'s parts (pytrees with a leading axis of the part's size)
    as one pytree with a leading (B,) axis, the rows in the batch's order, as device
    arrays: each overlap's rows come from the earlier part."""
    starts, size, futures = pending
    try:
        results = [f.result() for f in futures]
    except BaseException:  # an error or Ctrl-C: parts not started yet never start
        for f in futures:
            f.cancel()
        raise
    skip = [0] + [prev + size - s for prev, s in zip(starts[:-1], starts[1:])]  # rows done before
    return jax.tree_util.tree_map(
        lambda *leaves: jax.device_put(np.concatenate([a[k:] for a, k in zip(leaves, skip)])), *results
    )


def fit(X, w, key, init, config: EMConfig, *, jobs: int, chunk_size: int | None, restarts: int) -> FitResult:
    """`fit_batch`'s compiled call of X (B, N, D), w (B, N) or None, key (one or (B,)),
    init (leaves (B, ...)) or None, as ``jobs`` concurrent calls of B / jobs datasets
    each (one call where ``jobs`` is 1). ``chunk_size``: the caller's, or None for
    `default_chunk_size` of a part. Returns the `FitResult` of the batch.

    Parts are cut from host views of the arrays and gathered on the host (a CPU's device
    memory is host memory): eager slices and concatenations, an eager key split, and
    ``jnp.asarray`` of a host array each compile a program of their own in the first call
    (20-190 ms each).
    """
    B, N, D = X.shape
    jobs = max(1, min(jobs, B))
    size = -(-B // jobs)
    chunk = int(min(chunk_size or default_chunk_size(size, N, D, config, X.dtype.itemsize, restarts=restarts), size))
    compact = default_compaction(chunk * restarts, config, lane_work=_lane_work(N, D, config))

    def call(X, w, key, init):
        return _fit_batch_jit(X, w, key, init, config=config, chunk=chunk, compact=compact)

    if jobs == 1:
        return call(X, w, key, init)
    return gather(submit(call, B, size, (host_arrays(X), host_arrays(w), host_keys(key, B), host_arrays(init))))
