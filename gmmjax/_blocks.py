"""Very large batches: `fit_batch` one block of datasets at a time, from host memory.

One call of the engine (`_fit.py`) needs the whole (B, N, D) input, the trace buffers of
its outputs and its working set on the device at once. Here a batch is cut into blocks
of datasets on the host, and each block is one call of the same compiled engine:

- only one block is on the device at a time: host input (numpy, `np.memmap`) is read
  block by block, and each block's results are copied back to host memory before the
  next block is sent;
- every block has the same shape (the last is padded with empty datasets, weight 0;
  ragged lists are padded per block to the longest dataset of the batch): one
  compilation for all blocks;
- dataset i keeps the key ``jax.random.split(key, B)[i]``, so its result is the one of
  the one-call `fit_batch` (up to rounding: only the vmap width can differ);
- a tqdm bar counts the datasets done, block by block.

    memory_budget      bytes a block may use: free device memory, host RAM on a CPU
    dataset_bytes      the per-dataset estimate blocks are sized with
    block_size_for     the largest block that fits a budget
    plan               fit_batch's decision: None (one call) or a `Blocks` to run
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gmmjax import _threads, _validate
from gmmjax._fit import (
    default_chunk_size,
    dataset_floats,
    params_floats,
    trace_floats,
)
from gmmjax._types import EMConfig, FitResult

#: Share of the free memory that one block may take: XLA's temporaries, allocator
#: fragmentation and the host's own copies are not in `dataset_bytes`.
BUDGET_FRACTION = 0.5
#: The budget where neither the device nor the operating system reports free memory.
FALLBACK_BUDGET = 2 << 30
#: A call needing at most this many bytes (`block_size_for`'s estimate) runs as one call
#: without asking for the free memory: reading /proc/meminfo took 0.12 ms of W2-cpu's
#: 5.5 ms call.
SMALL_CALL_BYTES = 64 << 20
#: With ``progress=True`` and no ``block_size``: about this many updates of the bar
#: (blocks are never smaller than one chunk of the engine).
PROGRESS_UPDATES = 100

_TQDM_MISSING = 'progress=True needs tqdm: pip install "gmmjax[progress]" (or pip install tqdm).'


def _host_available_bytes() -> Optional[int]:
    """Free host RAM in bytes (Linux MemAvailable, else free pages), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device=None) -> int:
    """Bytes one block of `fit_batch` may use on ``device`` (default: JAX's first device).

    `BUDGET_FRACTION` of the free memory: ``bytes_limit - bytes_in_use`` from
    ``device.memory_stats()`` on a GPU or TPU; on a CPU (no memory stats), the free host
    RAM; `FALLBACK_BUDGET` where neither is known.
    """
    device = jax.devices()[0] if device is None else device
    free = None
    try:
        stats = device.memory_stats()
    except Exception:  # backends without memory statistics raise or return None
        stats = None
    if stats and "bytes_limit" in stats:
        free = stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    elif device.platform == "cpu":
        free = _host_available_bytes()
    if free is None or free <= 0:
        return FALLBACK_BUDGET
    return int(free * BUDGET_FRACTION)


class DatasetBytes(NamedTuple):
    """Bytes per dataset, the estimate that blocks are sized with."""

    input: int  # X (N, D) and its weights (N,) on the device
    result: int  # the FitResult of one dataset: parameters, scalars, trace (and restarts)
    engine: int  # the engine's working set for one dataset (all its restarts)


def dataset_bytes(N: int, D: int, config: EMConfig, itemsize: int, restarts: int) -> DatasetBytes:
    """Per-dataset bytes of a block: input, result, engine working set.

    The working set is `default_chunk_size`'s estimate: the (N, K, D) temporaries of an
    E- or M-step and the trace buffers, for every restart, and the moments path's
    per-point moments.
    """
    params = params_floats(config.n_components, D, config.covariance_type)
    result = params + 4 + trace_floats(D, config)  # log_likelihood, n_iter, converged, status
    if config.keep_restarts:
        result *= 1 + restarts
    return DatasetBytes(
        input=N * (D + 1) * itemsize,
        result=result * itemsize,
        engine=dataset_floats(N, D, config, restarts) * itemsize,
    )


def check_one_dataset_fits(
    N: int, D: int, config: EMConfig, itemsize: int, restarts: int, budget: Optional[int] = None
) -> None:
    """ValueError where one dataset alone (a block of one) needs more than ``budget``
    bytes (default `memory_budget`), before the compiled call fails to allocate them.
    The trace buffers are sized by max_iter, not by the iterations run, so a large
    max_iter (harmless in scikit-learn) is the usual cause, and the message says so."""
    one = _block_of_one(dataset_bytes(N, D, config, itemsize, restarts))
    if budget is None:
        if one <= SMALL_CALL_BYTES:
            return
        budget = memory_budget()
    if one <= budget:
        return
    untraced = _block_of_one(dataset_bytes(N, D, dataclasses.replace(config, trace=None), itemsize, restarts))
    what = f"one dataset ({N} points x {D} features, {restarts} restarts) needs {one / 2**30:.1f} GiB"
    if 2 * (one - untraced) > one:
        raise ValueError(
            f"{what}, mostly for its trace: buffers of max_iter + 1 = {config.max_iter + 1} entries per restart "
            f"(trace={config.trace!r}), sized before EM runs. That is more than the {budget / 2**30:.1f} GiB "
            "of memory available: lower max_iter, or (gmmjax.fit, fit_batch) fit with trace=None."
        )
    raise ValueError(f"{what}, more than the {budget / 2**30:.1f} GiB of memory available: fit a smaller dataset.")


def _block_of_one(per: DatasetBytes) -> int:
    return 2 * (per.input + per.result) + per.engine


def block_size_for(budget: int, chunk: int, per: DatasetBytes, jobs: int = 1) -> tuple[int, int]:
    """(block, chunk): the most datasets a block can hold within ``budget`` bytes.

    A block holds its input and results twice (the engine pads and reshapes them) plus
    the working set of one chunk per part (`jobs` parts run at once, the chunks of a
    part one after another). The block is a multiple of ``chunk``; where the parts'
    chunks do not fit, the chunks shrink to the block (split between the parts), so
    that the working set is the block's own: a tight budget gives smaller blocks, never
    blocks of one dataset because a large chunk did not fit.
    """
    stored = 2 * (per.input + per.result)
    block = (budget - jobs * chunk * per.engine) // max(stored, 1)
    if block >= chunk:
        return int(block // chunk * chunk), chunk
    block = max(1, budget // max(_block_of_one(per), 1))
    return int(block), int(block)


class _Source(NamedTuple):
    """A batch as fit_batch received it, read one block at a time."""

    B: int
    N: int
    D: int
    dtype: np.dtype  # of the data as given (`_compute_dtype` gives the one computed in)
    rows: Callable  # (start, stop, size, dtype) -> (X, mask, weights), `size` rows
    weights: Callable  # () -> iterator over host blocks of the weights (for the value check)


def _compute_dtype(dtype) -> np.dtype:
    """The dtype `_validate` computes data of ``dtype`` in (without its warning)."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating) or np.finfo(dtype).bits < 32:
        dtype = np.dtype(jnp.result_type(float))
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        dtype = np.dtype(np.float32)
    return dtype


def _take(a, start: int, stop: int, size: int, dtype=None):
    """Rows start:stop of ``a``, zero-padded to ``size`` rows. A jax.Array stays on its
    device; anything else (numpy, np.memmap, nested lists) is read into host memory."""
    pad = size - (stop - start)
    if isinstance(a, jax.Array):
        part = a[start:stop]
        if pad:
            part = jnp.concatenate([part, jnp.zeros((pad,) + part.shape[1:], part.dtype)])
        return part
    part = np.asarray(a[start:stop], dtype)
    if pad:
        part = np.concatenate([part, np.zeros((pad,) + part.shape[1:], part.dtype)])
    return part


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def _array_source(Xs, mask, weights) -> Optional[_Source]:
    """A (B, N, D) or (B, N) array-like, sliced block by block; None if malformed."""
    if not (hasattr(Xs, "shape") and hasattr(Xs, "dtype")):
        Xs = np.asarray(Xs)
    shape = tuple(Xs.shape)
    if len(shape) not in (2, 3) or shape[0] == 0 or (len(shape) == 3 and shape[2] == 0):
        return None
    B, N = shape[:2]
    D = shape[2] if len(shape) == 3 else 1
    if any(a is not None and _shape(a) != (B, N) for a in (mask, weights)):
        return None

    def rows(start, stop, size, dtype):
        X = _take(Xs, start, stop, size, dtype)
        m = None if mask is None else _take(mask, start, stop, size, bool)
        w = None if weights is None else _take(weights, start, stop, size)
        if m is None and w is None and size > stop - start:  # padded datasets are empty
            m = np.broadcast_to((np.arange(size) < stop - start)[:, None], (size, N))
        return X.reshape(X.shape[:2] + (D,)), m, w

    def weight_blocks(step=4096):
        for start in range(0, B, step):
            yield np.asarray(weights[start : start + step])

    return _Source(B, N, D, np.dtype(Xs.dtype), rows, weight_blocks)


def _list_source(Xs, mask, weights) -> Optional[_Source]:
    """A list of (N_i, D) or (N_i,) arrays, padded block by block; None if malformed."""
    listed = None if mask is not None else _validate.read_list(Xs, weights)
    if listed is None:
        return None
    arrays, weights = listed
    lengths = [a.shape[0] for a in arrays]
    B, N, D = len(arrays), max(max(lengths), 1), arrays[0].shape[1]
    dtype = np.result_type(*{a.dtype for a in arrays})
    if not np.issubdtype(dtype, np.floating) or np.finfo(dtype).bits < 32:
        dtype = np.result_type(float)

    def rows(start, stop, size, dtype):
        # pad_arrays pads to the longest dataset of this block: widen to the batch's.
        part, m = _validate.pad_arrays(arrays[start:stop], dtype)
        X = np.zeros((size, N, D), dtype)
        mask = np.zeros((size, N), bool)
        X[: stop - start, : part.shape[1]] = part
        mask[: stop - start, : m.shape[1]] = m
        w = None
        if weights is not None:
            w = np.zeros((size, N), dtype)
            for i, wi in enumerate(weights[start:stop]):
                w[i, : wi.shape[0]] = wi
        return X, mask, w

    def weight_blocks():
        return iter(weights)

    return _Source(B, N, D, np.dtype(dtype), rows, weight_blocks)


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError as e:
        raise ImportError(_TQDM_MISSING) from e
    return tqdm


def check_block_args(block_size, progress) -> None:
    """ValueErrors for fit_batch's ``block_size`` and ``progress``."""
    if block_size is not None and (not _validate._is_int(block_size) or block_size < 1):
        raise ValueError(
            f"block_size must be an integer >= 1 (datasets sent to the device at a time), or None to "
            f"size blocks from the free memory; got {block_size!r}."
        )
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}.")


class Blocks(NamedTuple):
    """A planned blocked fit: ``run()`` returns the `FitResult` of the whole batch."""

    source: _Source
    dtype: np.dtype  # the dtype computed in
    keys: jax.Array  # (n_blocks * block,) keys, the last ones repeated as padding
    init: object  # GMMParams with leaves (n_blocks * block, ...), or None
    config: EMConfig
    block: int  # datasets per block
    chunk: int  # datasets per chunk of the engine (vmap width)
    restarts: int  # lanes per dataset
    jobs: int  # parts of a block run at once (`gmmjax._threads`)
    progress: bool

    @property
    def n_blocks(self) -> int:
        return -(-self.source.B // self.block)

    def run(self) -> FitResult:
        src, size = self.source, self.block
        B = src.B
        bar = _tqdm()(total=B, unit="dataset", desc="fit_batch") if self.progress else None
        out = None
        try:
            host = src.rows(0, min(size, B), size, self.dtype)
            for start in range(0, B, size):
                stop = min(start + size, B)
                X, w = _validate.batch(*host)  # this block, on the device
                keys = jax.lax.dynamic_slice_in_dim(self.keys, start, size)
                init = jax.tree_util.tree_map(lambda a: jax.lax.dynamic_slice_in_dim(a, start, size), self.init)
                res = _threads.fit(
                    X, w, keys, init, self.config, jobs=self.jobs, chunk_size=self.chunk, restarts=self.restarts
                )
                del X, w, keys, init, host
                # The next block is read and padded on the host while the device works.
                host = src.rows(stop, min(stop + size, B), size, self.dtype) if stop < B else None
                res = jax.device_get(res)
                if out is None:
                    out = jax.tree_util.tree_map(lambda a: np.empty((B,) + a.shape[1:], a.dtype), res)
                for o, a in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(res)):
                    o[start:stop] = a[: stop - start]
                del res
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        # Host results become JAX arrays on the default device, as without blocks; one
        # leaf at a time, each host copy dropped once converted.
        leaves, treedef = jax.tree_util.tree_flatten(out)
        del out
        for i in range(len(leaves)):
            leaves[i] = jax.device_put(leaves[i])  # jnp.asarray would compile a program per shape
        return jax.tree_util.tree_unflatten(treedef, leaves)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _pad_rows(a, total: int):
    """``a`` with its first row repeated up to ``total`` rows (keys and init_params)."""
    pad = total - a.shape[0]
    if not pad:
        return a
    return jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])])


def plan(Xs, config: EMConfig, *, key, mask, weights, init_params, chunk_size, block_size, progress, n_jobs=None):
    """How `fit_batch` runs a batch: None for one compiled call, or the `Blocks` to run.

    Blocks are used when ``block_size`` is given, when ``progress`` is asked for, or when
    one block of the whole batch would not fit `memory_budget`. Input that this cannot
    read (a malformed batch, a bad chunk_size) also gives None: fit_batch's one-call
    path then raises its usual error.
    """
    check_block_args(block_size, progress)
    if progress:
        _tqdm()
    if not all(_validate._concrete(a) for a in jax.tree_util.tree_leaves((Xs, mask, weights))):
        if block_size is not None or progress:
            raise ValueError(
                "block_size and progress need concrete data; fit_batch is being traced (inside jit or vmap)."
            )
        return None
    src = _list_source(Xs, mask, weights) if isinstance(Xs, (list, tuple)) else _array_source(Xs, mask, weights)
    if src is None or (chunk_size is not None and (not _validate._is_int(chunk_size) or chunk_size < 1)):
        return None
    B, N, D = src.B, src.N, src.D
    dtype = _compute_dtype(src.dtype)
    restarts = 1 if init_params is not None else config.n_init
    if chunk_size is None:
        chunk_size = default_chunk_size(B, N, D, config, dtype.itemsize, restarts=restarts)
    chunk = int(min(chunk_size, B))
    per = dataset_bytes(N, D, config, dtype.itemsize, restarts)
    cpu = jax.default_backend() == "cpu"
    # Parts run at once (`gmmjax._threads`): each has a chunk's working set live, and on
    # a CPU the results are gathered on the host (one more copy of them).
    jobs = _threads.default_jobs(B, N, D, config, restarts, n_jobs)
    others = (jobs - 1) * chunk * per.engine
    need = B * (2 * (per.input + per.result) + cpu * per.result) + min(chunk, B) * per.engine + others
    if block_size is None and not progress and need <= SMALL_CALL_BYTES:
        return None
    budget = memory_budget()
    check_one_dataset_fits(N, D, config, dtype.itemsize, restarts, budget)
    if cpu:  # the gathered results take host RAM too (twice with parts)
        budget -= B * per.result * (2 if jobs > 1 else 1)
    block, fit_chunk = block_size_for(budget, chunk, per, jobs)
    if block_size is None and not progress and block >= B:
        return None
    if block_size is not None:
        block = int(block_size)
        fit_chunk = chunk
    elif progress:
        block = min(block, _round_up(-(-B // PROGRESS_UPDATES), fit_chunk))
    block = min(block, B)
    fit_chunk = min(fit_chunk, block)

    # Blocks it is: check the rest now, before hours of work, as one call would.
    _validate.warn_if_downcast(src.dtype, dtype)  # 64-bit mode off: said once, as one call would
    keys = _validate.key_for(key, init_params, batch=B)
    init = _validate.init_params(init_params, config, D, dtype, batch=B)
    if weights is not None:  # on the host, a block at a time; _validate words the error
        _validate.check_host_weights(src.weights(), dtype)
    total = _round_up(B, block)
    return Blocks(
        source=src,
        dtype=dtype,
        keys=_pad_rows(keys, total),
        init=jax.tree_util.tree_map(lambda a: _pad_rows(a, total), init),
        config=config,
        block=block,
        chunk=fit_chunk,
        restarts=restarts,
        jobs=_threads.default_jobs(block, N, D, config, restarts, n_jobs),
        progress=bool(progress),
    )
