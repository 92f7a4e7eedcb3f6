"""Model selection: information criteria, and every K fitted in one compiled call.

    _criteria          BIC, AIC and ICL of one fit (one dataset, one K), on the device
    _select_dataset    vmap over K: `_fit_dataset` with n_active = K (one dataset)
    _select_jit        jit(vmap(_select_dataset)) over datasets; static config
    select_n_components, bic, aic, icl: the public functions

All criteria follow scikit-learn's sign convention: lower is better.

    BIC = -2 log L + p log n        AIC = -2 log L + 2 p
    ICL = BIC + 2 H,  H = -sum_n w_n sum_k r_nk log r_nk >= 0

log L is the total (weighted) log-likelihood, n the number of valid points (the sum
of the sample weights), r_nk the responsibilities and p scikit-learn's number of
free parameters: (K - 1) weights + K D means + the covariance parameters.
ICL (Biernacki, Celeux & Govaert, 2000) adds the entropy of the soft assignment to
BIC, so it prefers well separated components.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gmmjax import _density, _threads, _validate
from gmmjax._covariance import COVARIANCE
from gmmjax._em import e_step
from gmmjax._compile import engine_jit, traced
from gmmjax._fit import _fit_dataset
from gmmjax._types import COVARIANCE_TYPES, EMConfig, FitResult, GMMParams, Status
from gmmjax._validate import check_covariance_type

CRITERIA = ("bic", "aic", "icl")

#: Statuses whose fit gets a criterion of +inf: never selected.
_UNUSABLE = (Status.NUMERICAL_FAILURE, Status.TOO_FEW_POINTS, Status.NONFINITE_INPUT)


def n_parameters(n_components, n_features: int, covariance_type: str):
    """scikit-learn's count of free parameters (``GaussianMixture._n_parameters``).

    ``n_components`` may be a traced integer.
    """
    K, D = n_components, n_features
    return COVARIANCE[covariance_type].n_parameters(K, D) + K * D + K - 1


def _entropy(X, w, params: GMMParams, covariance_type: str):
    """() H = -sum_n w_n sum_k r_nk log r_nk (0 log 0 = 0)."""
    _, log_resp = e_step(X, w, params, covariance_type)
    r = jnp.exp(log_resp)
    rlogr = jnp.where(r > 0, r * jnp.where(r > 0, log_resp, 0.0), 0.0)
    return -jnp.sum(w * jnp.sum(rlogr, axis=0))  # log_resp is (K, N)


def _criteria(X, w, res: FitResult, k, covariance_type: str):
    """(3,) BIC, AIC, ICL of one fit; +inf where the fit is unusable."""
    n = jnp.sum(w)
    total = res.log_likelihood * n
    p = n_parameters(k, X.shape[1], covariance_type).astype(X.dtype)
    bic = -2.0 * total + p * jnp.log(n)
    aic = -2.0 * total + 2.0 * p
    icl = bic + 2.0 * _entropy(X, w, res.params, covariance_type)
    out = jnp.stack([bic, aic, icl])
    bad = jnp.isin(res.status, jnp.asarray([int(s) for s in _UNUSABLE])) | ~jnp.isfinite(out)
    return jnp.where(bad, jnp.inf, out)


def _select_dataset(X, w, key, ks, config: EMConfig):
    """One dataset, every K in ``ks`` (vmap): FitResult leaves (len(ks), ...), (len(ks), 3)."""

    def one_k(k):
        res, _ = _fit_dataset(X, w, key, None, config, k)
        # Clean copies of X, w as _fit_dataset makes them (padding may hold NaN).
        ok = (w > 0) & jnp.all(jnp.isfinite(X), axis=1)
        Xc, wc = jnp.where(ok[:, None], X, 0.0), jnp.where(ok, w, 0.0)
        return res, _criteria(Xc, wc, res, k, config.covariance_type)

    return jax.vmap(one_k)(ks)


def _select(X, w, keys, ks, config: EMConfig):
    """Datasets via vmap: X (B, N, D), w (B, N), keys (B,), ks (len(ks),)."""
    return jax.vmap(lambda x, ww, kk: _select_dataset(x, ww, kk, ks, config))(X, w, keys)


#: The one compile boundary of `select_n_components`: one compilation per
#: covariance type and data shape, whatever the grid of K.
_select_jit = engine_jit(_select, static_argnames=("config",))


class Selection(NamedTuple):
    """Result of `select_n_components` (NumPy arrays, except ``fits``).

    For one dataset the per-dataset fields are scalars; for a batch of B datasets
    they carry a leading (B,) axis.

    Attributes:
      n_components: chosen K: an int, or (B,) ints.
      covariance_type: chosen covariance type: a str, or a (B,) array of str.
      ks: the grid of component counts, sorted (a tuple of ints).
      covariance_types: the covariance types compared (a tuple of str).
      criterion: "bic", "aic" or "icl" (lower is better).
      scores: criterion values, (len(ks), len(covariance_types)) or
        (B, len(ks), len(covariance_types)); +inf where a fit failed or the dataset
        has fewer valid points than K.
      params: GMMParams of the chosen model. One dataset: exactly n_components
        components. A batch: max(ks) component slots per dataset; slots past the
        chosen n_components have weight exactly 0 (the densities ignore them).
        Covariances are in the chosen type's layout, except for a batch that
        compares several types: then full (B, K, D, D) matrices (use
        covariance_type="full" with them; the criteria still count each dataset's
        chosen type).
      status: `Status` of the chosen fit (a Status, or (B,) int32).
      fits: {covariance_type: FitResult of every K}, leaves (len(ks), ...) or
        (B, len(ks), ...) (JAX arrays; component slots as in the batch case above).
    """

    n_components: Any
    covariance_type: Any
    ks: tuple
    covariance_types: tuple
    criterion: str
    scores: np.ndarray
    params: GMMParams
    status: Any
    fits: dict


def _as_full(cov, covariance_type: str, K: int, D: int):
    """Covariances of any type as (..., K, D, D) matrices."""
    eye = np.eye(D, dtype=cov.dtype)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov[..., None, :, :], cov.shape[:-2] + (K, D, D)).copy()
    if covariance_type == "diag":
        return cov[..., :, None] * eye
    return cov[..., None, None] * eye


def _check_ks(ks):
    try:
        ks = [k for k in ks]
    except TypeError:
        ks = [ks]
    if not ks or not all(_validate._is_int(k) or isinstance(k, np.integer) for k in ks) or min(ks) < 1:
        raise ValueError(f"ks must be a non-empty sequence of integers >= 1 (e.g. range(1, 7)), got {ks!r}.")
    return tuple(sorted({int(k) for k in ks}))


def _check_types(covariance_types, config: EMConfig):
    if covariance_types is None:
        return (config.covariance_type,)
    if isinstance(covariance_types, str):
        covariance_types = (covariance_types,)
    types = tuple(dict.fromkeys(covariance_types))
    bad = [t for t in types if t not in COVARIANCE_TYPES]
    if bad or not types:
        raise ValueError(
            f"covariance_types must hold some of {', '.join(map(repr, COVARIANCE_TYPES))}; got {covariance_types!r}."
        )
    return types


def _is_batch(Xs, mask, batch: Optional[bool]) -> bool:
    if batch is not None:
        return bool(batch)
    if isinstance(Xs, (list, tuple)):
        return True
    ndim = np.ndim(Xs)
    return ndim == 3 or (ndim == 2 and mask is not None)


def select_n_components(
    Xs,
    ks,
    config: Optional[EMConfig] = None,
    *,
    key,
    criterion: str = "bic",
    covariance_types=None,
    mask=None,
    weights=None,
    batch: Optional[bool] = None,
    n_jobs: Optional[int] = None,
) -> Selection:
    """Fits every number of components in ``ks`` and picks the best by a criterion.

    All K are fitted in one compiled call (per covariance type): K_max = max(ks)
    component slots, of which the first K are fitted for each K (vmap over K). A
    batch of datasets adds a second vmap, still in the same call.

    Args:
      Xs: one dataset, (N, D) or (N,), or a batch as `fit_batch` takes it: a padded
        (B, N, D) array (with ``mask``), or a list of (N_i, D) arrays. A list, a 3-D
        array, or a 2-D array with a mask is a batch; ``batch=`` overrides this.
      ks: the component counts to compare, e.g. ``range(1, 7)`` (sorted, deduplicated).
      config: an `EMConfig` for the EM settings (n_init, init, max_iter, tol,
        reg_covar, covariance_type); its n_components and trace are ignored.
        Default: ``EMConfig(n_components=1)``'s settings.
      key: a PRNG key; dataset i of a batch uses ``jax.random.split(key, B)[i]``,
        and every K of a dataset the same key.
      criterion: "bic", "aic" or "icl" (all: lower is better; see the module doc).
      covariance_types: optional sequence of covariance types to compare as well
        (one compilation each); default ``(config.covariance_type,)``.
      mask: optional (B, N) bool for a padded batch (True = valid point).
      weights: optional sample weights ((N,), or (B, N) / a list for a batch).
        They count points (an integer weight equals repeating the point): n in BIC
        and the log-likelihood term are their sum, so their scale matters here, unlike
        in a fit. Weights that sum to 1 mean one point, and BIC then has no penalty;
        pass counts, or weights with a mean of 1.
      batch: force batch (True) or single-dataset (False) interpretation of Xs.
      n_jobs: on a CPU, the batch runs in up to this many parts, and the covariance
        types side by side, each a call from its own thread, as `fit_batch` does
        (`gmmjax._threads`). None (default): parts where they pay, the types always;
        -1: one part per core; 1: one call after another. It changes speed, not
        results (beyond rounding).

    Returns:
      A `Selection`. Ties go to the smaller K, then the earlier covariance type.

    Example:
      >>> import jax, numpy as np, gmmjax
      >>> rng = np.random.default_rng(0)
      >>> X = np.concatenate([rng.normal(m, 0.3, size=(100, 2)) for m in (-3, 0, 3)]).astype(np.float32)
      >>> sel = gmmjax.select_n_components(X, range(1, 6), key=jax.random.key(0))
      >>> int(sel.n_components), sel.scores.shape
      (3, (5, 1))
    """
    if traced((Xs, weights, mask, key)):
        raise ValueError(
            "select_n_components picks the model on the host and cannot run inside jit or vmap; "
            "call it outside, or fit each K with gmmjax.fit / fit_batch and compare gmmjax.bic inside."
        )
    config = EMConfig(n_components=1) if config is None else config
    if not isinstance(config, EMConfig):
        raise ValueError("config must be a gmmjax.EMConfig (its n_components is ignored).")
    if criterion not in CRITERIA:
        raise ValueError(f"Unknown criterion {criterion!r}; use 'bic', 'aic' or 'icl'.")
    _threads.check_n_jobs(n_jobs)
    ks = _check_ks(ks)
    types = _check_types(covariance_types, config)
    is_batch = _is_batch(Xs, mask, batch)
    if is_batch:
        X, w = _validate.batch(Xs, mask, weights)
        keys = _validate.key_for(key, None, batch=X.shape[0])
    else:
        if mask is not None:
            raise ValueError("mask is for a padded batch; for one dataset use weights (0 ignores a point).")
        X, w = _validate.one_dataset(Xs, weights)
        X, w = X[None], w[None]
        keys = _validate.key_for(key, None, batch=None)[None]
    B, _, D = X.shape
    k_arr = jnp.asarray(ks, jnp.int32)
    c = CRITERIA.index(criterion)

    cfgs = {
        ct: dataclasses.replace(config, n_components=max(ks), covariance_type=ct, trace=None, keep_restarts=False)
        for ct in types
    }
    jobs = _threads.default_jobs(B, X.shape[1], D, cfgs[types[0]], config.n_init * len(ks), n_jobs)
    if jobs > 1 or (len(types) > 1 and n_jobs != 1 and _threads.can_split(D)):
        # On a CPU: the parts of the batch and the covariance types all at once, each
        # from its own thread (`gmmjax._threads`); the types' compilations overlap too.
        size = -(-B // jobs)
        args = (_threads.host_arrays(X), _threads.host_arrays(w), _threads.host_keys(keys, B))
        pending = {
            ct: _threads.submit(lambda X, w, k, cfg=cfgs[ct]: _select_jit(X, w, k, k_arr, config=cfg), B, size, args)
            for ct in types
        }
        outs = {ct: _threads.gather(p) for ct, p in pending.items()}
    else:
        outs = {ct: _select_jit(X, w, keys, k_arr, config=cfgs[ct]) for ct in types}
    fits, scores = {}, []
    for ct in types:
        res, crit = outs[ct]
        fits[ct] = res
        scores.append(np.asarray(crit[..., c]))  # (B, len(ks))
    scores = np.stack(scores, axis=-1)  # (B, len(ks), len(types))

    flat = np.argmin(scores.reshape(B, -1), axis=1)  # first minimum: smaller K, earlier type
    ki, ti = np.unravel_index(flat, scores.shape[1:])
    chosen_k = np.asarray(ks)[ki]
    chosen_t = np.asarray(types)[ti]
    rows = np.arange(B)
    status = np.empty(B, np.int32)
    Kmax = max(ks)
    for j, ct in enumerate(types):
        status = np.where(ti == j, np.asarray(fits[ct].status)[rows, ki], status)
    # Gather the chosen fit of every dataset: one covariance layout per result, so a
    # batch that compares several types gets full matrices; one dataset keeps its type's.
    layout = types[0] if len(types) == 1 else ("full" if is_batch else str(chosen_t[0]))
    weights_, means_, covs_ = None, None, None
    for j, ct in enumerate(types):
        sel = ti == j
        if not sel.any():
            continue
        p = jax.device_get(fits[ct].params)
        pw, pm, pc = p.weights[rows, ki], p.means[rows, ki], p.covariances[rows, ki]
        if layout != ct:
            pc = _as_full(pc, ct, Kmax, D)
        if weights_ is None:
            weights_, means_, covs_ = pw.copy(), pm.copy(), pc.copy()
        weights_[sel], means_[sel], covs_[sel] = pw[sel], pm[sel], pc[sel]
    if is_batch:
        return Selection(
            n_components=chosen_k.astype(np.int64),
            covariance_type=chosen_t,
            ks=ks,
            covariance_types=types,
            criterion=criterion,
            scores=scores,
            params=GMMParams(weights_, means_, covs_),
            status=status,
            fits=fits,
        )
    K = int(chosen_k[0])
    cov = covs_[0]
    if layout != "tied":
        cov = cov[:K]
    return Selection(
        n_components=K,
        covariance_type=str(chosen_t[0]),
        ks=ks,
        covariance_types=types,
        criterion=criterion,
        scores=scores[0],
        params=GMMParams(weights_[0][:K], means_[0][:K], cov),
        status=Status(int(status[0])),
        fits={ct: jax.tree_util.tree_map(lambda a: a[0], r) for ct, r in fits.items()},
    )


# ---------------------------------------------------------------- plain criteria
@functools.partial(jax.jit, static_argnames=("covariance_type", "batched"))
def _criteria_of_params(params, X, w, covariance_type, batched):
    def one(p, x, ww):
        ok = (ww > 0) & jnp.all(jnp.isfinite(x), axis=1)
        x, ww = jnp.where(ok[:, None], x, 0.0), jnp.where(ok, ww, 0.0)
        ll, _ = e_step(x, ww, p, covariance_type)
        k = jnp.sum(p.weights > 0)
        res = FitResult(p, ll, 0, False, jnp.asarray(Status.CONVERGED, jnp.int32), None)
        return _criteria(x, ww, res, k, covariance_type)

    return jax.vmap(one)(params, X, w) if batched else one(params, X, w)


def _criterion(name, params, X, covariance_type, mask):
    check_covariance_type(covariance_type)
    # The density functions' data path: a dataset without a usable model has every point
    # masked, and scores +inf (no point, no likelihood).
    params, X, batched, mask, _ = _density._prepare(
        params, X, covariance_type, mask, results="Their criteria are +inf (never selected)."
    )
    if X.shape[-2] == 0 and not batched:  # (a batch's empty datasets score +inf, as a list's do)
        raise ValueError("X has 0 samples: a criterion needs at least one point.")
    w = jnp.ones(X.shape[:-1], X.dtype) if mask is None else jnp.asarray(mask, X.dtype)
    out = _criteria_of_params(params, X, w, covariance_type, batched)[..., CRITERIA.index(name)]
    if traced(out):  # inside the caller's jit or vmap: a JAX array, as log_prob gives
        return out
    return np.asarray(out) if batched else float(out)


def bic(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Bayesian information criterion of a mixture on X (lower is better).

    Equals scikit-learn's ``GaussianMixture.bic(X)`` for the same parameters:
    ``-2 * sum_n log p(x_n) + p * log(N)``. Components with weight 0 (unused slots of
    a `select_n_components` batch) are not counted in p.

    Args:
      params: `GMMParams` of one mixture, or batched (weights (B, K)).
      X: (N, D) data, or for batched params a (B, N, D) array (with ``mask``) or a
        list of (N_i, D) arrays.
      covariance_type: the covariance type of ``params``.
      mask: optional bool of X's shape without the feature axis, False for points to
        leave out (padding: they may hold anything, NaN included), as in `log_prob`.

    Returns:
      A float, or (B,) NumPy array for batched params (inside jit or vmap: a JAX array).
    """
    return _criterion("bic", params, X, covariance_type, mask)


def aic(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Akaike information criterion (lower is better); scikit-learn's ``aic``.

    ``-2 * sum_n log p(x_n) + 2 p``; arguments and returns as `bic`.
    """
    return _criterion("aic", params, X, covariance_type, mask)


def icl(params: GMMParams, X, *, covariance_type: str = "full", mask=None):
    """Integrated completed likelihood criterion (lower is better).

    ``BIC - 2 * sum_n sum_k r_nk log r_nk``: BIC plus twice the entropy of the
    responsibilities (never below BIC). Arguments and returns as `bic`.
    """
    return _criterion("icl", params, X, covariance_type, mask)

