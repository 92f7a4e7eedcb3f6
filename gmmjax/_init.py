"""Initial parameters for ONE dataset and ONE restart.

Every method draws its random numbers so that they do not depend on how much
zero-weight padding follows the valid points: indices are drawn by inverting the
cumulative weight (a padded tail adds nothing to it), and per-point random numbers
are a hash of the point's rank among the valid points. This is what makes
`fit_batch` padding (and mask) invariant.

Shapes: X (N, D) finite, w (N,) non-negative, K = n_components.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from gmmjax._em import UNROLL_K, highest_precision, m_step
from gmmjax._types import EMConfig, GMMParams

#: Lloyd iterations of init="kmeans" stop when no label changes, or after this many.
KMEANS_MAX_ITER = 100


#: Up to this many features `_sq_dist` sums squared differences feature by feature
#: (elementwise work that fuses, and exact); above, the matrix-product expansion.
#: Under vmap the expansion is one tiny batched matrix product per lane, which XLA's
#: CPU backend runs one lane at a time.
ELEMENTWISE_MAX_D = 8


def _sq_dist(X, centers):
    """(C, N) squared Euclidean distances (center-major, as the engine's (K, N) arrays:
    sums over the points run along contiguous memory)."""
    D = X.shape[1]
    if D <= ELEMENTWISE_MAX_D:
        diff = [X[None, :, d] - centers[:, d, None] for d in range(D)]
        return sum((a * a for a in diff[1:]), diff[0] * diff[0])
    d = (
        jnp.sum(X * X, axis=1)[None, :]
        - 2.0 * centers @ X.T
        + jnp.sum(centers * centers, axis=1)[:, None]
    )
    return jnp.maximum(d, 0.0)


#: `_cumsum` sums blocks of this many points as products with a triangular matrix
#: of ones: under vmap one large matrix product for all lanes.
CDF_BLOCK = 32


def _cumsum(a):
    """Running sums of a (N,): within blocks of CDF_BLOCK by a matrix product, then
    the blocks' offsets, the running sums of the blocks' totals (the same way, for
    more blocks than one block holds). XLA's scan for jnp.cumsum took most of
    k-means++'s time on a CPU."""
    N, b = a.shape[0], CDF_BLOCK
    nb = -(-N // b)
    blocks = jnp.pad(a, (0, nb * b - N)).reshape(nb, b)
    # within[i, j] = sum_{l <= j} blocks[i, l]; "highest": exact sums of counts (no TF32)
    within = jnp.matmul(blocks, jnp.triu(jnp.ones((b, b), a.dtype)), precision="highest")
    ends = within[:, -1]
    offsets = _cumsum(ends) - ends if nb > 1 else jnp.zeros_like(ends)  # sum of the blocks before
    return (within + offsets[:, None]).reshape(-1)[:N]


def _draw_index(u, mass, last_valid):
    """Index n with probability mass[n] / sum(mass), for u ~ U[0, 1) of shape (S,).

    The first n with cdf[n] > u * total, found by counting (a handful of draws
    against N points: cheaper to compile than a binary search, and no slower).
    """
    cdf = _cumsum(mass)
    idx = jnp.sum(cdf[None, :] <= (u * cdf[-1])[:, None], axis=1)
    return jnp.minimum(idx, last_valid)


def _point_uniforms(key, rank, K, dtype):
    """(N, K) U[0, 1) numbers; entry (n, k) depends on the key, rank[n] and k only.

    ``rank`` is each point's index among the valid points, so masked points anywhere
    (not only trailing padding) leave the others' numbers unchanged. A murmur3
    finaliser seeded from the key: unlike ``vmap(fold_in)`` it costs a few integer
    operations to compile and run.
    """
    seed = jax.random.bits(key, (2,), jnp.uint32)
    h = rank.astype(jnp.uint32)[:, None] * jnp.uint32(K) + jnp.arange(K, dtype=jnp.uint32)[None, :]
    h = (h ^ seed[0]) * jnp.uint32(0x9E3779B1) + seed[1]
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h = (h ^ (h >> shift)) * jnp.uint32(mult)
    h = h ^ (h >> 16)
    return (h >> 8).astype(dtype) * jnp.asarray(2.0**-24, dtype)


def _last_valid(w):
    n = jnp.arange(w.shape[0])
    return jnp.max(jnp.where(w > 0, n, 0))


def kmeans_plusplus(key, X, w, K, active):
    """(K, D) greedy k-means++ seeds, weighted by w (scikit-learn's algorithm).

    Each new seed is the best of ``2 + floor(log K)`` candidates drawn with probability
    proportional to w times the squared distance to the nearest seed so far.
    Inactive slots (``active`` False) copy seed 0 and do not count as seeds.
    """
    n_trials = 2 + int(math.log(K))
    last = _last_valid(w)
    u = jax.random.uniform(key, (K, n_trials), X.dtype)  # every draw, up front
    first = _draw_index(u[0, :1], w, last)[0]
    centers = jnp.zeros((K, X.shape[1]), X.dtype).at[0].set(X[first])
    closest = _sq_dist(X, X[first][None])[0]  # (N,)

    def add_seed(c, carry):
        centers, closest = carry
        mass = w * closest
        # All valid points already sit on a seed (e.g. constant data): draw by weight.
        mass = jnp.where(jnp.sum(mass) > 0, mass, w)
        cand = _draw_index(u[c], mass, last)  # (n_trials,)
        d = jnp.minimum(closest[None, :], _sq_dist(X, X[cand]))  # (n_trials, N)
        best = jnp.argmin(d @ w)
        on = active[c]
        return centers.at[c].set(jnp.where(on, X[cand[best]], centers[0])), jnp.where(on, d[best], closest)

    centers, _ = jax.lax.fori_loop(1, K, add_seed, (centers, closest))
    return centers


def random_from_data(key, X, w, K):
    """(K, D) seeds: K distinct points with positive weight, drawn uniformly."""
    last = _last_valid(w)
    u = jax.random.uniform(key, (K, 1), X.dtype)
    avail = (w > 0).astype(X.dtype)

    def pick(c, carry):
        centers, avail = carry
        mass = jnp.where(jnp.sum(avail) > 0, avail, (w > 0).astype(X.dtype))
        i = _draw_index(u[c], mass, last)[0]
        return centers.at[c].set(X[i]), avail.at[i].set(0.0)

    centers = jnp.zeros((K, X.shape[1]), X.dtype)
    centers, _ = jax.lax.fori_loop(0, K, pick, (centers, avail))
    return centers


def lloyd(X, w, centers, active):
    """Weighted Lloyd iterations from ``centers`` until no label changes.

    A cluster that loses all its points keeps its previous center.
    """
    K = centers.shape[0]

    def labels_of(c):
        return _nearest(X, c, active)

    def cond(s):
        i, _, _, changed = s
        return changed & (i < KMEANS_MAX_ITER)

    def body(s):
        i, c, labels, _ = s
        onehot = jax.nn.one_hot(labels, K, dtype=X.dtype) * w[:, None]
        count = jnp.sum(onehot, axis=0)
        new_c = jnp.where(
            count[:, None] > 0, (onehot.T @ X) / jnp.maximum(count, 1e-30)[:, None], c
        )
        new_labels = labels_of(new_c)
        return i + 1, new_c, new_labels, jnp.any((new_labels != labels) & (w > 0))

    labels = labels_of(centers)
    _, centers, _, _ = jax.lax.while_loop(cond, body, (0, centers, labels, True))
    return centers


def _nearest(X, centers, active):
    """(N,) index of the nearest active center."""
    d = jnp.where(active[:, None], _sq_dist(X, centers), jnp.inf)  # (K, N)
    if d.shape[0] > UNROLL_K:
        return jnp.argmin(d, axis=0).astype(jnp.int32)
    best, idx = d[0], jnp.zeros(d.shape[1], jnp.int32)
    for k in range(1, d.shape[0]):  # written out over the rows, as `logsumexp_rows`
        closer = (d[k] < best) | (jnp.isnan(d[k]) & ~jnp.isnan(best))  # as argmin: first min, NaN first
        best, idx = jnp.where(closer, d[k], best), jnp.where(closer, k, idx)
    return idx


@highest_precision
def init_params(key, X, w, config: EMConfig, active, XX=None) -> GMMParams:
    """Initial GMMParams from ``config.init``.

    Seed-based methods assign every point to its nearest seed and take one M-step
    (scikit-learn puts only the seeds themselves in the first M-step, which starts
    every component at width reg_covar); "random" takes the M-step of uniform random
    responsibilities, as scikit-learn. Slots with ``active`` (K,) False get no data
    and weight 0. ``XX``: the `moments` of X, for an M-step on the moments path.
    """
    K = config.n_components
    if config.init == "random":
        rank = jnp.cumsum(w > 0) - 1
        u = (_point_uniforms(key, rank, K, X.dtype) + 1e-3) * active[None, :]
        resp = (u / jnp.sum(u, axis=1, keepdims=True)).T  # (K, N)
    else:
        if config.init == "random_from_data":
            centers = random_from_data(key, X, w, K)
        else:
            centers = kmeans_plusplus(key, X, w, K, active)
            if config.init == "kmeans":
                centers = lloyd(X, w, centers, active)
        resp = jax.nn.one_hot(_nearest(X, centers, active), K, dtype=X.dtype, axis=0)  # (K, N)
    return m_step(X, w, resp, config.covariance_type, config.reg_covar, active, XX)
