"""The EM steps for ONE dataset and ONE restart: no vmap, no jit, no loop here.

Shapes: X (N, D) with invalid rows already replaced by zeros, w (N,) non-negative
sample weights (0 for masked or padded points), K = n_components. Per-point,
per-component arrays (log-probabilities, responsibilities) are (K, N): see
`gmmjax._covariance`.
All probabilities stay in log space; the mixing weights enter the E-step.
Matrix products run at "highest" precision (no TF32 shortcuts on GPUs: with TF32 a
mean of values near 1000 is off by ~1 and every covariance is garbage): each function
that writes one is wrapped in `highest_precision`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from gmmjax import _covariance
from gmmjax._covariance import COVARIANCE, estimate, log_gaussian, point_sum
from gmmjax._types import GMMParams

def highest_precision(f):
    """Traces f with matrix products at full float32 precision (no TF32 on GPUs).

    Applied to each function that writes a matrix product (here, in `gmmjax._init`
    and `gmmjax._fit._prepare`), so no caller has to remember it.
    """

    @functools.wraps(f)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return f(*args, **kwargs)

    return wrapped


@highest_precision
def weighted_log_prob(X, params: GMMParams, covariance_type: str, XX=None):
    """(K, N) log pi_k + log N(x_n | mu_k, Sigma_k); XX: optional `moments` of X."""
    log_gauss = log_gaussian(covariance_type, X, params.means, params.covariances, XX)
    return log_gauss + jnp.log(params.weights)[:, None]


#: Up to this many components the log-sum-exp over components is written out row by
#: row (elementwise work on (N,) rows); XLA's CPU reduction over the leading axis of a
#: (K, N) array is 4-30x slower (K=32, N=1e5: 88 ms against 2.5 ms).
UNROLL_K = 64


def _exp_rows(a):
    """(m, [exp(a[k] - m)], their sum) with m the row-wise maximum (0 where not finite)."""
    K = a.shape[0]
    m = a[0]
    for k in range(1, K):
        m = jnp.maximum(m, a[k])
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = [jnp.exp(a[k] - m) for k in range(K)]
    return m, e, sum(e[1:], e[0])


def logsumexp_rows(a):
    """(N,) log sum_k exp(a[k]) of a (K, N) array, like jax.scipy.special.logsumexp."""
    if a.shape[0] > UNROLL_K:
        return logsumexp(a, axis=0)
    m, _, s = _exp_rows(a)
    return jnp.log(s) + m


def _point_sum(X, a):
    """Sums over the points of a (..., N): `point_sum` on the elementwise paths for few
    features (X (N, D), D <= `_covariance.SMALL_D`), where it ran faster; XLA's reduction elsewhere,
    where it fuses with the matrix products (W3-cpu was 15% slower with point_sum)."""
    return point_sum(a) if X.shape[1] <= _covariance.SMALL_D else jnp.sum(a, axis=-1)


def e_step(X, w, params: GMMParams, covariance_type: str, XX=None):
    """Returns (mean per-sample log-likelihood, (K, N) log responsibilities).

    The mean is weighted by ``w`` (sum w_n log p(x_n) / sum w_n); points with w = 0
    do not count. With no positive weight at all the mean is -inf.
    """
    wlp = weighted_log_prob(X, params, covariance_type, XX)
    log_norm = logsumexp_rows(wlp)  # (N,)
    return _mean_ll(X, w, log_norm), wlp - log_norm[None, :]


def _mean_ll(X, w, log_norm):
    """sum w_n log p(x_n) / sum w_n over the points with w > 0 (-inf without any)."""
    total = jnp.sum(w)
    ll = _point_sum(X, jnp.where(w > 0, w * log_norm, 0.0)) / jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, ll, -jnp.inf)


def e_step_resp(X, w, params: GMMParams, covariance_type: str, XX=None):
    """As `e_step`, with the (K, N) responsibilities themselves: exp(a_k - m) / sum_j
    exp(a_j - m), the exponentials shared with the log-sum-exp (K per point, not 2K)."""
    wlp = weighted_log_prob(X, params, covariance_type, XX)
    if wlp.shape[0] > UNROLL_K:
        log_norm = logsumexp(wlp, axis=0)
        return _mean_ll(X, w, log_norm), jnp.exp(wlp - log_norm[None, :])
    m, e, s = _exp_rows(wlp)
    # s >= 1 wherever the largest term is finite; s = 0 only where every density
    # underflowed (then the log-likelihood is -inf if the point counts). There the
    # responsibilities are 0 (0 * 1/tiny), not 0 * inf = NaN, so that points of weight 0
    # (masked, padding) never reach the M-step as NaN. (A max, not a select: the select
    # cost 5-10% of a W1-cpu EM step, the max nothing measurable.)
    inv = 1.0 / jnp.maximum(s, jnp.finfo(s.dtype).tiny)
    return _mean_ll(X, w, jnp.log(s) + m), jnp.stack(e) * inv[None, :]


@highest_precision
def m_step(X, w, resp, covariance_type: str, reg_covar: float, active, XX=None) -> GMMParams:
    """Maximum-likelihood parameters given (K, N) responsibilities, as scikit-learn.

    nk gets 10 * eps added (scikit-learn's guard against empty components), means
    are weighted averages, covariances come from centred data plus reg_covar.
    ``active`` (K,) bool switches component slots off (weight exactly 0, so they get
    no responsibility in the next E-step, and a unit covariance): model selection fits
    every K in one call.
    ``XX``: the `moments` of X, to estimate the covariances from them.
    """
    wr = resp * w[None, :]  # (K, N)
    eps = jnp.finfo(X.dtype).eps
    nk = _point_sum(X, wr) + 10 * eps  # (K,)
    if XX is not None and covariance_type in _covariance.WITH_X:  # one product for all sums
        sums = _covariance.moment_sums(wr, XX)
        means = sums[:, -X.shape[1] :] / nk[:, None]
        cov = _covariance.estimate_from_sums(covariance_type, sums, nk, means, reg_covar)
    else:
        if X.shape[1] <= _covariance.SMALL_D:  # a few features: one sum per feature, as nk
            means = jnp.stack([point_sum(wr * X[:, d]) for d in range(X.shape[1])], axis=-1) / nk[:, None]
        else:
            means = (wr @ X) / nk[:, None]
        cov = estimate(covariance_type, X, wr, nk, means, reg_covar, XX)
    if covariance_type != "tied":
        # A switched-off slot has no data: its covariance would be reg_covar * I, which
        # is 0 with reg_covar=0, and its log-density NaN (inf - inf) in every E-step.
        unit = COVARIANCE[covariance_type].identity(*means.shape, cov.dtype)
        cov = jnp.where(active.reshape((-1,) + (1,) * (cov.ndim - 1)), cov, unit)
    mass = jnp.where(active, nk, 0.0)
    return GMMParams(weights=mass / jnp.sum(mass), means=means, covariances=cov)


def is_finite(params: GMMParams):
    """() bool: every parameter is finite."""
    leaves = jax.tree_util.tree_leaves(params)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))


def is_degenerate(params: GMMParams, covariance_type: str, reg_covar: float, active):
    """() bool: some component's smallest covariance eigenvalue is held up by reg_covar.

    A component counts as collapsed when the data contribute no more than reg_covar
    (plus rounding) to its smallest eigenvalue: constant data, a component sitting on
    one point or on a line, an empty component. Three floors, each judged on its own:
    - reg_covar, absolute: a variance (eigenvalue) of at most 2 reg_covar;
    - rounding, scale-free: full and tied on the correlation matrix (on a line its
      smallest eigenvalue is ~eps times its largest), diag feature by feature, so that
      features in different units (scales 1 and 1000 in float32 once made every fit
      DEGENERATE) are no collapse; spherical against its own variance;
    - the mean, feature by feature (``params`` in the centred frame of
      `gmmjax._fit._prepare`): the mean of a component on one point is x n / (n + 10
      eps) (the M-step's guard), so with reg_covar=0 a variance of ~(10 eps |mu| / n)^2
      is all that is left of it (it once passed as CONVERGED). A narrow real cluster
      far from the centre (spread 0.0013 at 1000 in float32) is no collapse.
    """
    cov = params.covariances
    eps = jnp.finfo(cov.dtype).eps
    if covariance_type == "diag":  # (K, D): independent features
        floor = jnp.maximum(2 * reg_covar, 256 * eps * eps * params.means * params.means)
        collapsed = jnp.any(cov <= floor, axis=-1)
    elif covariance_type == "spherical":  # (K,): one eigenvalue per component
        mu2 = jnp.max(params.means * params.means, axis=-1)  # (K,)
        collapsed = cov <= jnp.maximum(2 * reg_covar + 16 * eps * cov, 256 * eps * eps * mu2)
    else:  # full (K, D, D), tied (D, D)
        var = jnp.diagonal(cov, axis1=-2, axis2=-1)
        mu2 = params.means * params.means  # (K, D)
        if covariance_type == "tied":
            mu2 = jnp.max(jnp.where(active[:, None], mu2, 0.0), axis=0)
        sd = jnp.sqrt(var)
        both = jnp.stack([cov, cov / (sd[..., :, None] * sd[..., None, :])])  # one eigenvalue call
        eig, corr = COVARIANCE[covariance_type].eigenvalues(both)
        collapsed = (
            (jnp.min(eig, axis=-1) <= 2 * reg_covar)
            | (jnp.min(corr, axis=-1) <= 16 * eps * jnp.max(corr, axis=-1))
            | jnp.any(var <= 256 * eps * eps * mu2, axis=-1)
        )
    if covariance_type != "tied":
        collapsed = collapsed & active
    return jnp.any(collapsed)
