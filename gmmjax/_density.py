"""Functions of fitted parameters: densities, responsibilities, labels, samples.

Each works on one mixture (weights (K,), X (N, D) or (N,)) or on a batch of them
(weights (B, K), X (B, N, D) or (B, N), or a list of B (N_i, D) arrays, as `fit_batch`
takes, which gives a list of B results): a leading batch axis on the parameters is
detected from ``weights.ndim`` and mapped with vmap.

Called outside jit, they check their input: parameters as `gmmjax._validate.params`,
and X must be finite (a ValueError, as scikit-learn's, rather than NaN or a label 0 for
a NaN point). Under jit the values cannot be checked: non-finite input gives NaN.
Batched parameters are checked per dataset: a dataset without a usable model (what
fit_batch gives a dataset it could not fit: weights all 0) gives NaN / label -1 and a
RuntimeWarning, and its points are not checked; the other datasets are answered as
usual. One mixture without a usable model raises. A point so far
from every component that every density underflows has log_prob -inf, NaN
responsibilities and label -1 (with a RuntimeWarning outside jit).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from gmmjax._compile import traced
from gmmjax._em import highest_precision, weighted_log_prob
from gmmjax._types import GMMParams
from gmmjax._validate import _is_int, _pad_list, as_mask, batched_params, check_covariance_type, check_finite_points
from gmmjax._validate import check_fits_dtype, check_real
from gmmjax._validate import is_batched, key_for, numeric_array
from gmmjax._validate import user_stacklevel
from gmmjax._validate import params as _validate_params


def _prepare(params, X, covariance_type, mask=None, results="Their results are NaN (labels -1)."):
    """(params, X, batched, mask, lengths): checked params, X as a JAX array of the
    params' dtype with a feature axis, and the optional mask (X.shape[:-1] bool). Masked
    points may hold anything (they become 0 here); an unmasked NaN or inf raises. For
    batched params X may be a list of B (N_i, D) arrays: padded here, and ``lengths``
    (else None) lets `_per_dataset` cut the results back to one array per dataset.
    Batched params without a usable model (`batched_params`, whose warning ends with
    ``results``) get stand-ins, and their datasets' points are all masked.
    The data path of the density functions here and of the criteria (`gmmjax._select`)."""
    batched = is_batched(params)
    # Batched params: shapes here, values per dataset once X is known to fit them (a call
    # that fails on X warns about nothing).
    params = _validate_params(params, covariance_type, values=not batched)
    lengths = None
    if batched and isinstance(X, (list, tuple)):
        if mask is not None:
            raise ValueError("mask is for a padded array; a list of datasets is masked for you.")
        X, mask, _ = _pad_list(X, None)
        lengths = mask.sum(axis=1).tolist()  # the mask of a list is a NumPy array, traced or not
    if not batched and isinstance(X, (list, tuple)) and any(np.ndim(x) == 2 for x in X):
        raise ValueError(
            "X is a list of datasets, but the params are one mixture's: pass batched params "
            "(weights of shape (B, K), one mixture per dataset), or one dataset."
        )
    X = X if isinstance(X, jax.Array) else numeric_array(X)
    want = 3 if batched else 2
    if batched and X.ndim == 2 and params.means.shape[-1] > 1:  # not (B, N) 1-D data: one dataset
        raise ValueError(
            f"X of shape {X.shape} is one dataset, but the params are batched (weights of shape "
            f"{params.weights.shape}): pass a (B, N, D) array or a list of B datasets, or one mixture's params."
        )
    if X.ndim == want - 1:
        X = X[..., None]
    if X.ndim != want:
        raise ValueError(
            f"X must have shape {'(B, N, D)' if batched else '(N, D)'} (or without D for 1-D data) "
            f"to match params with weights of shape {params.weights.shape}; got {X.shape}."
        )
    if X.shape[-1] != params.means.shape[-1]:
        raise ValueError(f"X has {X.shape[-1]} features but the means have {params.means.shape[-1]}.")
    if batched and X.shape[0] != params.weights.shape[0]:
        raise ValueError(f"X holds {X.shape[0]} datasets but the params {params.weights.shape[0]} (weights {params.weights.shape}).")
    check_real(X)
    if mask is not None:
        mask = as_mask(mask, X.shape[:-1])
    ok = None
    if batched:
        params, ok = batched_params(params, covariance_type, results=results)
    if ok is not None and not ok.all():  # datasets without a usable model: every point masked
        mask = (ok[:, None] if mask is None else mask & ok[:, None]) & np.ones(X.shape[:-1], bool)
    if X.dtype.kind in "fc":  # before the copy to the device: a NumPy check is cheap
        check_finite_points(X, mask)
        if not traced((X, mask)) and jnp.issubdtype(params.means.dtype, jnp.floating):
            check_fits_dtype(X, params.means.dtype, mask, advice="use float64 params (64-bit mode on), or scale the data")
        if mask is not None:
            X = (jnp if isinstance(X, jax.Array) or isinstance(mask, jax.Array) else np).where(mask[..., None], X, 0)
    # The parameters' dtype decides the precision; the data follow it (no warning:
    # float64 parameters need 64-bit mode, float32 ones compute in float32 by choice).
    X = jnp.asarray(X, params.means.dtype if jnp.issubdtype(params.means.dtype, jnp.floating) else None)
    return params, X, batched, mask, lengths


def _per_dataset(values, lengths):
    """values (B, N_max, ...) as they are, or for a list of datasets a list of B arrays
    (N_i, ...): NumPy arrays outside jit (a slice of a JAX array compiles a program
    per length)."""
    if lengths is None:
        return values
    values = values if traced(values) else np.asarray(values)
    return [values[i, :n] for i, n in enumerate(lengths)]


def _masked(values, mask, fill):
    """values (..., N[, K]) with ``fill`` where mask (..., N) is False (no mask: as is)."""
    if mask is None:
        return values
    return jnp.where(jnp.reshape(mask, mask.shape + (1,) * (values.ndim - mask.ndim)), values, fill)


@functools.partial(jax.jit, static_argnames=("covariance_type", "batched"))
def _log_resp_and_norm(params, X, covariance_type, batched):
    def one(p, x):
        wlp = weighted_log_prob(x, p, covariance_type).T  # (N, K), scikit-learn's layout
        # Computed once, in memory: XLA would otherwise compute wlp again inside each
        # kernel that reads it (the maximum, the subtraction), and the copies round
        # differently. Far from the data |wlp| is large (~1e7 at 1e3 standard deviations
        # in float32), a difference of one rounding step between the copies moved a
        # log-responsibility above 0, and probabilities summed to 2 or to inf.
        wlp = jax.lax.optimization_barrier(wlp)
        # log_softmax rather than scikit-learn's wlp - logsumexp(wlp) (equal up to
        # rounding): far from every component (wlp ~ -1e20 in float32) the logsumexp
        # absorbs its log K and every responsibility came out as 1.
        return jax.nn.log_softmax(wlp, axis=1), logsumexp(wlp, axis=1)

    return jax.vmap(one)(params, X) if batched else one(params, X)


def log_prob(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Per-sample log density of the mixture: (N,), or (B, N) for batched params (a
    list of B (N_i,) arrays for a list of datasets).

    Equals scikit-learn's ``score_samples``. ``mask``: optional bool of X's shape
    without the feature axis, False for points to leave out (padding: they may hold
    anything, NaN included); they get NaN.
    """
    check_covariance_type(covariance_type)
    params, X, batched, mask, lengths = _prepare(params, X, covariance_type, mask)
    return _per_dataset(_masked(_log_resp_and_norm(params, X, covariance_type, batched)[1], mask, jnp.nan), lengths)


def _log_resp(params, X, covariance_type, mask):
    """(log responsibilities, mask, lengths) for predict and predict_proba. A point so far from
    every component that every density underflows (log_prob -inf: in float32 beyond
    ~1e19 standard deviations, a sentinel value such as 1e30, say) has no
    responsibilities: NaN, with a RuntimeWarning outside jit."""
    params, X, batched, mask, lengths = _prepare(params, X, covariance_type, mask)
    log_resp = _log_resp_and_norm(params, X, covariance_type, batched)[0]
    if not traced((log_resp, mask)):
        lost = jnp.sum(jnp.isnan(log_resp[..., 0]) & (True if mask is None else mask))  # one number to the host
        if int(lost):
            warnings.warn(
                f"{int(lost)} point(s) lie so far from every component that every density underflows "
                f"in {X.dtype.name}: their responsibilities are NaN and their labels -1. Scale the data"
                + (", or fit in float64 (jax.config.update('jax_enable_x64', True); the estimators: dtype='float64')." if X.dtype != jnp.float64 else "."),
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
    return log_resp, mask, lengths


def predict_proba(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Responsibilities p(k | x_n): (N, K), or (B, N, K) for batched params (a list of
    (N_i, K) arrays for a list of datasets). NaN where ``mask``, as in `log_prob`, is
    False, and for a point too far from every component: see `_log_resp`."""
    check_covariance_type(covariance_type)
    log_resp, mask, lengths = _log_resp(params, X, covariance_type, mask)
    return _per_dataset(_masked(jnp.exp(log_resp), mask, jnp.nan), lengths)


def predict(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Most probable component of each sample: (N,), or (B, N) for batched params (a
    list of (N_i,) arrays for a list of datasets). -1 where ``mask``, as in `log_prob`,
    is False, and for a point too far from every component: see `_log_resp`."""
    check_covariance_type(covariance_type)
    log_resp, mask, lengths = _log_resp(params, X, covariance_type, mask)
    labels = jnp.where(jnp.isnan(log_resp[..., 0]), -1, jnp.argmax(log_resp, axis=-1))
    return _per_dataset(_masked(labels, mask, -1), lengths)


def _cov_factor(cov, covariance_type, K, D):
    """(K, D, D) matrices A_k with A_k A_k^T = Sigma_k."""
    if covariance_type == "full":
        return jnp.linalg.cholesky(cov)
    if covariance_type == "tied":
        return jnp.broadcast_to(jnp.linalg.cholesky(cov), (K, D, D))
    if covariance_type == "diag":
        return jax.vmap(jnp.diag)(jnp.sqrt(cov))
    return jnp.sqrt(cov)[:, None, None] * jnp.eye(D, dtype=cov.dtype)


@functools.partial(jax.jit, static_argnames=("n", "covariance_type"))
@highest_precision
def _sample_one(key, params, n, covariance_type):
    K, D = params.means.shape
    k_lab, k_z = jax.random.split(key)
    labels = jax.random.categorical(k_lab, jnp.log(params.weights), shape=(n,))
    z = jax.random.normal(k_z, (n, D), params.means.dtype)
    A = _cov_factor(params.covariances, covariance_type, K, D)
    return params.means[labels] + jnp.einsum("nde,ne->nd", A[labels], z), labels


def sample(key, params: GMMParams, n: int, *, covariance_type: str = "full"):
    """Draws n samples: returns (X (n, D), labels (n,)).

    For batched params (weights (B, K)) returns (B, n, D) and (B, n), dataset i using
    ``jax.random.split(key, B)[i]``; a dataset without usable params (see the module
    docstring) gives NaN samples and labels -1, with a RuntimeWarning.
    """
    if isinstance(key, GMMParams):
        raise ValueError("the key comes first: gmmjax.sample(key, params, n).")
    check_covariance_type(covariance_type)
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}.")
    n = int(n)
    if key is None:
        raise ValueError("pass a random key, e.g. gmmjax.sample(jax.random.key(0), params, n).")
    key = key_for(key, None, None)
    if is_batched(params):
        params, ok = batched_params(params, covariance_type)
        keys = jax.random.split(key, params.weights.shape[0])
        X, labels = jax.vmap(lambda k, p: _sample_one(k, p, n, covariance_type))(keys, params)
        if ok is None or ok.all():
            return X, labels
        ok = jnp.asarray(ok)
        return jnp.where(ok[:, None, None], X, jnp.nan), jnp.where(ok[:, None], labels, -1)
    return _sample_one(key, _validate_params(params, covariance_type), n, covariance_type)
