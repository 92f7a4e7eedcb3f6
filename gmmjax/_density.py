"""Functions of fitted parameters: densities, responsibilities, labels, samples.

Each works on one mixture (weights (K,), X (N, D) or (N,)) or on a batch of them
(weights (B, K), X (B, N, D) or (B, N)): a leading batch axis on the parameters is
detected from ``weights.ndim`` and mapped with vmap.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from gmmjax._em import weighted_log_prob
from gmmjax._types import COVARIANCE_TYPES, GMMParams
from gmmjax._validate import _as_float_array


def _check_type(covariance_type):
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; use one of {', '.join(map(repr, COVARIANCE_TYPES))}."
        )


def _prepare(params, X):
    params = GMMParams(*(jnp.asarray(a) for a in params))
    X = _as_float_array(X)
    batched = params.weights.ndim == 2
    want = 3 if batched else 2
    if X.ndim == want - 1:
        X = X[..., None]
    if X.ndim != want:
        raise ValueError(
            f"X must have shape {'(B, N, D)' if batched else '(N, D)'} (or without D for 1-D data) "
            f"to match params with weights of shape {params.weights.shape}; got {X.shape}."
        )
    if X.shape[-1] != params.means.shape[-1]:
        raise ValueError(f"X has {X.shape[-1]} features but the means have {params.means.shape[-1]}.")
    return params, X.astype(params.means.dtype), batched


def _weighted(params, X, covariance_type):
    with jax.default_matmul_precision("highest"):
        return weighted_log_prob(X, params, covariance_type)


@functools.partial(jax.jit, static_argnames=("covariance_type", "batched"))
def _log_resp_and_norm(params, X, covariance_type, batched):
    def one(p, x):
        wlp = _weighted(p, x, covariance_type)
        norm = logsumexp(wlp, axis=1)
        return wlp - norm[:, None], norm

    return jax.vmap(one)(params, X) if batched else one(params, X)


def log_prob(params: GMMParams, X, *, covariance_type: str = "full"):
    """Per-sample log density of the mixture: (N,), or (B, N) for batched params.

    Equals scikit-learn's ``score_samples``.
    """
    _check_type(covariance_type)
    params, X, batched = _prepare(params, X)
    return _log_resp_and_norm(params, X, covariance_type, batched)[1]


def predict_proba(params: GMMParams, X, *, covariance_type: str = "full"):
    """Responsibilities p(k | x_n): (N, K), or (B, N, K) for batched params."""
    _check_type(covariance_type)
    params, X, batched = _prepare(params, X)
    return jnp.exp(_log_resp_and_norm(params, X, covariance_type, batched)[0])


def predict(params: GMMParams, X, *, covariance_type: str = "full"):
    """Most probable component of each sample: (N,), or (B, N) for batched params."""
    _check_type(covariance_type)
    params, X, batched = _prepare(params, X)
    return jnp.argmax(_log_resp_and_norm(params, X, covariance_type, batched)[0], axis=-1)


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
    ``jax.random.split(key, B)[i]``.
    """
    _check_type(covariance_type)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}.")
    params = GMMParams(*(jnp.asarray(a) for a in params))
    if params.weights.ndim == 2:
        keys = jax.random.split(key, params.weights.shape[0])
        return jax.vmap(lambda k, p: _sample_one(k, p, n, covariance_type))(keys, params)
    return _sample_one(key, params, n, covariance_type)
