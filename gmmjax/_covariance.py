"""Everything that depends on the covariance type, for ONE dataset and ONE restart.

`log_gaussian` and `estimate` are the entry points; they pick the formulation: the
moments path (`moments`), elementwise paths for D = 1 and for full and tied
covariances with few features, or the per-type functions below.
Each covariance type ("full", "diag", "spherical", "tied") provides:

- ``log_gaussian(X, means, covariances)``: (K, N) log N(x_n | mu_k, Sigma_k);
- ``estimate(X, wr, nk, means, reg_covar)``: the M-step covariances, computed from
  centred data (never E[x^2] - mu^2, which loses all precision in float32);
- ``eigenvalues(covariances)``: eigenvalues of every covariance, to detect collapse;
- ``identity(K, D, dtype)``: unit covariances (the finite fallback for unfit data);
- ``shape(K, D)`` and ``n_parameters(K, D)`` (free covariance parameters).

Shapes: X (N, D), wr (K, N) responsibilities times sample weights, nk (K,),
means (K, D); covariances full (K, D, D), diag (K, D), spherical (K,), tied (D, D).
Per-point, per-component arrays are component-major, (K, N): sums over the few
components are then elementwise work between rows, and sums over the points run
along contiguous memory (3-4x faster than (N, K) for the log-sum-exp on a CPU).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular


def _log_2pi_term(D, dtype):
    return jnp.asarray(D * math.log(2 * math.pi), dtype)


#: Up to this many features the precision Cholesky factor is written out entry by
#: entry (elementwise code that fuses with its neighbours) instead of calling the
#: batched LAPACK / cuSOLVER routines, which run one tiny matrix at a time.
SMALL_D = 4


def _small_precision_cholesky(cov):
    """`_precision_cholesky` written out for small D (Cholesky-Banachiewicz, then the
    inverse of the triangle by substitution), on the (..., D, D) entries."""
    D = cov.shape[-1]
    L = [[None] * D for _ in range(D)]
    for i in range(D):
        for j in range(i + 1):
            s = cov[..., i, j] - sum((L[i][k] * L[j][k] for k in range(j)), jnp.zeros_like(cov[..., 0, 0]))
            L[i][j] = jnp.sqrt(s) if i == j else s / L[j][j]
    M = [[None] * D for _ in range(D)]  # M = L^-1, lower triangular
    for i in range(D):
        M[i][i] = 1.0 / L[i][i]
        for j in range(i):
            s = sum((L[i][k] * M[k][j] for k in range(j, i)), jnp.zeros_like(cov[..., 0, 0]))
            M[i][j] = -s * M[i][i]
    zero = jnp.zeros_like(cov[..., 0, 0])
    # P = M^T: row i holds M[j][i] for j >= i.
    return jnp.stack([jnp.stack([M[j][i] if j >= i else zero for j in range(D)], -1) for i in range(D)], -2)


#: Up to this many features the precision Cholesky is written out on a CPU
#: (`_vector_precision_cholesky`); above, and off CPU (cuSOLVER on GPUs, as measured
#: there), LAPACK's. Batched LAPACK kernels on a CPU block a pool thread while they
#: wait for their own tasks: two at once (the E-step's and the precision guard's
#: triangular solves of a D=16, K=32 fit with restarts) hung the 2-thread pool for
#: good. Written out, XLA runs the arithmetic over all matrices of a batch at once.
#: Measured on the 2-core CPU (A/B, benchmark runner, gmmjax only), LAPACK against
#: written out: W3-cpu (D=8) 144-163 against 148-156 ms; W4-cpu (D=16, K=32, one
#: dataset) 34-35 against 38-40 ms per EM iteration, a price paid for never hanging.
WRITTEN_OUT_MAX_D = 32


def _vector_precision_cholesky(cov):
    """`_precision_cholesky` for D <= WRITTEN_OUT_MAX_D: Cholesky-Banachiewicz column by
    column, then L^-1 by forward substitution row by row, each step elementwise on the
    (..., D, D) matrices of the whole batch (two fori_loops of D steps: unrolled, the
    steps took seconds to compile at D = 16)."""
    D = cov.shape[-1]
    n = jnp.arange(D)

    def column(j, L):
        # L[i, j] = (cov[i, j] - sum_k L[i, k] L[j, k]) / L[j, j]; columns k >= j are 0 so far.
        Lj = jax.lax.dynamic_index_in_dim(L, j, axis=-2, keepdims=True)  # (..., 1, D): row j
        s = jax.lax.dynamic_index_in_dim(cov, j, axis=-1, keepdims=False) - jnp.sum(L * Lj, axis=-1)  # (..., D)
        d = jnp.sqrt(jax.lax.dynamic_index_in_dim(s, j, axis=-1, keepdims=True))
        col = jnp.where(n > j, s / d, jnp.where(n == j, d, 0.0))
        return jax.lax.dynamic_update_index_in_dim(L, col[..., :, None], j, axis=-1)

    L = jax.lax.fori_loop(0, D, column, jnp.zeros_like(cov))

    def row(i, M):
        # M[i, :] = (e_i - sum_{k<i} L[i, k] M[k, :]) / L[i, i]; rows k >= i are 0 so far.
        Li = jax.lax.dynamic_index_in_dim(L, i, axis=-2, keepdims=False)  # (..., D): row i of L
        r = (n == i).astype(cov.dtype) - jnp.sum(Li[..., :, None] * M, axis=-2)
        r = r / jax.lax.dynamic_index_in_dim(Li, i, axis=-1, keepdims=True)
        return jax.lax.dynamic_update_index_in_dim(M, r[..., None, :], i, axis=-2)

    M = jax.lax.fori_loop(0, D, row, jnp.zeros_like(cov))
    return jnp.swapaxes(M, -1, -2)  # P = M^T, upper triangular


#: `point_sum` as a product with ones (read at trace time; False: XLA's reduction).
POINT_SUM_PRODUCTS = True


def point_sum(a):
    """Sums of a (..., N) array over its last (points) axis, as a product with a vector
    of ones: under vmap one matrix-vector product over every lane, which ran ~2x faster
    than XLA's CPU reduction over the minor axis (benchmarks/RESULTS.md)."""
    if not POINT_SUM_PRODUCTS:
        return jnp.sum(a, axis=-1)
    return jnp.matmul(a, jnp.ones(a.shape[-1], a.dtype), precision="highest")  # no TF32 on GPUs


def _precision_cholesky(cov):
    """P with P P^T = cov^{-1} and P upper triangular (scikit-learn's precisions_cholesky_),
    for one (D, D) covariance or a stack (..., D, D).

    A covariance that is not positive definite gives NaN, which the EM loop turns
    into Status.NUMERICAL_FAILURE.
    """
    if cov.shape[-1] <= SMALL_D:
        return _small_precision_cholesky(cov)
    if cov.shape[-1] <= WRITTEN_OUT_MAX_D:  # on a CPU only: GPUs keep their batched solvers
        return jax.lax.platform_dependent(cov, cpu=_vector_precision_cholesky, default=_lapack_precision_cholesky)
    return _lapack_precision_cholesky(cov)


def _lapack_precision_cholesky(cov):
    if cov.ndim > 2:
        return jax.vmap(_lapack_precision_cholesky)(cov)
    L = jnp.linalg.cholesky(cov)
    eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return jnp.swapaxes(solve_triangular(L, eye, lower=True), -1, -2)


# ---------------------------------------------------------------- full
def _log_gaussian_full(X, means, cov):
    P = _precision_cholesky(cov)  # (K, D, D)
    log_det = jnp.sum(jnp.log(jnp.diagonal(P, axis1=-2, axis2=-1)), axis=-1)  # (K,)
    diff = X[None, :, :] - means[:, None, :]  # (K, N, D)
    y = jnp.einsum("knd,kde->kne", diff, P)
    maha = jnp.sum(y * y, axis=-1)  # (K, N)
    return -0.5 * (_log_2pi_term(X.shape[1], X.dtype) + maha) + log_det[:, None]


def _estimate_full(X, wr, nk, means, reg_covar):
    diff = X[None, :, :] - means[:, None, :]  # (K, N, D)
    cov = jnp.einsum("kn,knd,kne->kde", wr, diff, diff) / nk[:, None, None]
    return cov + reg_covar * jnp.eye(X.shape[1], dtype=X.dtype)


# ---------------------------------------------------------------- tied
def _log_gaussian_tied(X, means, cov):
    P = _precision_cholesky(cov)  # (D, D)
    log_det = jnp.sum(jnp.log(jnp.diagonal(P)))
    y = (X[None, :, :] - means[:, None, :]) @ P  # (K, N, D)
    maha = jnp.sum(y * y, axis=-1)
    return -0.5 * (_log_2pi_term(X.shape[1], X.dtype) + maha) + log_det


def _estimate_tied(X, wr, nk, means, reg_covar):
    cov = _estimate_full(X, wr, nk, means, 0.0) * nk[:, None, None]
    cov = jnp.sum(cov, axis=0) / jnp.sum(nk)
    return cov + reg_covar * jnp.eye(X.shape[1], dtype=X.dtype)


# ---------------------------------------------------------------- diag
def _log_gaussian_diag(X, means, var):
    prec = 1.0 / var  # (K, D)
    log_det = -0.5 * jnp.sum(jnp.log(var), axis=-1)  # (K,)
    diff = X[None, :, :] - means[:, None, :]  # (K, N, D)
    maha = jnp.sum(diff * diff * prec[:, None, :], axis=-1)
    return -0.5 * (_log_2pi_term(X.shape[1], X.dtype) + maha) + log_det[:, None]


def _estimate_diag(X, wr, nk, means, reg_covar):
    diff = X[None, :, :] - means[:, None, :]
    return jnp.einsum("kn,knd->kd", wr, diff * diff) / nk[:, None] + reg_covar


# ---------------------------------------------------------------- spherical
def _log_gaussian_spherical(X, means, var):
    D = X.shape[1]
    log_det = -0.5 * D * jnp.log(var)  # (K,)
    diff = X[None, :, :] - means[:, None, :]
    maha = jnp.sum(diff * diff, axis=-1) / var[:, None]
    return -0.5 * (_log_2pi_term(D, X.dtype) + maha) + log_det[:, None]


def _estimate_spherical(X, wr, nk, means, reg_covar):
    return jnp.mean(_estimate_diag(X, wr, nk, means, reg_covar), axis=-1)


# ---------------------------------------------------------------- one feature
# With D = 1 every covariance type is one variance per component (tied: one shared),
# and the whole E- and M-step is elementwise work on (K, N) arrays: no tiny matrix
# products, Cholesky factorisations or (K, N, D) temporaries.
def _log_gaussian_1d(x, means, var):
    """x (N,), means (K,), var (K,) -> (K, N)."""
    diff = x[None, :] - means[:, None]
    log_norm = -0.5 * (math.log(2 * math.pi) + jnp.log(var))  # (K,)
    return log_norm[:, None] - 0.5 * diff * diff * (1.0 / var)[:, None]


def _estimate_var_1d(x, wr, nk, means):
    """(K,) weighted variances about each component's mean, from centred data."""
    diff = x[None, :] - means[:, None]
    return point_sum(wr * diff * diff) / nk


#: Use the elementwise path for D = 1 (read at trace time; False for the generic
#: path). On W1-cpu it took 275 ms against 1090 for the generic path.
ONE_D_PATH = True


def _one_d(X):
    return X.shape[1] == 1 and bool(ONE_D_PATH)


# ---------------------------------------------------------------- a few features
# Full and tied covariances with 2 <= D <= SMALL_D: the same elementwise style, one
# (K, N) plane per feature, with the triangular solve and the covariance entries
# written out (D (D + 1) / 2 of them). XLA runs the generic path's tiny batched
# matrix products of size D poorly.
def _small_d(X, covariance_type):
    return 2 <= X.shape[1] <= SMALL_D and covariance_type in ("full", "tied")


def _planes(X, means):
    """[(K, N) x_d - mu_kd for each feature d]."""
    return [X[None, :, d] - means[:, d, None] for d in range(X.shape[1])]


def _log_gaussian_small(covariance_type, X, means, cov):
    D = X.shape[1]
    P = _precision_cholesky(cov)  # (K, D, D) or (D, D), upper triangular
    if covariance_type == "tied":
        P = jnp.broadcast_to(P, (means.shape[0], D, D))
    log_det = jnp.sum(jnp.log(jnp.diagonal(P, axis1=-2, axis2=-1)), axis=-1)  # (K,)
    diff = _planes(X, means)
    maha = 0.0
    for e in range(D):
        y = sum(diff[d] * P[:, d, e, None] for d in range(e + 1))  # (K, N)
        maha = maha + y * y
    return -0.5 * (_log_2pi_term(D, X.dtype) + maha) + log_det[:, None]


def _estimate_small(covariance_type, X, wr, nk, means, reg_covar):
    D = X.shape[1]
    diff = _planes(X, means)
    wd = [wr * diff[d] for d in range(D)]
    idx = _packed_index(D)
    i, j = _triu(D)
    S = jnp.stack([point_sum(wd[a] * diff[b]) for a, b in zip(i, j)], axis=-1)  # (K, P)
    cov = S[:, idx]  # (K, D, D): sum_n wr (x - mu)(x - mu)^T
    if covariance_type == "tied":
        cov = jnp.sum(cov, axis=0) / jnp.sum(nk)
    else:
        cov = cov / nk[:, None, None]
    return cov + reg_covar * jnp.eye(D, dtype=X.dtype)


_TO_VAR_1D = {
    "full": lambda c, K: c[:, 0, 0],
    "tied": lambda c, K: jnp.broadcast_to(c[0, 0], (K,)),
    "diag": lambda c, K: c[:, 0],
    "spherical": lambda c, K: c,
}


def log_gaussian(covariance_type, X, means, cov, XX=None):
    """(K, N) log N(x_n | mu_k, Sigma_k) for X (N, D); with `moments` XX, from them."""
    if XX is not None:
        return _log_gaussian_moments(covariance_type, X, XX, means, cov)
    if _one_d(X):
        var = _TO_VAR_1D[covariance_type](cov, means.shape[0])
        return _log_gaussian_1d(X[:, 0], means[:, 0], var)
    if _small_d(X, covariance_type):
        return _log_gaussian_small(covariance_type, X, means, cov)
    return COVARIANCE[covariance_type].log_gaussian(X, means, cov)


def estimate(covariance_type, X, wr, nk, means, reg_covar, XX=None):
    """M-step covariances of ``covariance_type``'s shape, from centred data plus reg_covar
    (from the `moments` XX instead when given)."""
    if XX is not None:
        return _estimate_moments(covariance_type, XX, wr, nk, means, reg_covar)
    if _one_d(X):
        var = _estimate_var_1d(X[:, 0], wr, nk, means[:, 0])
        if covariance_type == "tied":
            return (jnp.sum(var * nk) / jnp.sum(nk) + reg_covar).reshape(1, 1)
        var = var + reg_covar
        return {"full": var[:, None, None], "diag": var[:, None], "spherical": var}[covariance_type]
    if _small_d(X, covariance_type):
        return _estimate_small(covariance_type, X, wr, nk, means, reg_covar)
    return COVARIANCE[covariance_type].estimate(X, wr, nk, means, reg_covar)


# ---------------------------------------------------------------- moments
# The "moments" formulation: the log-density and the M-step statistics as matrix
# products with per-point moments computed once per dataset, ``XX`` = x x^T packed to
# its upper triangle (full, tied: D(D+1)/2 numbers) or x * x (diag, spherical: D),
# followed by x itself (D): (N, width). No (K, N, D) temporary: on W4-cpu (N=1e5, D=16,
# K=32) the log-density took 15 ms instead of 214 and the covariances 19 ms instead of
# 486. With x in the same array, the E-step's quadratic and linear terms are one matrix
# product, and so are the M-step's sums for the means and covariances (W3-cpu's rounds
# of 5 lanes: 0.32 -> 0.21 ms of products per EM iteration, benchmarks/RESULTS.md).
#
# The price is precision: the centred sums become differences of raw moments. Their
# rounding grows with `moments_amplification` (how far a component sits from the
# data's centre, in its own widths).
# The EM loop tracks it, and a fit where eps * amplification ever exceeds
# `moments_max_error` is redone on the centred path (`gmmjax._fit`).
# scikit-learn's own tied, diag and spherical estimates are raw-moment formulas.

#: Use the moments formulation from this many features on, per covariance type, or
#: never (None). Read at trace time. See benchmarks/RESULTS.md for the measurements.
MOMENTS_MIN_D = {"full": 8, "tied": 8, "diag": 2, "spherical": 2}

#: A fit stays on the moments path while eps * amplification <= this bound, by dtype
#: (`moments_max_error`). eps * amplification bounds the log-density's rounding in nats
#: a point; a fit's parameters move by about that much (relative, along the component's
#: narrow directions), and its mean log-likelihood drops by ~0.2 (eps * amplification)^2
#: (measured in float32, 9 correlated features: amplification 1.8e4 / 1.8e5 / 1.8e6 lost
#: 8e-7 / 9e-5 / 9e-3 nats a point). float32 accepts 2^-8 (amplification up to 3.3e4;
#: the benchmarks' W3-cpu fits reach 3.9e3, W4-cpu 7.9e3); float64 keeps the centred
#: path's numbers (scikit-learn's) to ~1e-9 with 2^-34 (amplification up to 2.6e5).
MOMENTS_MAX_ERROR = {"float32": 2.0**-8, "float64": 2.0**-34}


def moments_max_error(dtype) -> float:
    return MOMENTS_MAX_ERROR.get(jnp.dtype(dtype).name, MOMENTS_MAX_ERROR["float32"])


def uses_moments(covariance_type, D):
    d = MOMENTS_MIN_D.get(covariance_type)
    return d is not None and D >= d


def _triu(D):
    return np.triu_indices(D)


def _packed_index(D):
    """(D, D) index into the packed upper triangle, symmetric."""
    i, j = _triu(D)
    idx = np.zeros((D, D), np.int32)
    idx[i, j] = idx[j, i] = np.arange(i.size)
    return idx


#: The moments of these types end with x itself (see above). Tied covariances share one
#: quadratic form: its E-step and M-step are products with one vector, which the extra
#: columns would only widen (W3-cpu tied: 75 ms without them, 78-80 ms with).
WITH_X = ("full", "diag", "spherical")


def moments_width(covariance_type, D):
    """Numbers per point in `moments`: the second moments, then x (`WITH_X`)."""
    second = D * (D + 1) // 2 if covariance_type in ("full", "tied") else D
    return second + (D if covariance_type in WITH_X else 0)


def moments(covariance_type, X):
    """Per-point moments of X (N, D), `moments_width` of them per point: packed x x^T
    (full, tied) or x * x (diag, spherical), then x (but for tied; see above)."""
    D = X.shape[1]
    if covariance_type in ("full", "tied"):
        # Row d of the upper triangle is x_d * x[d:]: static slices, in `_triu`'s order.
        # A gather X[:, i] * X[:, j] took twice as long for the few lanes of a CPU round
        # (W3-cpu 113 -> 103 ms, benchmarks/RESULTS.md).
        parts = [X[:, d : d + 1] * X[:, d:] for d in range(D)]
    else:
        parts = [X * X]
    return jnp.concatenate(parts + ([X] if covariance_type in WITH_X else []), axis=1)


def _pack(A):
    """(..., D, D) symmetric -> (..., P): the weights that dot a packed x x^T into x^T A x."""
    D = A.shape[-1]
    i, j = _triu(D)
    return A[..., i, j] * np.where(i == j, 1.0, 2.0).astype(A.dtype)


def _log_gaussian_moments(covariance_type, X, XX, means, cov):
    D = means.shape[1]
    if covariance_type in ("full", "tied"):
        P = _precision_cholesky(cov)
        prec = P @ jnp.swapaxes(P, -1, -2)  # (K, D, D) or (D, D)
        log_det = jnp.sum(jnp.log(jnp.diagonal(P, axis1=-2, axis2=-1)), axis=-1)
        prec_mu = jnp.einsum("kde,ke->kd" if covariance_type == "full" else "de,ke->kd", prec, means)
        quad = _pack(prec)  # (K, P) or (P,)
    else:
        var = cov if covariance_type == "diag" else jnp.broadcast_to(cov[:, None], means.shape)
        quad = 1.0 / var  # (K, D): the precisions
        log_det = -0.5 * jnp.sum(jnp.log(var), axis=-1)
        prec_mu = means * quad
    mu_term = jnp.sum(means * prec_mu, axis=-1)[:, None]
    if covariance_type not in WITH_X:  # tied: one quadratic form, (N,) not (K, N)
        maha = (XX @ quad)[None, :] - 2.0 * (X @ prec_mu.T).T + mu_term
    else:
        # (K, N): x^T Lambda x - 2 x^T Lambda mu as one product (XX @ W^T measured
        # faster than W @ XX^T), then mu^T Lambda mu.
        weights = jnp.concatenate([quad, -2.0 * prec_mu], axis=1)
        maha = (XX @ weights.T).T + mu_term
    return -0.5 * (_log_2pi_term(D, X.dtype) + maha) + jnp.reshape(log_det, (-1, 1))


def moment_sums(wr, XX):
    """(K, width) sums over the points of wr (K, N) times the `moments` XX (full, diag,
    spherical): the second-moment sums, then the sums of the means (wr @ X)."""
    return wr @ XX


def estimate_from_sums(covariance_type, sums, nk, means, reg_covar):
    """M-step covariances (full, diag, spherical) from the `moment_sums` plus reg_covar."""
    D = means.shape[1]
    S = sums[:, :-D]  # the second moments
    if covariance_type == "full":
        S = S[:, _packed_index(D)]  # (K, D, D)
        cov = S / nk[:, None, None] - means[:, :, None] * means[:, None, :]
        return cov + reg_covar * jnp.eye(D, dtype=means.dtype)
    var = S / nk[:, None] - means * means + reg_covar
    return var if covariance_type == "diag" else jnp.mean(var, axis=-1)


def _estimate_moments(covariance_type, XX, wr, nk, means, reg_covar):
    if covariance_type in WITH_X:
        return estimate_from_sums(covariance_type, moment_sums(wr, XX), nk, means, reg_covar)
    D = means.shape[1]  # tied
    S = (jnp.sum(wr, axis=0) @ XX)[_packed_index(D)]  # (D, D)
    cov = (S - jnp.einsum("k,kd,ke->de", nk, means, means)) / jnp.sum(nk)
    return cov + reg_covar * jnp.eye(D, dtype=means.dtype)


def moments_amplification(covariance_type, means, cov):
    """() how many times eps the moments path's rounding can reach, in nats of the
    log-density (the centred path's: a few eps).

    The raw moments of a component at mu hold mu mu^T beside Sigma, and the E-step's
    quadratic form holds x^T Lambda x beside (x - mu)^T Lambda (x - mu): the
    differences cancel up to eps |mu|^T |Lambda| |mu|, with Lambda = Sigma^-1 and
    |.| entrywise. Per component 1 + |mu|^T |Lambda| |mu|; the largest over the
    components. For a diagonal Sigma that is 1 + sum_d (mu_d / s_d)^2: one narrow,
    off-centre feature is enough to lose digits. The entrywise |Lambda| counts the
    loss along narrow directions of correlated features (correlation 0.9997 and
    clusters at +-15 once lost 3 nats a point in float32, which a measure relative to
    the centred path's own worst case, ~cond(Sigma), did not see).
    """
    if covariance_type in ("full", "tied"):
        P = _precision_cholesky(cov)
        prec = jnp.abs(P @ jnp.swapaxes(P, -1, -2))
        prec = jnp.broadcast_to(prec, (means.shape[0],) + prec.shape[-2:])
        mu = jnp.abs(means)
        amp = jnp.einsum("kd,kde,ke->k", mu, prec, mu)
    else:
        var = cov if covariance_type == "diag" else cov[:, None]
        amp = jnp.sum(means * means / var, axis=-1)
    amp = 1.0 + amp
    return jnp.max(jnp.where(jnp.isfinite(amp), amp, jnp.inf))


def eigvalsh(c):
    """Ascending eigenvalues of symmetric matrices c (..., D, D), as jnp.linalg.eigvalsh:
    written out for D <= 2, where a batched LAPACK call handles one tiny matrix at a
    time on a CPU; by Jacobi rotations on a CPU up to `WRITTEN_OUT_MAX_D` (LAPACK's
    batched eigh blocks pool threads: two fits at once in one process hung, see
    `_jacobi_eigvalsh`); LAPACK / cuSOLVER elsewhere."""
    D = c.shape[-1]
    if D == 1:
        return c[..., 0]
    if D == 2:
        a, b, d = c[..., 0, 0], 0.5 * (c[..., 0, 1] + c[..., 1, 0]), c[..., 1, 1]
        mid, half = 0.5 * a + 0.5 * d, 0.5 * a - 0.5 * d  # no overflow of a + d near the largest float
        r = jnp.hypot(half, b)  # scaled: no overflow or flush to zero of the squares
        # The eigenvalue of larger magnitude as mid +- r; the other as det / it, written
        # without a * d (overflow): mid - r cancelled for features in different units
        # (variances 1 and 1e8 in float32 gave a smallest eigenvalue of ~0, not 1).
        big = mid + jnp.where(mid < 0, -r, r)
        safe = jnp.where(big == 0, 1.0, big)
        other = jnp.where(big == 0, 0.0, a * (d / safe) - b * (b / safe))
        return jnp.stack([jnp.minimum(other, big), jnp.maximum(other, big)], axis=-1)
    if D <= WRITTEN_OUT_MAX_D:
        return jax.lax.platform_dependent(c, cpu=_jacobi_eigvalsh, default=jnp.linalg.eigvalsh)
    return jnp.linalg.eigvalsh(c)


#: `_jacobi_eigvalsh` runs at most this many sweeps (every off-diagonal pair rotated
#: once per sweep); it stops as soon as every matrix is diagonal to rounding, which
#: cyclic Jacobi reaches in a handful of sweeps (it converges quadratically).
JACOBI_MAX_SWEEPS = 20


def _round_robin(n: int) -> np.ndarray:
    """(n - 1, n) partner tables for even n: in round r index i is paired with
    table[r, i], every pair once over the rounds (the circle method)."""
    players = list(range(n))
    table = np.zeros((n - 1, n), np.int32)
    for r in range(n - 1):
        for k in range(n // 2):
            a, b = players[k], players[n - 1 - k]
            table[r, a], table[r, b] = b, a
        players = [players[0], players[-1]] + players[1:-1]
    return table


def _jacobi_eigvalsh(c):
    """`eigvalsh` by Jacobi rotations, elementwise over all (..., D, D) matrices of the
    batch at once: no LAPACK call on a CPU. jaxlib's batched LAPACK eigh blocks a thread
    of the CPU pool while it waits for its own tasks, so two fits running at once in one
    process (two Python threads) hung the 2-core machine in their collapse checks, for
    good.

    Each round rotates D/2 disjoint pairs at once (a round-robin order, D - 1 rounds a
    sweep), each rotation zeroing its pair's off-diagonal entry (Golub & Van Loan's
    symmetric Schur step); rotations on disjoint pairs commute, so a round is the same
    as rotating its pairs one after another. An odd D gets a zero row and column, which
    no rotation touches. The eigenvalues are the diagonal once the off-diagonal part is
    below rounding. NaN input gives NaN eigenvalues, as LAPACK's.
    """
    D = c.shape[-1]
    n = D + D % 2
    a0 = 0.5 * (c + jnp.swapaxes(c, -1, -2))
    # Scaled by a power of two (exact) to largest entries in [0.5, 1): the sums of squares
    # below neither overflow (float32 entries of 1e20) nor flush to zero (1e-20).
    big = jnp.max(jnp.abs(a0), axis=(-2, -1))
    _, e = jnp.frexp(jnp.where((big > 0) & jnp.isfinite(big), big, 1.0))
    a0 = a0 * jnp.ldexp(jnp.ones_like(big), -e)[..., None, None]
    if n != D:
        a0 = jnp.pad(a0, [(0, 0)] * (a0.ndim - 2) + [(0, 1), (0, 1)])
    partners = jnp.asarray(_round_robin(n))
    idx = jnp.arange(n)
    off_diag = ~np.eye(n, dtype=bool)
    eps = jnp.finfo(c.dtype).eps

    def rotate(r, a):
        pr = partners[r]  # (n,): index i is rotated with pr[i]
        p, q = jnp.minimum(idx, pr), jnp.maximum(idx, pr)  # each index's pair, p < q
        d = jnp.diagonal(a, axis1=-2, axis2=-1)
        # tau = (a_qq - a_pp) / (2 a_pq) from the upper triangle: the same bits for both
        # indices of a pair (a J^T A J is symmetric only up to rounding, and a pair whose
        # two halves disagree on the angle would not be a rotation)
        a_pq = a[..., p, q]
        tau = (d[..., q] - d[..., p]) / jnp.where(a_pq == 0, 1.0, 2.0 * a_pq)
        t = jnp.where(tau >= 0, 1.0, -1.0) / (jnp.abs(tau) + jnp.hypot(1.0, tau))
        t = jnp.where(a_pq == 0, 0.0, t)
        first = idx == p
        cs = 1.0 / jnp.sqrt(1.0 + t * t)
        sn = jnp.where(first, -1.0, 1.0) * t * cs  # column p: c a_p - s a_q; column q: c a_q + s a_p
        a = a * cs[..., None, :] + a[..., :, pr] * sn[..., None, :]  # A J
        return a * cs[..., :, None] + a[..., pr, :] * sn[..., :, None]  # J^T (A J)

    def off(a):
        return jnp.sum(jnp.where(off_diag, a * a, 0.0), axis=(-2, -1))

    def unfinished(state):
        # Until every matrix is diagonal to rounding, or no longer gets closer to it
        # (it stalls at about eps * |A|: in float32 7 sweeps in all at D = 8, 10 at D = 32).
        i, a, before = state
        now = off(a)
        going = (now > (eps * eps) * jnp.sum(a * a, axis=(-2, -1))) & (now < before)
        return (i < JACOBI_MAX_SWEEPS) & jnp.any(going)

    def sweep(state):
        i, a, _ = state
        return i + 1, jax.lax.fori_loop(0, n - 1, rotate, a), off(a)

    start = (jnp.asarray(0), a0, jnp.full(a0.shape[:-2], jnp.inf, a0.dtype))
    _, a, _ = jax.lax.while_loop(unfinished, sweep, start)
    return jnp.sort(jnp.diagonal(a, axis1=-2, axis2=-1)[..., :D], axis=-1) * jnp.ldexp(jnp.ones_like(big), e)[..., None]


class CovarianceType(NamedTuple):
    log_gaussian: Callable
    estimate: Callable
    eigenvalues: Callable
    identity: Callable
    shape: Callable
    n_parameters: Callable


COVARIANCE = {
    "full": CovarianceType(
        log_gaussian=_log_gaussian_full,
        estimate=_estimate_full,
        eigenvalues=eigvalsh,
        identity=lambda K, D, dt: jnp.broadcast_to(jnp.eye(D, dtype=dt), (K, D, D)),
        shape=lambda K, D: (K, D, D),
        n_parameters=lambda K, D: K * D * (D + 1) // 2,
    ),
    "tied": CovarianceType(
        log_gaussian=_log_gaussian_tied,
        estimate=_estimate_tied,
        eigenvalues=eigvalsh,
        identity=lambda K, D, dt: jnp.eye(D, dtype=dt),
        shape=lambda K, D: (D, D),
        n_parameters=lambda K, D: D * (D + 1) // 2,
    ),
    "diag": CovarianceType(
        log_gaussian=_log_gaussian_diag,
        estimate=_estimate_diag,
        eigenvalues=lambda c: c,
        identity=lambda K, D, dt: jnp.ones((K, D), dt),
        shape=lambda K, D: (K, D),
        n_parameters=lambda K, D: K * D,
    ),
    "spherical": CovarianceType(
        log_gaussian=_log_gaussian_spherical,
        estimate=_estimate_spherical,
        eigenvalues=lambda c: c,
        identity=lambda K, D, dt: jnp.ones((K,), dt),
        shape=lambda K, D: (K,),
        n_parameters=lambda K, D: K,
    ),
}
