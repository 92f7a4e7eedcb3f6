"""Ragged lists of datasets: length buckets, so that short datasets are not padded to the
longest one.

`fit_batch` pads a list of datasets to its longest dataset, and padded points cost as
much as real ones. With lengths from 50 to 5,000, most of the work is padding. Here the
datasets' lengths are rounded up on a fixed grid (eight steps per doubling, multiples
of 8), buckets are ranges of grid lengths, and each bucket is one `fit_batch` call,
padded to its longest dataset. The results come back in the caller's
order, and dataset i keeps the key ``jax.random.split(key, B)[i]``: each fit is the one
of the single padded call, up to rounding.

Each bucket is a compilation of its own: the buckets are chosen to minimise the padded
work plus one compilation's worth of work per bucket (`MIN_SAVING`), so that a batch is
split only where that pays in this very call; nothing is bucketed where padding is
under `MAX_WASTE` of the work.

    grid_length   the bucket length of a dataset of n points
    plan          the buckets of a batch, or None (one call)
    fit_buckets   fit_batch over the buckets, results in the caller's order
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import numpy as np

from gmmjax._types import EMConfig, FitResult

#: Bucket only where padding to the longest dataset would be more than this share of
#: the points computed.
MAX_WASTE = 0.10

#: Work a separate bucket must save, in restarts x points x components x features, by
#: JAX backend (elsewhere `DEFAULT_MIN_SAVING`): about one compilation's worth. On the
#: 2-core CPU a compilation of the engine takes ~2.5 s and W1-cpu computes about
#: 2000 x 1000 x 3 = 6e6 such units in ~0.1 s (benchmarks/RESULTS.md); on an H200 W1
#: computed 3e8 in 45 ms, against ~2 s of compilation.
MIN_SAVING = {"cpu": 1.5e8}
DEFAULT_MIN_SAVING = 1.3e10

#: At most this many buckets with ``fit_batch(..., length_buckets=True)``.
MAX_BUCKETS = 8


def grid_length(n: int) -> int:
    """The smallest grid length >= n: a multiple of 2**e / 8 for 2**e <= n < 2**(e + 1),
    and of 8 (so less than max(8, n / 8) above n, and few distinct lengths)."""
    n = max(int(n), 1)
    step = max(8, (1 << (n.bit_length() - 1)) // 8)
    return -(-n // step) * step


def plan(lengths, restarts: int, config: EMConfig, D: int, backend: Optional[str] = None, max_buckets=None):
    """Buckets for datasets of these lengths: a list of (indices, padded length), shortest
    first, or None where one padded call is best.

    The buckets are contiguous ranges of grid lengths, chosen by dynamic programming to
    minimise the padded work (restarts x points x components x features) plus, for
    each bucket, one compilation's worth of work (`MIN_SAVING`). With ``max_buckets``
    the compilations count nothing (a batch fitted again and again), and at most that
    many buckets minimise the padded work alone.
    """
    lengths = np.asarray(lengths, np.int64)
    if lengths.size < 2:
        return None
    longest = int(max(lengths.max(), 1))
    if 1.0 - lengths.sum() / (lengths.size * longest) <= MAX_WASTE:
        return None
    penalty = 0.0
    if max_buckets is None:
        penalty = MIN_SAVING.get(backend or jax.default_backend(), DEFAULT_MIN_SAVING)
    unit = float(restarts * config.n_components * D)  # work per padded point of a dataset
    grid = np.minimum([grid_length(n) for n in lengths], longest)
    sizes = np.unique(grid)  # ascending; the last is the longest dataset
    counts = np.array([np.sum(grid == g) for g in sizes], np.float64)
    before = np.concatenate([[0.0], np.cumsum(counts)])  # datasets below each grid length
    n = sizes.size
    most = n if max_buckets is None else max(1, min(int(max_buckets), n))
    # best[m, j]: the cheapest m buckets covering grid lengths 0..j, the last ending at j.
    best = np.full((most + 1, n), np.inf)
    prev = np.zeros((most + 1, n), np.int64)
    for j in range(n):
        best[1, j] = before[j + 1] * sizes[j] * unit + penalty
    for m in range(2, most + 1):
        for j in range(m - 1, n):
            costs = [best[m - 1, i - 1] + (before[j + 1] - before[i]) * sizes[j] * unit + penalty for i in range(m - 1, j + 1)]
            k = int(np.argmin(costs))
            best[m, j], prev[m, j] = costs[k], k + m - 1
    m = int(np.argmin(best[1:, n - 1])) + 1
    if m == 1:
        return None
    bounds, j = [], n - 1
    while m > 1:
        i = prev[m, j]
        bounds.append((i, j))
        j, m = i - 1, m - 1
    bounds.append((0, j))
    out = []
    for i, j in reversed(bounds):
        members = np.flatnonzero((grid >= sizes[i]) & (grid <= sizes[j]))
        out.append((members, int(sizes[j])))
    return out


def fit_buckets(buckets, arrays, weights, keys, init, fit: Callable[..., FitResult]) -> FitResult:
    """``fit(datasets, weights, keys, init)`` for each bucket: its datasets (a list, which
    `fit_batch` pads to the bucket's longest, block by block where blocks are used), their
    weights (or None) and their rows of ``keys`` (B,) and ``init`` (leaves (B, ...) or
    None); the results gathered in the datasets' own order (leaves (B, ...)), on the
    host while the next bucket runs."""
    parts, order = [], []
    for idx, _ in buckets:
        sub_weights = None if weights is None else [weights[i] for i in idx]
        sub_init = None if init is None else jax.tree_util.tree_map(lambda a: a[idx], init)
        parts.append(jax.device_get(fit([arrays[i] for i in idx], sub_weights, keys[idx], sub_init)))
        order.append(idx)
    back = np.argsort(np.concatenate(order))  # row of each dataset in the concatenation
    return jax.tree_util.tree_map(lambda *leaves: jax.device_put(np.concatenate(leaves)[back]), *parts)  # no program compiled
