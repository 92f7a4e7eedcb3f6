"""Checks at the Python boundary. Each error says what was wrong and what to do.

Nothing here runs inside jit: problems found inside a compiled fit become a per-dataset
`Status` instead (one bad dataset must never fail a whole batch).
"""

from __future__ import annotations

import numbers
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from gmmjax._covariance import COVARIANCE
from gmmjax._types import COVARIANCE_TYPES, INITS, TRACES, GMMParams


def user_stacklevel() -> int:
    """``stacklevel`` for warnings.warn called from gmmjax's code: the first frame outside
    the gmmjax and scikit-learn packages (the user's line: the estimators run inside
    scikit-learn's ``_fit_context`` wrapper, and pipelines call them), however deep the
    call (pandas' find_stack_level; Python 3.12's skip_file_prefixes does this, 3.11 has
    no such)."""
    pkgs = tuple(
        os.path.dirname(os.path.abspath(sys.modules[name].__file__)) + os.sep
        for name in ("gmmjax", "sklearn")
        if getattr(sys.modules.get(name), "__file__", None)
    )
    frame, level = sys._getframe(1), 1  # the caller of this function: warn's caller
    while frame.f_back is not None and frame.f_code.co_filename.startswith(pkgs):
        frame, level = frame.f_back, level + 1
    return level


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_covariance_type(covariance_type) -> None:
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"Unknown covariance_type {covariance_type!r}; use one of {', '.join(map(repr, COVARIANCE_TYPES))}."
        )


def check_config_type(config) -> None:
    from gmmjax._types import EMConfig

    if not isinstance(config, EMConfig):
        raise ValueError(f"config must be a gmmjax.EMConfig, e.g. EMConfig(n_components=3); got {type(config).__name__}.")


def check_config(c) -> None:
    if not _is_int(c.n_components) or c.n_components < 1:
        raise ValueError(f"n_components must be an integer >= 1, got {c.n_components!r}.")
    check_covariance_type(c.covariance_type)
    if not _is_int(c.n_init) or c.n_init < 1:
        raise ValueError(f"n_init must be an integer >= 1 (number of restarts), got {c.n_init!r}.")
    if c.init not in INITS:
        raise ValueError(f"Unknown init {c.init!r}; use one of {', '.join(map(repr, INITS))}.")
    if not _is_int(c.max_iter) or not 0 <= c.max_iter < 2**31 - 1:
        raise ValueError(f"max_iter must be an integer in [0, 2**31 - 1) (an int32 counter), got {c.max_iter!r}.")
    if not _is_real(c.tol) or not c.tol >= 0:
        raise ValueError(f"tol must be a number >= 0 (e.g. 1e-3), got {c.tol!r}.")
    if not _is_real(c.reg_covar) or not (0 <= c.reg_covar < np.inf):
        raise ValueError(f"reg_covar must be a finite number >= 0 (e.g. 1e-6), got {c.reg_covar!r}.")
    if not isinstance(c.keep_restarts, bool):
        raise ValueError(f"keep_restarts must be True or False, got {c.keep_restarts!r}.")
    if c.trace not in TRACES:
        raise ValueError(f"Unknown trace {c.trace!r}; use None, 'loglik' or 'params'.")


def check_real(x, what="X") -> None:
    """ValueError for complex values, which a cast to float would cut to their real part
    (NumPy says so only with a ComplexWarning)."""
    if np.dtype(x.dtype).kind == "c":
        advice = (
            " Pass the real and imaginary parts as two features, e.g. np.stack([z.real, z.imag], axis=-1)."
            if what != "weights" else ""
        )
        raise ValueError(f"{what} is complex ({x.dtype}); the mixtures are real-valued.{advice}")


def as_mask(mask, shape, named=""):
    """``mask`` as a bool array (NumPy, or JAX as given) of ``shape`` (``named``: how the
    error names it, e.g. "(B, N) = "): True marks a point to use. Integers and floats
    must be 0 or 1: a mask of 0.5 is a mistake (weights take fractions), not a True.
    Traced masks cannot be read and are cast as they are."""
    mask = mask if isinstance(mask, jax.Array) else np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have shape {named}{tuple(shape)} (one per point, True = use it), got {mask.shape}.")
    kind = np.dtype(mask.dtype).kind
    if kind == "b":
        return mask
    if kind not in "iuf":
        raise ValueError(f"mask must be boolean (True = use the point), got dtype {mask.dtype}.")
    if _concrete(mask):
        values = np.asarray(mask)
        if not np.all((values == 0) | (values == 1)):
            raise ValueError(
                "mask must be boolean (True = use the point) or 0/1, got values such as "
                f"{values[(values != 0) & (values != 1)].flat[0].item()!r}; for fractional importance pass weights=."
            )
    return mask.astype(bool)


def _as_float_array(x, what="X"):
    """jnp array of a floating dtype (integers and float16 become the default float).

    float64 data with JAX's 64-bit mode off becomes float32: said once per call site
    with a UserWarning, never silently. What is not a number is refused (`numeric_array`).
    """
    x = x if isinstance(x, jax.Array) else numeric_array(x, what)
    if not jnp.issubdtype(x.dtype, jnp.floating) or jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.result_type(float))
    if x.dtype == np.float64 and not jax.config.jax_enable_x64:
        warn_float64()
        x = x.astype(np.float32)
    return x if isinstance(x, jax.Array) else jax.device_put(x)  # jnp.asarray compiles a program per shape


def numeric_array(x, what="X") -> np.ndarray:
    """x as a NumPy array of numbers (bool, int or float). An object array (a list with
    None in it, say) is read as float64, None as NaN (a missing value, which the finite
    checks report); complex values (`check_real`) and text are a ValueError."""
    x = np.asarray(x)
    check_real(x, what)
    if x.dtype.kind in "USV":  # text (even "1.0") or raw bytes, as scikit-learn's check_array
        raise ValueError(f"{what} is not numeric (dtype {x.dtype}): pass numbers, e.g. a float array.")
    if x.dtype.kind not in "biuf":
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what} is not numeric (dtype {x.dtype}): pass numbers, e.g. a float array.") from None
    return x


def check_fits_dtype(X, dtype, valid=None, what="X", advice="fit with dtype='float64', or scale the data") -> None:
    """ValueError where finite values of X (..., D) (where ``valid`` (...), if given) lie
    beyond the range of ``dtype``, the precision they are about to be cast to: the cast
    would make them inf, later reported as if the data held infinity."""
    dtype = np.dtype(dtype)
    X = np.asarray(X)
    if X.dtype.kind != "f" or np.finfo(X.dtype).max <= np.finfo(dtype).max:
        return
    big = np.abs(X) > np.finfo(dtype).max  # False for NaN and for inf, reported as such
    big &= np.isfinite(X)
    if valid is not None:
        big &= np.asarray(valid, bool)[..., None]
    if big.any():
        where = f" in datasets {np.flatnonzero(big.any(axis=(1, 2)))[:10].tolist()}" if X.ndim == 3 else ""
        raise ValueError(
            f"{what} holds finite values beyond the range of {dtype}{where} (the largest: {np.abs(X[big]).max():.3g}), "
            f"the precision of the model: {advice}."
        )


def warn_float64() -> None:
    """The UserWarning for float64 values computed in float32 (64-bit mode off): the same
    text and the user's line from every call site, so that a call warns once."""
    warnings.warn(
        "float64 data is computed in float32 because JAX's 64-bit mode is off. Call "
        "jax.config.update('jax_enable_x64', True) for float64, or pass float32 data "
        "to silence this warning.",
        UserWarning,
        stacklevel=user_stacklevel(),
    )


def warn_if_downcast(source, dtype) -> None:
    """`warn_float64` where float64 data (``source``) will be computed in ``dtype``
    float32: for drivers that cast block by block or bucket by bucket, said once up front."""
    if np.dtype(source) == np.float64 and np.dtype(dtype) == np.float32:
        warn_float64()


def _concrete(x):
    return not isinstance(x, jax.core.Tracer)


def check_finite_points(X, w=None, what="X") -> None:
    """ValueError where a point of X (..., N, D) with weight w > 0 (every point without
    w) holds NaN or infinity, naming the datasets of a batch (B, N, D); nothing for
    traced values, which cannot be checked."""
    if not (_concrete(X) and (w is None or _concrete(w))):
        return
    finite = jnp.all(jnp.isfinite(X), axis=-1) if isinstance(X, jax.Array) else np.all(np.isfinite(X), axis=-1)
    if w is not None:
        finite = finite | (w <= 0)
    if bool(np.all(finite) if isinstance(finite, np.ndarray) else jnp.all(finite)):
        return
    where = ""
    if np.ndim(finite) == 2:
        where = f" in datasets {np.flatnonzero(~np.all(np.asarray(finite), axis=1))[:10].tolist()}"
    raise ValueError(f"{what} contains NaN or infinity{where}: remove those points (or, for a padded batch, mask them).")


def _check_weights(w, shape, dtype=None):
    """Checked weights (`_check_weight_values`). ``dtype``: the data's, which the
    weights take later (default their own)."""
    given = w
    if not isinstance(w, jax.Array):
        check_real(np.asarray(w), "weights")
    # Weights take the data's dtype later; their own float64 is no precision loss to report.
    w = w if isinstance(w, jax.Array) else np.asarray(w, np.float32 if not jax.config.jax_enable_x64 else None)
    w = _as_float_array(w, "weights")
    if w.shape != shape:
        raise ValueError(f"weights must have shape {shape} (one per sample), got {w.shape}.")
    if _concrete(w):
        _check_weight_values(
            np.asarray(given) if not isinstance(given, jax.Array) else np.asarray(w), w.dtype if dtype is None else dtype
        )
    return w


def _check_weight_values(w: np.ndarray, dtype) -> None:
    """ValueError unless the weights w (as given) are finite and >= 0 and, in the data's
    ``dtype``, stay finite, with positive ones normal numbers (compiled code on a CPU
    reads subnormal ones as 0)."""
    if w.dtype.kind != "f":  # counts, booleans: as floats (float weights: no copy)
        w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and >= 0 (use 0 to ignore a sample).")
    target = np.dtype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        cast = w.astype(target, copy=False)
    if not np.all(np.isfinite(cast)):
        raise ValueError(
            f"weights overflow {target} (the largest is {np.max(w):.3g}): only their ratios matter, "
            "so divide them by a constant (their maximum, say)."
        )
    tiny = np.finfo(target).tiny
    if np.any((w > 0) & (cast < tiny)):
        raise ValueError(
            f"weights must be 0 or at least {tiny:.3g} (smaller ones read as 0 in {target}): only their "
            "ratios matter, so multiply them by a constant (1 / their maximum, say)."
        )


def one_dataset(X, weights):
    """(N, D) float array and (N,) weights for `fit`."""
    X = _as_float_array(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(
            f"X must have shape (n_samples,) or (n_samples, n_features), got {X.shape}. "
            "To fit many datasets at once, use gmmjax.fit_batch."
        )
    if X.shape[0] == 0:
        raise ValueError("X is empty (0 samples): pass at least n_components samples.")
    if X.shape[1] == 0:
        raise ValueError("X has 0 features: pass data of shape (n_samples, n_features >= 1).")
    w = jnp.ones(X.shape[0], X.dtype) if weights is None else _check_weights(weights, X.shape[:1], X.dtype)
    return X, w.astype(X.dtype)


def pad_arrays(arrays, dtype):
    """(B, N_max, D) zero-padded array and (B, N_max) bool mask from B arrays (N_i, D)."""
    N = max(max(a.shape[0] for a in arrays), 1)
    X = np.zeros((len(arrays), N, arrays[0].shape[1]), dtype)
    mask = np.zeros((len(arrays), N), bool)
    for i, a in enumerate(arrays):
        X[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return X, mask


def read_list(Xs, weights):
    """(arrays (N_i, D), weights (N_i,) or None) of a well-formed list of datasets (1-D
    arrays become one feature), or None: the host drivers (`gmmjax._blocks`, length
    buckets in `gmmjax._fit`) then leave the list to `_pad_list`, which words the error."""
    if not Xs:
        return None
    arrays = [np.asarray(x) for x in Xs]
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) != 1:
        return None
    if weights is not None:
        weights = [np.asarray(v) for v in weights]
        if len(weights) != len(arrays) or any(v.shape != (a.shape[0],) for v, a in zip(weights, arrays)):
            return None
    return arrays, weights


def check_host_weights(weights, dtype) -> None:
    """The ValueError of `_check_weight_values` for the first of these host weight
    arrays that fails it (for data of ``dtype``): checked before any work starts."""
    for w in weights:
        _check_weight_values(np.asarray(w), dtype)


def _pad_list(Xs, weights):
    """(X (B, N_max, D), mask (B, N_max), weights (B, N_max) or None) of a list of
    datasets. Inside jit or vmap (traced datasets) the padding is traced too: the
    lengths are static, so the mask stays a NumPy array."""
    traced = not all(_concrete(a) for a in jax.tree_util.tree_leaves((list(Xs), weights)))
    xp = jnp if traced else np
    arrays = [jnp.asarray(x) if traced else numeric_array(x, f"dataset {i}") for i, x in enumerate(Xs)]
    if not arrays:
        raise ValueError("Xs is an empty list: pass at least one dataset.")
    arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
    for i, a in enumerate(arrays):
        if traced:  # (numeric_array checked the others)
            check_real(a, f"dataset {i}")
        if a.ndim != 2:
            raise ValueError(f"dataset {i} must have shape (n_samples,) or (n_samples, n_features), got {a.shape}.")
    D = {a.shape[1] for a in arrays}
    if len(D) != 1:
        raise ValueError(f"all datasets must have the same number of features, got {sorted(D)}.")
    lengths = [a.shape[0] for a in arrays]
    dtype = np.result_type(*[a.dtype for a in arrays])
    if not np.issubdtype(dtype, np.floating) or np.finfo(dtype).bits < 32:
        dtype = jnp.result_type(float)  # JAX's default float: integers never warn about float64
    if weights is not None:
        if len(weights) != len(arrays):
            raise ValueError(f"weights has {len(weights)} entries for {len(arrays)} datasets.")
        weights = [xp.asarray(v) for v in weights]
        for i, wi in enumerate(weights):
            if wi.shape != (lengths[i],):
                raise ValueError(f"weights[{i}] must have shape ({lengths[i]},), got {wi.shape}.")
    if not traced:
        X, mask = pad_arrays(arrays, dtype)
        w = None if weights is None else pad_arrays([v[:, None] for v in weights], dtype)[0][..., 0]
        return X, mask, w
    N = max(max(lengths), 1)
    pad = lambda a: jnp.pad(a.astype(dtype), [(0, N - a.shape[0])] + [(0, 0)] * (a.ndim - 1))  # noqa: E731
    mask = np.arange(N)[None, :] < np.asarray(lengths)[:, None]
    w = None if weights is None else jnp.stack([pad(v) for v in weights])
    return jnp.stack([pad(a) for a in arrays]), mask, w


def batch(Xs, mask, weights, unit_weights=True):
    """(B, N, D) float array and (B, N) weights (0 where masked) for `fit_batch`.

    With ``unit_weights`` False, no mask and no weights give None for the weights (the
    engine makes its ones inside the compiled call: a (B, N) array of ones made here
    cost W2-cpu 0.4 of its 6 ms)."""
    if isinstance(Xs, (list, tuple)):
        if mask is not None:
            raise ValueError("mask is for a padded array; a list of datasets is masked for you.")
        Xs, mask, weights = _pad_list(Xs, weights)
    X = _as_float_array(Xs)
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise ValueError(
            f"Xs must be a (B, N, D) or (B, N) array or a list of arrays, got shape {X.shape}. "
            "For one dataset use gmmjax.fit."
        )
    B, N, D = X.shape
    if B == 0:
        raise ValueError("Xs holds 0 datasets: pass at least one.")
    if D == 0:
        raise ValueError("Xs has 0 features: pass data of shape (B, N, n_features >= 1).")
    if weights is None and mask is None and not unit_weights and N > 0:
        return X, None
    w = jnp.ones((B, N), X.dtype) if weights is None else _check_weights(weights, (B, N), X.dtype)
    if mask is not None:
        w = jnp.where(as_mask(mask, (B, N), "(B, N) = "), w, 0.0)
    if N == 0:  # no points at all: one padded point of weight 0, so every dataset gets
        # TOO_FEW_POINTS, as a list of empty datasets does
        return jnp.zeros((B, 1, D), X.dtype), jnp.zeros((B, 1), X.dtype)
    return X, w.astype(X.dtype)


def key_array(key, what="key"):
    """``key`` as a JAX array of typed PRNG keys or of raw uint32 key data (checked
    against the default PRNG implementation), else a ValueError: not a JAX error from
    deep inside a fit."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype != jnp.uint32 or key.ndim == 0:
        raise ValueError(
            f"{what} must be a PRNG key such as jax.random.key(0) (or an array of them), or raw uint32 key "
            f"data such as jax.random.PRNGKey(0); got dtype {key.dtype}, shape {key.shape}."
        )
    if _concrete(key):
        try:
            jax.random.wrap_key_data(key)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what} of shape {key.shape} is not uint32 key data of JAX's default PRNG ({e}).") from None
    return key


def _is_single_key(key):
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key.ndim == 0
    return key.shape == (2,) and key.dtype == jnp.uint32


def key_for(key, init_params, batch, split=True):
    """A single key (batch None) or a (B,) array of keys, one per dataset. With
    ``split`` False a single key stays single (the engine splits it, in the trace)."""
    if key is None:
        if init_params is None:
            raise ValueError("pass a random key, e.g. key=jax.random.key(0) (or give init_params).")
        key = jax.random.key(0)
    key = key_array(key)
    if batch is None:
        if not _is_single_key(key):
            raise ValueError(f"key must be a single PRNG key such as jax.random.key(0), got shape {key.shape}.")
        return key
    if _is_single_key(key):
        return jax.random.split(key, batch) if split else key
    n = key.shape[0] if key.ndim else -1
    ok = (key.ndim == 1) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else (key.ndim == 2)
    if not ok or n != batch:
        raise ValueError(f"key must be one PRNG key or an array of {batch} keys (one per dataset), got shape {key.shape}.")
    return key


#: What weights of all 0 mean (`gmmjax._fit._fallback_params`).
NO_MODEL = (
    "the placeholder of a dataset that has no model (a fit with status TOO_FEW_POINTS, "
    "NONFINITE_INPUT or NUMERICAL_FAILURE, whose log_likelihood is -inf)"
)


def params(p, covariance_type, *, K=None, D=None, batch=None, name="params", dtype=None, values=True):
    """GMMParams with shapes checked against covariance_type (and K, D, batch if given).

    Concrete values are checked too (unless ``values`` is False): finite, weights >= 0
    summing to one, covariances symmetric and positive definite. Returns GMMParams of
    jnp arrays (of ``dtype`` if given).
    """
    if not isinstance(p, GMMParams):
        raise ValueError(f"{name} must be a gmmjax.GMMParams(weights, means, covariances).")
    check_covariance_type(covariance_type)
    if dtype is None and not jax.config.jax_enable_x64 and any(
        isinstance(a, (np.ndarray, np.floating)) and a.dtype == np.float64 for a in p
    ):
        warn_float64()  # jnp.asarray below makes them float32 (Python lists: as JAX reads them)
    arrs = [jnp.asarray(a) if dtype is None else jnp.asarray(a, dtype) for a in p]
    arrs = [a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(jnp.result_type(float)) for a in arrs]
    if batch is None and K is None and arrs[0].ndim == 2:  # batched params, batch size free
        batch = arrs[0].shape[0]
    lead = () if batch is None else (batch,)
    K = arrs[0].shape[-1] if K is None else K
    D = arrs[1].shape[-1] if D is None else D
    want = GMMParams(lead + (K,), lead + (K, D), lead + COVARIANCE[covariance_type].shape(K, D))
    for field, arr, shape in zip(GMMParams._fields, arrs, want):
        if arr.shape != shape:
            raise ValueError(
                f"{name}.{field} must have shape {shape} for n_components={K}, n_features={D}, "
                f"covariance_type={covariance_type!r}; got {arr.shape}."
            )
    if values and all(_concrete(a) for a in arrs):
        bad = _value_problems(GMMParams(*arrs), covariance_type)  # checked in this order
        # In a batch, say which mixtures fail (the first 10).
        where = (lambda f: f" (datasets {np.flatnonzero(f)[:10].tolist()})") if arrs[0].ndim > 1 else (lambda f: "")
        if bad["finite"].any():
            raise ValueError(f"{name} must be finite{where(bad['finite'])}.")
        if bad["weights"].any():
            if not np.asarray(arrs[0]).any():
                raise ValueError(f"{name}.weights are all 0: {NO_MODEL}.")
            sums = np.asarray(arrs[0], np.float64).sum(-1)
            raise ValueError(
                f"{name}.weights must be >= 0 and sum to 1{where(bad['weights'])} (got sums {np.unique(sums)[:3]})."
            )
        if bad["symmetric"].any():
            raise ValueError(
                f"{name}.covariances must be symmetric{where(bad['symmetric'])} (covariance_type={covariance_type!r})."
            )
        if bad["positive definite"].any():
            raise ValueError(
                f"{name}.covariances must be positive definite{where(bad['positive definite'])} "
                f"(covariance_type={covariance_type!r}), with eigenvalues of at least "
                f"{_smallest_eigenvalue(arrs[2]):.3g}, the smallest normal {arrs[2].dtype} (smaller ones compute as 0)."
            )
    return GMMParams(*arrs)


def _value_problems(p: GMMParams, covariance_type) -> dict:
    """What `params` checks of concrete values, per mixture: {check: (B,) bool, True
    where mixture b fails it}, B the mixtures of params with any leading axes (1
    without). Each check looks only at mixtures that pass the ones before it (finite,
    weights >= 0 summing to one, symmetric covariances, positive definite ones)."""
    lead = np.shape(p.weights)[:-1]
    B = int(np.prod(lead))
    w, m, c = (np.asarray(a, np.float64).reshape((B,) + np.shape(a)[len(lead):]) for a in p)
    flat = lambda a: a.reshape(B, int(np.prod(a.shape[1:])))  # noqa: E731  (B may be 0)
    bad = {"finite": ~(np.isfinite(flat(w)).all(1) & np.isfinite(flat(m)).all(1) & np.isfinite(flat(c)).all(1))}
    bad["weights"] = ~bad["finite"] & ~((w >= 0).all(1) & np.isclose(w.sum(1), 1.0, atol=1e-5))
    ok = ~bad["finite"] & ~bad["weights"]
    # Positive definite, with eigenvalues that are normal numbers of the params' dtype:
    # compiled code on a CPU reads subnormal ones as 0 (every density NaN).
    tiny = _smallest_eigenvalue(p.covariances)
    if covariance_type in ("diag", "spherical"):
        bad["symmetric"] = np.zeros(B, bool)
        bad["positive definite"] = ok & ~(flat(c) >= tiny).all(1)
        return bad
    c = np.where(ok.reshape((B,) + (1,) * (c.ndim - 1)), c, np.eye(c.shape[-1]))  # eigvalsh needs finite input
    bad["symmetric"] = ok & _asymmetric(c, axis=tuple(range(1, c.ndim)))
    ok &= ~bad["symmetric"]
    bad["positive definite"] = ok & ~(flat(np.linalg.eigvalsh(c)) >= tiny).all(1)
    return bad


def _smallest_eigenvalue(covariances) -> float:
    """The smallest covariance eigenvalue (variance) that compiled code computes with: the
    smallest normal number of the covariances' float dtype."""
    dtype = np.dtype(covariances.dtype)
    return float(np.finfo(dtype if dtype.kind == "f" else np.float64).tiny)


def _asymmetric(c, axis=None):
    """Some matrix of c (..., D, D) is not symmetric beyond rounding: entries compared
    on the scale sqrt(c_ii c_jj) of their own row and column. ``axis``: reduce over
    those axes only (an array), as np.any."""
    d = np.sqrt(np.abs(np.diagonal(c, axis1=-2, axis2=-1)))
    scale = d[..., :, None] * d[..., None, :]
    off = np.abs(c - np.swapaxes(c, -1, -2)) > 1e-4 * scale
    return bool(np.any(off)) if axis is None else np.any(off, axis=axis)


def usable_datasets(p: GMMParams, covariance_type) -> np.ndarray:
    """(B,) bool for batched GMMParams of concrete arrays (shapes already checked): True
    where dataset b's values pass what `params` checks (finite, weights >= 0 summing to
    one, covariances symmetric and positive definite)."""
    return ~np.any(list(_value_problems(p, covariance_type).values()), axis=0)


def with_stand_ins(p: GMMParams, ok, covariance_type) -> GMMParams:
    """NumPy GMMParams (leading (B,) axis) with dataset b replaced where ``ok[b]`` is
    False by a harmless stand-in (equal weights, zero means, unit covariances), so that
    a dataset without a usable model never fails a computation on the whole batch; its
    values must be masked out of every result."""
    arrs = [np.asarray(a) for a in p]
    B, K = arrs[0].shape
    D = arrs[1].shape[-1]
    unit = np.asarray(COVARIANCE[covariance_type].identity(K, D, np.float32))  # exact in any dtype
    stand_in = (np.full(K, 1.0 / K), np.zeros((K, D)), unit)
    return GMMParams(*(
        np.where(np.reshape(ok, (B,) + (1,) * s.ndim), a, s.astype(a.dtype)) for a, s in zip(arrs, stand_in)
    ))


def some_datasets(bad) -> str:
    """'2 of 5 datasets (first: [1, 3])' for a (B,) bool array, True where a dataset is
    named: the start of a warning about some datasets of a batch."""
    idx = np.flatnonzero(bad)
    return f"{idx.size} of {np.size(bad)} datasets (first: {idx[:10].tolist()})"


def is_batched(p) -> bool:
    """GMMParams with a leading dataset axis (weights (B, K)), as fit_batch returns."""
    return isinstance(p, GMMParams) and np.ndim(p.weights) == 2


def batched_params(p, covariance_type, *, what="params", results="Their results are NaN (labels -1)."):
    """(GMMParams, ok) for batched params as the density functions take them: shapes
    checked as `params`; values per dataset, so that one dataset without a usable model
    (as fit_batch leaves where a fit failed) never fails the batch. Such datasets get a
    stand-in (`with_stand_ins`), ok[b] False, and a warning that ends with ``results``
    (what the caller gives them). ok is None for traced params, which cannot be checked."""
    p = params(p, covariance_type, values=False, name=what)
    if not all(_concrete(a) for a in p):
        return p, None
    ok = usable_datasets(p, covariance_type)
    if ok.all():
        return p, ok
    warnings.warn(
        f"{some_datasets(~ok)} have no usable {what}: weights "
        "all 0 (what fit_batch gives a dataset it could not fit: status TOO_FEW_POINTS, NONFINITE_INPUT "
        "or NUMERICAL_FAILURE), non-finite values, weights not summing to 1 or covariances not positive "
        f"definite. {results}",
        RuntimeWarning,
        stacklevel=user_stacklevel(),
    )
    return GMMParams(*(jnp.asarray(a) for a in with_stand_ins(p, ok, covariance_type))), ok


def init_params(p, config, D, dtype, batch):
    """init_params as GMMParams of ``dtype``, checked against config (None stays None).

    In a batch, a dataset whose weights are all 0 (fit_batch's placeholder where it
    could not fit one: a warm start from such a result) starts from the stand-in of
    `with_stand_ins`, with a warning, rather than failing the batch."""
    if p is None:
        return None
    ct = config.covariance_type
    kw = dict(K=config.n_components, D=D, batch=batch, name="init_params", dtype=dtype)
    if batch is None:  # one mixture: no placeholders to stand in for
        return params(p, ct, **kw)
    p = params(p, ct, values=False, **kw)  # shapes first: the weights are (B, K) below
    if all(_concrete(a) for a in p):
        empty = ~np.asarray(p.weights).any(axis=1)
        if empty.any():
            warnings.warn(
                f"{some_datasets(empty)} have no model in init_params "
                "(weights all 0: what fit_batch gives a dataset it could not fit). They start from equal "
                "weights, zero means and unit covariances, from which every component moves alike: fit "
                "them without init_params for a fresh start (BatchGaussianMixture's warm start does).",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
            p = GMMParams(*(jnp.asarray(a) for a in with_stand_ins(p, ~empty, ct)))
    return params(p, ct, **kw)
