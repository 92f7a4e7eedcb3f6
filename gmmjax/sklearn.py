"""scikit-learn estimators backed by the gmmjax engine; NumPy at the boundary.

    GaussianMixture       drop-in for ``sklearn.mixture.GaussianMixture`` (one dataset)
    BatchGaussianMixture  the same model fitted to many datasets in one compiled call

This module needs scikit-learn; ``import gmmjax`` does not (``gmmjax.GaussianMixture``
imports this module on first use).

Precision policy (the ``dtype`` parameter)
------------------------------------------
JAX computes in float32 unless 64-bit mode (``jax_enable_x64``) is on, and would
silently truncate float64 data. The estimators do not: with ``dtype=None`` (the
default) they compute in the precision of the data, as scikit-learn does — float32
data in float32, anything else in float64 — and switch 64-bit mode on for the
duration of each call (``jax.enable_x64(True)``) when float64 is needed, whatever
the global setting; the global setting is left as it was. ``dtype="float32"`` or
``"float64"`` forces a precision (float32 is much faster on most GPUs). Fitted
attributes are NumPy arrays of that dtype, and later calls (predict, score, ...)
compute in it too. The functional API (`gmmjax.fit`, `gmmjax.select_n_components`)
follows JAX's global setting instead.

Compilation
-----------
Every distinct data shape compiles the fit once (seconds). To keep refits cheap (cross
validation, grid searches), the number of samples is padded up to a few sizes per
octave (at most 25 % more rows; padding has sample weight 0 and changes nothing but
rounding), so nearby sample counts share one compiled program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings

try:
    import sklearn  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "gmmjax.GaussianMixture and gmmjax.BatchGaussianMixture need scikit-learn: "
        "pip install 'gmmjax[sklearn]'. The functional API (gmmjax.fit, ...) works without it."
    ) from e

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import _num_samples, check_is_fitted

try:
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # scikit-learn < 1.6

    def _validate_data(estimator, X, **kwargs):
        return estimator._validate_data(X, **kwargs)


from gmmjax import _io, _ragged, _validate
from gmmjax._density import log_prob as _log_prob
from gmmjax._density import predict_proba as _predict_proba
from gmmjax._density import sample as _sample
from gmmjax._compile import engine_jit
from gmmjax._covariance import COVARIANCE
from gmmjax._fit import _fit_dataset, best_restart, fit, fit_batch, status_counts
from gmmjax._init import init_params as _engine_init
from gmmjax._select import n_parameters
from gmmjax._types import EMConfig, GMMParams, Status, Trace
from gmmjax._validate import pad_arrays

__all__ = ["BatchGaussianMixture", "GaussianMixture"]

#: scikit-learn's init_params names -> the engine's EMConfig.init.
INIT_NAMES = {"kmeans": "kmeans", "k-means++": "kmeans++", "random": "random", "random_from_data": "random_from_data"}

_FAILED_MESSAGE = (
    "Fitting the mixture model failed because some components have ill-defined empirical "
    "covariance (for instance caused by singleton or collapsed samples). Try to decrease the "
    "number of components, increase reg_covar, or scale the input data."
)
_FLOAT32_HINT = " The numerical accuracy can also be improved by passing float64 data instead of float32."
_NOT_CONVERGED = (
    "Best performing initialization did not converge. Try different init parameters, or "
    "increase max_iter, tol, or check for degenerate data."
)


# ---------------------------------------------------------------- helpers
def _bucket(n: int) -> int:
    """Padded number of samples: >= n, at most 4 sizes per octave, at least 64."""
    if n <= 64:
        return 64
    step = 1 << (n.bit_length() - 3)
    return -(-n // step) * step


def _precision(dtype):
    """Context in which JAX computes in ``dtype`` (64-bit mode on for float64)."""
    if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _key(random_state):
    """A JAX PRNG key from a random_state, deterministically.

    int -> ``jax.random.key(int)``; a JAX key is used as is; None or a
    ``np.random.RandomState`` -> a key seeded by one draw from it.
    """
    if isinstance(random_state, jax.Array):
        key = _validate.key_array(random_state, "random_state")
        if not _validate._is_single_key(key):
            raise ValueError(f"random_state must be one PRNG key, got an array of shape {key.shape}.")
        return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
    if isinstance(random_state, numbers.Integral):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    with jax.enable_x64(True):  # the same key whatever the global setting
        return jax.random.key(seed)


def _seed_for_sklearn(random_state):
    """random_state in a form scikit-learn accepts (a JAX key becomes an int)."""
    if isinstance(random_state, jax.Array):
        return int(jax.random.randint(_key(random_state), (), 0, np.iinfo(np.int32).max))
    return random_state


def _labels(resp):
    """argmax over the components of resp (..., K); -1 where resp is NaN (a point too
    far from every component: `gmmjax._density._log_resp`)."""
    return np.where(np.isnan(resp[..., 0]), -1, np.argmax(resp, axis=-1))


def _pad_rows(X, n_to):
    """(n_to, D) zeros-padded copy of X (N, D) and (n_to,) weights: 1 then 0."""
    N = X.shape[-2]
    Xp = np.zeros(X.shape[:-2] + (n_to, X.shape[-1]), X.dtype)
    Xp[..., :N, :] = X
    w = np.zeros(X.shape[:-2] + (n_to,), X.dtype)
    w[..., :N] = 1.0
    return Xp, w


def _precision_cholesky(cov, covariance_type):
    """scikit-learn's precisions_cholesky_ (upper triangular P, P P^T = cov^-1).

    Any leading axes are batch axes. Raises np.linalg.LinAlgError (full, tied) or
    FloatingPointError (diag, spherical) when a covariance is not positive definite.
    """
    if covariance_type in ("full", "tied"):
        L = np.linalg.cholesky(cov)
        eye = np.broadcast_to(np.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
        return np.swapaxes(np.linalg.solve(L, eye), -1, -2)
    if np.any(~(cov > 0)):
        raise FloatingPointError("non-positive variance")
    return 1.0 / np.sqrt(cov)


def _precisions(prec_chol, covariance_type):
    if covariance_type in ("full", "tied"):
        return prec_chol @ np.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def _covariances_from_precisions(prec, covariance_type):
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(prec)
    return 1.0 / prec


def _key_to_file(key, arrays: dict, name: str) -> dict:
    """A JAX key for a gmmjax file: its data into ``arrays[name]``; returns the JSON entry
    that `_key_from_file` reads back (the data and the key's implementation)."""
    arrays[name] = np.asarray(jax.random.key_data(key))
    return {"jax_key": name, "impl": str(jax.random.key_impl(key))}


def _key_from_file(entry: dict, arrays: dict):
    return jax.random.wrap_key_data(arrays[entry["jax_key"]], impl=entry["impl"])


def _check_init_arrays(est, n_features, dtype, batch=None):
    """Validated (weights_init, means_init, covariances from precisions_init), each or None.

    Checks as scikit-learn's GaussianMixture does, without writing back into the
    hyperparameters. With ``batch`` = B, arrays may also carry a leading (B,) axis.
    """
    K, D, ct = est.n_components, n_features, est.covariance_type
    shapes = {
        "weights": (K,),
        "means": (K, D),
        "precisions": {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[ct],
    }
    out = []
    for name in ("weights", "means", "precisions"):
        value = getattr(est, f"{name}_init")
        if value is None:
            out.append(None)
            continue
        a = np.asarray(value, dtype=dtype)
        want = shapes[name]
        if a.shape != want and not (batch is not None and a.shape == (batch,) + want):
            label = f"{ct} precision" if name == "precisions" else name
            per_dataset = f" (or {(batch,) + want}, one per dataset)" if batch is not None else ""
            raise ValueError(f"The parameter '{label}' should have the shape of {want}{per_dataset}, but got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name}_init must be finite.")
        if name == "weights":
            if np.any(a < 0) or np.any(a > 1):
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{a.max():.5f}, min value {a.min():.5f}"
                )
            atol = 1e-6 if a.dtype == np.float32 else 1e-8
            sums = np.sum(a, axis=-1)
            off = ~np.isclose(sums, 1.0, atol=atol, rtol=0)
            if np.any(off):
                where = f" for datasets {np.flatnonzero(off)[:10].tolist()}" if a.ndim == 2 else ""
                raise ValueError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{np.ravel(sums)[np.ravel(off)][0]:.5f}{where}"
                )
        if name == "precisions":
            if ct in ("full", "tied"):
                sym = np.allclose(a, np.swapaxes(a, -1, -2))
                if not (sym and np.all(np.linalg.eigvalsh(a) > 0)):
                    raise ValueError(f"'{ct} precision' should be symmetric, positive-definite")
            elif np.any(a <= 0):
                raise ValueError(f"'{ct} precision' should be positive")
            a = _covariances_from_precisions(a, ct)
        out.append(a)
    return tuple(out)


# ---------------------------------------------------------------- custom initial parameters
def _fit_partial_one(X, w, key, inits, config: EMConfig):
    """One dataset, n_init restarts: each starts from config.init with the user's
    given parts (weights, means or covariances; None = not given) swapped in, as
    scikit-learn does when only some of weights_init / means_init / precisions_init
    are set."""
    K = config.n_components
    one = dataclasses.replace(config, n_init=1, keep_restarts=False)
    ok = w > 0

    def restart(k):
        Xc = jnp.where(ok[:, None], X, 0.0)
        p0 = _engine_init(k, Xc, w, one, jnp.ones(K, bool))
        p0 = GMMParams(*(p if u is None else u.astype(X.dtype) for p, u in zip(p0, inits)))
        return _fit_dataset(X, w, k, p0, one)[0]

    res = jax.vmap(restart)(jax.random.split(key, config.n_init))
    best = jax.tree_util.tree_map(lambda a: a[best_restart(res.status, res.log_likelihood)], res)
    return best._replace(restarts=res if config.keep_restarts else None)


_fit_partial_jit = engine_jit(_fit_partial_one, static_argnames=("config",))
_fit_partial_batch_jit = engine_jit(
    lambda X, w, keys, inits, config: jax.vmap(lambda x, ww, k, i: _fit_partial_one(x, ww, k, i, config))(
        X, w, keys, inits
    ),
    static_argnames=("config",),
)


# ---------------------------------------------------------------- shared base
class _MixtureBase(DensityMixin, BaseEstimator):
    """Hyperparameters, validation and saving shared by the two estimators."""

    _parameter_constraints: dict = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "tol": [Interval(numbers.Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(numbers.Real, 0.0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_NAMES))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state", jax.Array],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "dtype": [StrOptions({"float32", "float64"}), None],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.dtype = dtype

    # -- configuration
    def _warm(self) -> bool:
        """This fit continues the previous one (warm_start=True and a fitted model)."""
        return bool(self.warm_start) and hasattr(self, "converged_")

    def _compute_dtype(self, data_dtype, warm=False):
        """The fit's precision: ``dtype`` if set, else a warm start's (``warm``: the
        previous fit's, whose model it continues), else the data's (float32 stays
        float32, anything else is float64)."""
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if warm:
            return np.dtype(self.means_.dtype)
        return np.dtype(np.float32) if np.dtype(data_dtype) == np.float32 else np.dtype(np.float64)

    def _config(self, n_init, keep_restarts=False) -> EMConfig:
        return EMConfig(
            n_components=int(self.n_components),
            covariance_type=self.covariance_type,
            n_init=int(n_init),
            init=INIT_NAMES[self.init_params],
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            reg_covar=float(self.reg_covar),
            trace="loglik",
            keep_restarts=keep_restarts,
        )

    def _cov_shape(self, D):
        return COVARIANCE[self.covariance_type].shape(self.n_components, D)

    def _check_warm_covariances(self, D, batch=False):
        want = self._cov_shape(D)
        if self.covariances_.shape[int(batch):] != want:
            raise ValueError(
                f"warm_start=True continues from the previous fit, whose covariances have shape "
                f"{self.covariances_.shape}; covariance_type={self.covariance_type!r} needs {want}. "
                "Set warm_start=False to start afresh with another covariance_type."
            )

    def _fitted_params(self) -> GMMParams:
        return GMMParams(self.weights_, self.means_, self.covariances_)

    def _n_parameters(self):
        """scikit-learn's number of free parameters of the fitted model."""
        return int(n_parameters(self.n_components, self.means_.shape[-1], self.covariance_type))

    def _print_verbose(self, res):
        """scikit-learn's progress messages, printed after the compiled fit returns
        (from the trace of every restart; no per-iteration timings)."""
        if not self.verbose:
            return
        r = jax.device_get(res.restarts if res.restarts is not None else res)
        ll = np.atleast_2d(r.trace.log_likelihood)
        n_iter, conv = np.atleast_1d(r.n_iter), np.atleast_1d(r.converged)
        for i in range(ll.shape[0]):
            print(f"Initialization {i}")
            for t in range(1, int(n_iter[i]) + 1):
                if t % self.verbose_interval == 0:
                    change = ll[i, t - 1] - (ll[i, t - 2] if t > 1 else -np.inf)
                    print(f"  Iteration {t}" + (f"\t ll change {change:.5f}" if self.verbose >= 2 else ""))
            msg = "converged" if conv[i] else "did not converge"
            lb = ll[i, int(n_iter[i]) - 1] if n_iter[i] > 0 else -np.inf
            print(f"Initialization {msg}." + (f"\t lower bound {lb:.5f}." if self.verbose >= 2 else ""))

    # -- saving
    _FITTED = (
        "weights_",
        "means_",
        "covariances_",
        "precisions_",
        "precisions_cholesky_",
        "converged_",
        "n_iter_",
        "lower_bound_",
        "status_",
    )

    def _hyperparameters_for_file(self, arrays):
        hp = {}
        for name, value in self.get_params(deep=False).items():
            if name in ("weights_init", "means_init", "precisions_init"):
                if value is not None:
                    arrays[f"param.{name}"] = np.asarray(value)
                hp[name] = None if value is None else {"array": f"param.{name}"}
            elif name == "random_state":
                if isinstance(value, jax.Array):
                    hp[name] = _key_to_file(_key(value), arrays, "param.random_state")
                elif value is None or isinstance(value, numbers.Integral):
                    hp[name] = None if value is None else int(value)
                else:
                    warnings.warn(
                        "random_state is a np.random.RandomState, which is not saved; the loaded "
                        "estimator has random_state=None. Use an int to keep it.",
                        UserWarning,
                        stacklevel=_validate.user_stacklevel(),
                    )
                    hp[name] = None
            elif isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not np.isfinite(value):
                arrays[f"param.{name}"] = np.asarray(float(value))  # JSON holds no inf or NaN (tol=inf, say)
                hp[name] = {"array": f"param.{name}", "scalar": True}
            elif isinstance(value, (np.integer, np.floating, np.bool_)):
                hp[name] = value.item()
            else:
                hp[name] = value
        return hp

    @staticmethod
    def _hyperparameters_from_file(hp, arrays):
        out = {}
        for name, value in hp.items():
            if isinstance(value, dict) and "array" in value:
                value = float(arrays[value["array"]]) if value.get("scalar") else arrays[value["array"]]
            elif isinstance(value, dict) and "jax_key" in value:
                value = _key_from_file(value, arrays)
            out[name] = value
        return out

    def save(self, path):
        """Saves this estimator (hyperparameters and, if fitted, its fitted state) to
        ``path`` in gmmjax's file format (a ``.npz`` archive, no pickle; see
        `gmmjax._io`). Load it back with ``type(self).load(path)``."""
        arrays, attributes = {}, {}
        hp = self._hyperparameters_for_file(arrays)
        fitted = hasattr(self, "converged_")
        if fitted:
            for name in self._FITTED:
                arrays[name] = np.asarray(getattr(self, name))
            attributes["n_features_in_"] = int(self.n_features_in_)
            if hasattr(self, "feature_names_in_"):
                attributes["feature_names_in_"] = [str(f) for f in self.feature_names_in_]
            self._extra_to_file(arrays, attributes)
        meta = {
            "covariance_type": self.covariance_type,
            "hyperparameters": hp,
            "attributes": attributes,
            "fitted": fitted,
        }
        _io.write(path, type(self).__name__, meta, arrays)

    @classmethod
    def load(cls, path):
        """Loads an estimator written by ``save``; never executes code from the file.

        Raises:
          ValueError: the file is not a gmmjax file of this class, is corrupted or
            truncated, or was written by a newer gmmjax format version.
        """
        meta, arrays = _io.read(path, classes=(cls.__name__,))
        try:
            est = cls(**cls._hyperparameters_from_file(meta["hyperparameters"], arrays))
            if meta.get("fitted"):
                for name in cls._FITTED:
                    setattr(est, name, arrays[name])
                attrs = meta["attributes"]
                est.n_features_in_ = int(attrs["n_features_in_"])
                if "feature_names_in_" in attrs:
                    est.feature_names_in_ = np.asarray(attrs["feature_names_in_"], dtype=object)
                est._extra_from_file(arrays, attrs)
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError(f"{path!r} is not a readable gmmjax file: missing or malformed entry ({e}).") from None
        return est


# ---------------------------------------------------------------- one dataset

def _draw(est, n_samples, params=None):
    """``sample`` of either estimator (of ``params``, default its fitted ones): drawn
    with JAX from a key derived from random_state, then grouped by component along the
    sample axis (as scikit-learn)."""
    check_is_fitted(est)
    if not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"Invalid value for 'n_samples': {n_samples} . The sampling requires at least one sample.")
    with _precision(est.means_.dtype):
        key = jax.random.fold_in(_key(est.random_state), 1)
        params = GMMParams(*(jnp.asarray(a) for a in (est._fitted_params() if params is None else params)))
        X, y = jax.device_get(_sample(key, params, int(n_samples), covariance_type=est.covariance_type))
    order = np.argsort(np.asarray(y), axis=-1, kind="stable")
    X = np.take_along_axis(np.asarray(X), order[..., None], axis=-2)
    return X.astype(np.float64), np.take_along_axis(np.asarray(y), order, axis=-1).astype(np.int64)

class GaussianMixture(_MixtureBase):
    """Gaussian mixture fitted with EM by gmmjax; a drop-in for
    ``sklearn.mixture.GaussianMixture``.

    Same parameters, defaults, methods and fitted attributes as scikit-learn's
    (``weights_``, ``means_``, ``covariances_``, ``precisions_``,
    ``precisions_cholesky_``, ``converged_``, ``n_iter_``, ``lower_bound_``,
    ``lower_bounds_``, ``n_features_in_``, ``feature_names_in_``), plus:

    Parameters:
      dtype: None (compute in the data's precision: float32 stays float32, anything
        else is float64, with JAX 64-bit mode switched on for the call), "float32"
        or "float64". See the module docstring.
      random_state: as scikit-learn's (None, int, RandomState), or a JAX PRNG key.
        An int ``s`` seeds ``jax.random.key(s)``; restarts use ``split(key, n_init)``.

    Attributes:
      status_: the `gmmjax.Status` of the fit (CONVERGED, MAX_ITER, DEGENERATE).
      trace_: the engine's `Trace` of the best restart: ``log_likelihood`` (max_iter + 1,)
        holds the mean log-likelihood after t iterations (-inf past ``n_iter_``), so
        ``lower_bounds_ == trace_.log_likelihood[:n_iter_]``.

    Differences from scikit-learn: the initialisations are the engine's (init_params
    "kmeans" runs k-means++ seeding and Lloyd iterations in JAX, "k-means++" assigns
    every point to its nearest seed), so fits agree with scikit-learn's in
    distribution, and exactly from the same initial parameters; the best restart is
    the one with the highest final log-likelihood among those that neither failed nor
    collapsed (``status_`` DEGENERATE: kept only when every restart collapsed or
    failed); ``sample`` draws with JAX; verbose
    messages are printed after the compiled fit returns; a warm start's first
    iteration never counts as converged.

    Example:
      >>> import numpy as np, gmmjax
      >>> X = np.random.default_rng(0).normal(size=(200, 2))
      >>> gm = gmmjax.GaussianMixture(n_components=2, random_state=0).fit(X)
      >>> gm.means_.shape, gm.predict(X).shape
      ((2, 2), (200,))
    """

    # -- fitting
    def fit(self, X, y=None):
        """Estimates the parameters with EM (see `fit_predict`). Returns self."""
        self.fit_predict(X, y)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_predict(self, X, y=None):
        """Fits the model to X (n_samples, n_features) and returns the labels of X.

        Raises:
          ValueError: n_samples < n_components, invalid input, or EM failed
            numerically (the message says what to change).
        Warns:
          ConvergenceWarning: the best restart did not converge (max_iter > 0).
        """
        do_init = not self._warm()
        # A warm start checks X against the fitted model (reset=False): data it refuses
        # leave the fitted model as it was, usable.
        X = _validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, reset=do_init)
        n, D = X.shape
        if n < self.n_components:
            raise ValueError(
                "Expected n_samples >= n_components "
                f"but got n_components = {self.n_components}, n_samples = {n}"
            )
        dtype = self._compute_dtype(X.dtype, warm=not do_init)
        _validate.check_fits_dtype(X, dtype)
        X = X.astype(dtype, copy=False)
        Xp, w = _pad_rows(X, _bucket(n))
        with _precision(dtype):
            if do_init:
                inits = _check_init_arrays(self, D, dtype)
                config = self._config(self.n_init, keep_restarts=bool(self.verbose))
                key = _key(self.random_state)
                if all(a is not None for a in inits):
                    res = fit(Xp, config, weights=w, init_params=GMMParams(*inits))
                elif any(a is not None for a in inits):
                    res = _fit_partial_jit(jnp.asarray(Xp), jnp.asarray(w), key, inits, config=config)
                else:
                    res = fit(Xp, config, key=key, weights=w)
            else:
                if self.means_.shape != (self.n_components, D) or self.means_.dtype != dtype:
                    raise ValueError(
                        "warm_start=True continues from the previous fit, which has "
                        f"means of shape {self.means_.shape} and dtype {self.means_.dtype}; this fit has "
                        f"n_components={self.n_components}, {D} features and dtype {dtype}. "
                        "Set warm_start=False to start afresh."
                    )
                self._check_warm_covariances(D)
                config = self._config(1, keep_restarts=bool(self.verbose))
                res = fit(Xp, config, weights=w, init_params=self._fitted_params())
            res = jax.device_get(res)
        self._print_verbose(res)
        self._set_result(res, dtype)
        return _labels(self._density(X, "proba"))

    def _set_result(self, res, dtype):
        status = Status(int(res.status))
        if status == Status.NUMERICAL_FAILURE:
            hint = _FLOAT32_HINT if dtype == np.float32 else ""
            raise ValueError(f"{_FAILED_MESSAGE}{hint} (gmmjax status: NUMERICAL_FAILURE)")
        if status in (Status.TOO_FEW_POINTS, Status.NONFINITE_INPUT):  # excluded by validation
            raise ValueError(f"the data could not be fitted (gmmjax status: {status.name}).")
        p = res.params
        try:
            prec_chol = _precision_cholesky(np.asarray(p.covariances, dtype), self.covariance_type)
        except (np.linalg.LinAlgError, FloatingPointError):
            raise ValueError(_FAILED_MESSAGE + (_FLOAT32_HINT if dtype == np.float32 else "")) from None
        converged = bool(res.converged)
        if not converged and self.max_iter > 0:
            warnings.warn(_NOT_CONVERGED, ConvergenceWarning, stacklevel=_validate.user_stacklevel())
        n_iter = int(res.n_iter)
        ll = np.asarray(res.trace.log_likelihood)
        self.weights_ = np.asarray(p.weights, dtype)
        self.means_ = np.asarray(p.means, dtype)
        self.covariances_ = np.asarray(p.covariances, dtype)
        self.precisions_cholesky_ = prec_chol
        self.precisions_ = _precisions(prec_chol, self.covariance_type)
        self.converged_ = converged
        self.n_iter_ = n_iter
        self.lower_bounds_ = [float(v) for v in ll[:n_iter]]
        self.lower_bound_ = self.lower_bounds_[-1] if n_iter > 0 else -np.inf
        self.status_ = status
        self.trace_ = Trace(log_likelihood=ll)

    # -- evaluation
    def _density(self, X, what):
        """``what`` ("log_prob" or "proba") of validated X (n_samples, n_features)."""
        dtype = self.means_.dtype
        n = X.shape[0]
        _validate.check_fits_dtype(X, dtype)
        Xp, w = _pad_rows(np.asarray(X, dtype), _bucket(n))
        fn = _log_prob if what == "log_prob" else _predict_proba
        with _precision(dtype):
            params = GMMParams(*(jnp.asarray(a) for a in self._fitted_params()))
            # mask: the padding rows (weight 0), never counted, never warned about
            return np.asarray(fn(params, Xp, covariance_type=self.covariance_type, mask=w > 0))[:n]

    def _checked(self, X):
        check_is_fitted(self)
        return _validate_data(self, X, reset=False)

    def score_samples(self, X):
        """Log density of each sample: (n_samples,)."""
        return self._density(self._checked(X), "log_prob")

    def score(self, X, y=None):
        """Mean log-likelihood of the samples in X (a float)."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X):
        """Responsibilities p(k | x): (n_samples, n_components) (NaN rows, with a
        warning, for points too far from every component for their densities to be
        represented)."""
        return self._density(self._checked(X), "proba")

    def predict(self, X):
        """Most probable component of each sample: (n_samples,) int (-1 for a point too
        far from every component for its density to be represented, with a warning)."""
        return _labels(self.predict_proba(X))

    def bic(self, X):
        """Bayesian information criterion on X (lower is better); scikit-learn's formula."""
        n = _num_samples(X)
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion on X (lower is better); scikit-learn's formula."""
        return -2 * self.score(X) * _num_samples(X) + 2 * self._n_parameters()

    def sample(self, n_samples=1):
        """Draws n_samples points: (X (n_samples, n_features), y (n_samples,) labels).

        Drawn with JAX from a key derived from random_state (an int gives the same
        draw every call, as in scikit-learn); grouped by component like scikit-learn's.
        """
        return _draw(self, n_samples)

    # -- scikit-learn interoperability
    def to_sklearn(self):
        """A ``sklearn.mixture.GaussianMixture`` with these hyperparameters and, if
        fitted, the same fitted attributes (so identical predictions)."""
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        params = self.get_params(deep=False)
        params.pop("dtype")
        params["random_state"] = _seed_for_sklearn(params["random_state"])
        est = SkGaussianMixture(**params)
        if hasattr(self, "converged_"):
            for name in (
                "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
                "converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_",
                "feature_names_in_",
            ):
                if hasattr(self, name):
                    value = getattr(self, name)
                    setattr(est, name, value.copy() if isinstance(value, (np.ndarray, list)) else value)
        return est

    @classmethod
    def from_sklearn(cls, estimator, **params):
        """A gmmjax GaussianMixture from a ``sklearn.mixture.GaussianMixture`` (fitted or
        not): its hyperparameters (overridden by ``params``) and fitted attributes.
        ``trace_`` is None (scikit-learn keeps no final log-likelihood)."""
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        if not isinstance(estimator, SkGaussianMixture):
            raise ValueError(f"expected a sklearn.mixture.GaussianMixture, got {type(estimator).__name__}.")
        hp = estimator.get_params(deep=False)
        hp.update(params)
        est = cls(**hp)
        if hasattr(estimator, "converged_"):
            for name in (
                "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
                "n_features_in_", "feature_names_in_",
            ):
                if hasattr(estimator, name):
                    value = getattr(estimator, name)
                    setattr(est, name, np.array(value) if isinstance(value, np.ndarray) else value)
            est.converged_ = bool(estimator.converged_)
            est.n_iter_ = int(estimator.n_iter_)
            est.lower_bound_ = float(estimator.lower_bound_)
            est.lower_bounds_ = [float(v) for v in getattr(estimator, "lower_bounds_", [])]
            est.status_ = Status.CONVERGED if est.converged_ else Status.MAX_ITER
            est.trace_ = None
        return est

    # -- saving (see _MixtureBase.save / load)
    def _extra_to_file(self, arrays, attributes):
        arrays["lower_bounds_"] = np.asarray(self.lower_bounds_, np.float64)
        if self.trace_ is not None:
            arrays["trace_.log_likelihood"] = np.asarray(self.trace_.log_likelihood)

    def _extra_from_file(self, arrays, attributes):
        self.converged_ = bool(self.converged_)
        self.n_iter_ = int(self.n_iter_)
        self.lower_bound_ = float(self.lower_bound_)
        self.status_ = Status(int(self.status_))
        self.lower_bounds_ = [float(v) for v in arrays["lower_bounds_"]]
        ll = arrays.get("trace_.log_likelihood")
        self.trace_ = None if ll is None else Trace(log_likelihood=ll)


# ---------------------------------------------------------------- many datasets
def _as_batch(Xs, mask, lengths, n_features=None):
    """Datasets as a padded array.

    Returns (X (B, N, D) NumPy float array, valid (B, N) bool, list_lengths): the
    last is the list of dataset lengths for list input (results come back as lists),
    None for array input.
    """
    if isinstance(Xs, (list, tuple)):
        if mask is not None or lengths is not None:
            raise ValueError("mask= and lengths= are for a padded (B, N, D) array; a list needs neither.")
        if len(Xs) == 0:
            raise ValueError("Xs is an empty list: pass at least one dataset.")
        arrays = []
        for i, x in enumerate(Xs):
            if hasattr(x, "toarray") or hasattr(x, "tocsr"):
                raise TypeError("sparse datasets are not supported; pass dense arrays.")
            a = _validate.numeric_array(x, f"dataset {i}")
            if a.ndim != 2:
                raise ValueError(
                    f"dataset {i} must be 2-D (n_samples, n_features), got shape {a.shape}; "
                    "reshape 1-D data with x[:, None]."
                )
            arrays.append(a)
        Ds = {a.shape[1] for a in arrays}
        if len(Ds) != 1:
            raise ValueError(f"all datasets must have the same number of features, got {sorted(Ds)}.")
        lens = [a.shape[0] for a in arrays]
        dtype = np.result_type(*[a.dtype for a in arrays])
        if dtype.kind != "f":
            dtype = np.dtype(np.float64)
        X, valid = pad_arrays(arrays, dtype)
        out_lengths = lens
    else:
        if hasattr(Xs, "toarray") or hasattr(Xs, "tocsr"):
            raise TypeError("sparse input is not supported; pass a dense (B, N, D) array or a list.")
        X = _validate.numeric_array(Xs, "Xs")
        if X.ndim != 3:
            raise ValueError(
                f"Xs must be a padded (B, N, D) array or a list of (n_samples, n_features) arrays; got shape "
                f"{X.shape}. For one dataset use gmmjax.GaussianMixture."
            )
        B, N, _ = X.shape
        if mask is not None and lengths is not None:
            raise ValueError("pass mask= or lengths=, not both.")
        if mask is not None:
            valid = np.asarray(_validate.as_mask(mask, (B, N), "(B, N) = "))
        elif lengths is not None:
            lens = np.asarray(lengths)
            if lens.shape != (B,) or lens.dtype.kind not in "iu" or np.any(lens < 0) or np.any(lens > N):
                raise ValueError(
                    f"lengths must be {B} integers in [0, {N}] (valid points per dataset), got {lengths!r}."
                )
            valid = np.arange(N)[None, :] < lens[:, None]
        else:
            valid = np.ones((B, N), bool)
        if X.dtype.kind != "f":
            X = X.astype(np.float64)
        out_lengths = None
    if X.shape[0] == 0:
        raise ValueError("Xs holds 0 datasets: pass at least one.")
    if X.shape[2] == 0:
        raise ValueError("the datasets have 0 features: pass data of shape (n_samples, n_features >= 1).")
    if n_features is not None and X.shape[2] != n_features:
        raise ValueError(
            f"X has {X.shape[2]} features, but BatchGaussianMixture is expecting {n_features} features as input."
        )
    return X, valid, out_lengths


def _fit_batch_padded(Xp, w, config: EMConfig, **kwargs):
    """`fit_batch` of padded datasets Xp (B, N, D) whose valid points have weight 1 in w
    (B, N): as a list of the valid points in length buckets (`gmmjax._ragged`) where
    buckets pay in this call (datasets of very different lengths), else as one padded
    call. Dataset i is fitted alike either way (its key stays ``split(key, B)[i]``)."""
    valid = w > 0
    restarts = 1 if kwargs.get("init_params") is not None else config.n_init
    if _ragged.plan(valid.sum(axis=1).tolist(), restarts, config, Xp.shape[2]) is None:
        return fit_batch(Xp, config, weights=w, **kwargs)
    return fit_batch([x[v] for x, v in zip(Xp, valid)], config, **kwargs)


class BatchGaussianMixture(_MixtureBase):
    """One Gaussian mixture per dataset, all datasets fitted in one compiled call.

    Same parameters as `GaussianMixture` (shared by all datasets). ``fit`` takes a
    list of (N_i, D) arrays of different lengths, or a padded (B, N, D) array with
    ``mask=`` (B, N) bool or ``lengths=`` (B,) ints. A dataset that cannot be fitted
    (too few points, NaN/inf among its points, a numerical failure) raises nothing: it
    gets a `gmmjax.Status` in ``status_``, and one warning counts all the datasets that
    did not converge cleanly.

    ``n_jobs`` (the one extra parameter): on a CPU, the batch runs as up to this many
    parts at once, as `gmmjax.fit_batch`'s ``n_jobs`` (None: as many parts as cores where
    each has enough work; -1: one per core; 1: one call). It changes speed, not results
    (beyond rounding). With only some of weights_init, means_init and precisions_init
    given, the batch runs as one call.

    Attributes (B = number of datasets):
      weights_ (B, K), means_ (B, K, D), covariances_ (B, ...), precisions_,
      precisions_cholesky_: as GaussianMixture's with a leading dataset axis (NaN for
        datasets whose covariances are unusable).
      converged_ (B,) bool, n_iter_ (B,) int, lower_bound_ (B,) float,
      lower_bounds_: list of B arrays, status_ (B,) int (`gmmjax.Status` values),
      trace_: `Trace` with log_likelihood (B, max_iter + 1), n_datasets_,
      n_features_in_.

    Dataset i is fitted with key ``jax.random.split(key, B)[i]`` where key comes from
    random_state (as in `GaussianMixture`), so it equals
    ``GaussianMixture(random_state=jax.random.split(key, B)[i]).fit(Xs[i])``.

    predict / predict_proba / score_samples take the same kinds of input and return
    a list for a list, or padded arrays for an array (masked entries: NaN, or -1 for
    labels); datasets with status TOO_FEW_POINTS or NONFINITE_INPUT have no model and
    give NaN / -1 too. score, bic and aic return (B,) arrays.

    Example:
      >>> import numpy as np, gmmjax
      >>> rng = np.random.default_rng(0)
      >>> Xs = [rng.normal(size=(n, 2)) for n in (50, 80, 120)]
      >>> bgm = gmmjax.BatchGaussianMixture(n_components=2, random_state=0).fit(Xs)
      >>> bgm.means_.shape, [p.shape for p in bgm.predict(Xs)]
      ((3, 2, 2), [(50,), (80,), (120,)])
    """

    _FITTED = _MixtureBase._FITTED + ("n_samples_",)

    _parameter_constraints: dict = {
        **_MixtureBase._parameter_constraints,
        "n_jobs": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Integral, {-1}), None],
    }

    # scikit-learn reads the hyperparameters from the signature: they are all listed.
    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        dtype=None,
        n_jobs=None,
    ):
        super().__init__(
            n_components, covariance_type=covariance_type, tol=tol, reg_covar=reg_covar, max_iter=max_iter,
            n_init=n_init, init_params=init_params, weights_init=weights_init, means_init=means_init,
            precisions_init=precisions_init, random_state=random_state, warm_start=warm_start, verbose=verbose,
            verbose_interval=verbose_interval, dtype=dtype,
        )
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, Xs, y=None, *, mask=None, lengths=None):
        """Fits one mixture per dataset. Returns self.

        Warns:
          ConvergenceWarning: once, counting the datasets by status, when some
            dataset did not end CONVERGED (MAX_ITER is not counted when max_iter=0).
        """
        X, valid, _ = _as_batch(Xs, mask, lengths)
        B, N, D = X.shape
        do_init = not self._warm()
        dtype = self._compute_dtype(X.dtype, warm=not do_init)
        # (finite values beyond a float32 model's range become inf: NONFINITE_INPUT for
        # that dataset, as for any point the fit cannot compute with)
        Xp = np.zeros((B, _bucket(N), D), dtype)
        Xp[:, :N] = np.where(valid[..., None], X, 0.0)
        w = np.zeros(Xp.shape[:2], dtype)
        w[:, :N] = valid
        with _precision(dtype):
            if do_init:
                inits = _check_init_arrays(self, D, dtype, batch=B)
                # No per-restart report for a batch (verbose prints a summary only),
                # so no per-restart results are kept.
                config = self._config(self.n_init)
                key = _key(self.random_state)
                self._fit_key_ = key  # get_estimator(i) gives dataset i its own key
                if any(a is not None for a in inits):
                    want = (self.n_components, D)
                    inits = tuple(
                        None if a is None else np.broadcast_to(a, (B,) + a.shape[-len(s):]).copy()
                        for a, s in zip(inits, ((self.n_components,), want, self._cov_shape(D)))
                    )
                if all(a is not None for a in inits):
                    res = _fit_batch_padded(Xp, w, config, init_params=GMMParams(*inits), n_jobs=self.n_jobs)
                elif any(a is not None for a in inits):
                    keys = jax.random.split(key, B)
                    res = _fit_partial_batch_jit(jnp.asarray(Xp), jnp.asarray(w), keys, inits, config=config)
                else:
                    res = _fit_batch_padded(Xp, w, config, key=key, n_jobs=self.n_jobs)
            else:
                if self.means_.shape != (B, self.n_components, D) or self.means_.dtype != dtype:
                    raise ValueError(
                        "warm_start=True continues from the previous fit, which has means of shape "
                        f"{self.means_.shape} and dtype {self.means_.dtype}; this fit has {B} datasets, "
                        f"n_components={self.n_components}, {D} features and dtype {dtype}. "
                        "Set warm_start=False to start afresh."
                    )
                self._check_warm_covariances(D, batch=True)
                params, has_model = self._model_params()
                res = jax.device_get(_fit_batch_padded(Xp, w, self._config(1), init_params=params, n_jobs=self.n_jobs))
                if not has_model.all():
                    res = self._refit_afresh(res, Xp, w, np.flatnonzero(~has_model))
            res = jax.device_get(res)
        self._set_result(res, dtype, valid.sum(axis=1))
        self.n_features_in_ = D
        self._print_summary()
        return self

    def _print_summary(self):
        """With verbose: one summary of the batch after the compiled fit (statuses, EM
        iterations; with verbose >= 2 the spread of the final lower bounds too)."""
        if not self.verbose:
            return
        it = self.n_iter_
        line = (f"Fitted {self.n_datasets_} datasets: {status_counts(self.status_)}; "
                f"EM iterations median {np.median(it):g}, max {int(it.max(initial=0))}.")
        lb = self.lower_bound_[np.isfinite(self.lower_bound_)]
        if self.verbose >= 2 and lb.size:
            line += f" Lower bound min {lb.min():.5f}, median {np.median(lb):.5f}, max {lb.max():.5f}."
        print(line)

    def fit_predict(self, Xs, y=None, *, mask=None, lengths=None):
        """Fits, then returns the labels of Xs (a list for a list, else (B, N))."""
        return self.fit(Xs, mask=mask, lengths=lengths).predict(Xs, mask=mask, lengths=lengths)

    def _set_result(self, res, dtype, n_samples):
        status = np.array(res.status, np.int32)  # a copy: raised below where unusable
        B = status.shape[0]
        p = res.params
        cov = np.asarray(p.covariances, dtype)
        try:
            prec_chol = _precision_cholesky(cov, self.covariance_type)
        except (np.linalg.LinAlgError, FloatingPointError):
            prec_chol = np.full_like(cov, np.nan)
            for i in range(B):
                try:
                    prec_chol[i] = _precision_cholesky(cov[i], self.covariance_type)
                except (np.linalg.LinAlgError, FloatingPointError):
                    status[i] = max(status[i], Status.NUMERICAL_FAILURE)
        n_iter = np.asarray(res.n_iter, np.int64)
        ll = np.asarray(res.trace.log_likelihood)
        self.weights_ = np.asarray(p.weights, dtype)
        self.means_ = np.asarray(p.means, dtype)
        self.covariances_ = cov
        self.precisions_cholesky_ = prec_chol
        self.precisions_ = _precisions(prec_chol, self.covariance_type)
        self.converged_ = np.asarray(res.converged, bool)
        self.n_iter_ = n_iter
        self.lower_bounds_ = [ll[i, : n_iter[i]].copy() for i in range(B)]
        self.lower_bound_ = np.where(n_iter > 0, ll[np.arange(B), np.maximum(n_iter - 1, 0)], -np.inf)
        self.status_ = status
        self.trace_ = Trace(log_likelihood=ll)
        self.n_datasets_ = B
        self.n_samples_ = np.asarray(n_samples, np.int64)
        self._warn_statuses()

    def _warn_statuses(self):
        bad = self.status_ != Status.CONVERGED
        if self.max_iter == 0:
            bad &= self.status_ != Status.MAX_ITER
        if np.any(bad):
            counts = status_counts(self.status_[bad])
            warnings.warn(
                f"{int(bad.sum())} of {self.n_datasets_} datasets did not converge cleanly: {counts}. "
                "See status_ (gmmjax.Status): MAX_ITER -> increase max_iter or tol; DEGENERATE or "
                "NUMERICAL_FAILURE -> fewer components, a larger reg_covar, or scaled data; "
                "TOO_FEW_POINTS / NONFINITE_INPUT -> those datasets were not fitted.",
                ConvergenceWarning,
                stacklevel=_validate.user_stacklevel(),
            )

    # -- evaluation
    def _evaluate(self, Xs, mask, lengths, what):
        """(values, usable (B, N), list_lengths): values the responsibilities (B, N, K)
        for ``what`` "proba", else the log densities (B, N)."""
        check_is_fitted(self)
        X, valid, lens = _as_batch(Xs, mask, lengths, n_features=self.n_features_in_)
        B, N, D = X.shape
        if B != self.n_datasets_:
            raise ValueError(f"got {B} datasets, but BatchGaussianMixture was fitted on {self.n_datasets_}.")
        params, has_model = self._model_params()
        usable = valid & has_model[:, None]
        # NaN or inf points of a dataset with a model: an error, as scikit-learn's; a
        # dataset with no model (NONFINITE_INPUT, say) answers NaN / -1 anyway.
        _validate.check_finite_points(X, usable, what="Xs")
        dtype = self.means_.dtype
        _validate.check_fits_dtype(X, dtype, usable, what="Xs")
        Xp = np.zeros((B, _bucket(N), D), dtype)
        Xp[:, :N] = np.where(usable[..., None], X, 0.0)
        fn = _predict_proba if what == "proba" else _log_prob
        with _precision(dtype):
            params = GMMParams(*(jnp.asarray(a) for a in params))
            mask = np.zeros(Xp.shape[:2], bool)
            mask[:, :N] = usable  # padding and datasets without a model: never counted, never warned about
            values = np.asarray(fn(params, Xp, covariance_type=self.covariance_type, mask=mask))[:, :N]
        return values, usable, lens

    def _refit_afresh(self, res, Xp, w, idx):
        """res (on the host) with datasets idx fitted as a cold fit would (their keys,
        n_init restarts): a warm start has no model of theirs to continue from, and
        from a stand-in every component would move alike."""
        keys = self._dataset_keys()[idx]
        fresh = jax.device_get(_fit_batch_padded(Xp[idx], w[idx], self._config(self.n_init), key=keys, n_jobs=self.n_jobs))

        def put(a, b):
            a = np.array(a)
            a[idx] = b
            return a

        return jax.tree_util.tree_map(put, res, fresh)

    def _dataset_keys(self):
        """(B,) keys: dataset i's key of the last cold fit (from random_state if unknown)."""
        key = getattr(self, "_fit_key_", None)
        return jax.random.split(_key(self.random_state) if key is None else key, self.n_datasets_)

    def _has_model(self, rows=slice(None)) -> np.ndarray:
        """bool per dataset of ``rows``: False where a dataset has no usable model (not
        fitted: TOO_FEW_POINTS, NONFINITE_INPUT; covariances with no Cholesky factor, NaN
        precisions; weights all 0, the engine's placeholder)."""
        params = GMMParams(*(a[rows] for a in self._fitted_params()))
        status, prec_chol = self.status_[rows], self.precisions_cholesky_[rows]
        fitted = ~np.isin(status, (Status.TOO_FEW_POINTS, Status.NONFINITE_INPUT))
        finite = np.isfinite(prec_chol.reshape(len(status), -1)).all(axis=1)
        return fitted & finite & _validate.usable_datasets(params, self.covariance_type)

    def _model_params(self):
        """(GMMParams of NumPy arrays, has_model (B,) bool): the fitted parameters, where
        a dataset has no usable model (`_has_model`) a stand-in (equal weights, zero
        means, unit covariances) so that one such dataset never fails a call on the whole
        batch. Its values are masked out of every result."""
        has_model = self._has_model()
        return _validate.with_stand_ins(self._fitted_params(), has_model, self.covariance_type), has_model

    @staticmethod
    def _out(values, usable, fill, lens):
        values = np.where(usable.reshape(usable.shape + (1,) * (values.ndim - 2)), values, fill)
        if lens is None:
            return values
        return [values[i, :n] for i, n in enumerate(lens)]

    def score_samples(self, Xs, *, mask=None, lengths=None):
        """Per-sample log density: a list of (N_i,) arrays, or (B, N) (NaN where masked)."""
        norm, usable, lens = self._evaluate(Xs, mask, lengths, "log_prob")
        return self._out(norm, usable, np.nan, lens)

    def predict_proba(self, Xs, *, mask=None, lengths=None):
        """Responsibilities: a list of (N_i, K) arrays, or (B, N, K) (NaN where masked,
        for a dataset without a model, and for a point too far from every component,
        with a warning)."""
        resp, usable, lens = self._evaluate(Xs, mask, lengths, "proba")
        return self._out(resp, usable, np.nan, lens)

    def predict(self, Xs, *, mask=None, lengths=None):
        """Labels: a list of (N_i,) int arrays, or (B, N) (-1 where masked, for a dataset
        without a model, and for a point too far from every component, with a warning)."""
        resp, usable, lens = self._evaluate(Xs, mask, lengths, "proba")
        return self._out(_labels(resp), usable, -1, lens)

    def score(self, Xs, y=None, *, mask=None, lengths=None):
        """(B,) mean log-likelihood of each dataset (NaN for a dataset with no model)."""
        norm, usable, _ = self._evaluate(Xs, mask, lengths, "log_prob")
        n = usable.sum(axis=1)
        with np.errstate(invalid="ignore"):
            return np.where(n > 0, np.where(usable, norm, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)

    def _criterion(self, Xs, mask, lengths, penalty):
        norm, usable, _ = self._evaluate(Xs, mask, lengths, "log_prob")
        n = usable.sum(axis=1)
        total = np.where(usable, norm, 0.0).sum(axis=1)
        with np.errstate(divide="ignore"):
            return np.where(n > 0, -2.0 * total + penalty(self._n_parameters(), n), np.nan)

    def bic(self, Xs, *, mask=None, lengths=None):
        """(B,) Bayesian information criterion of each dataset (lower is better)."""
        return self._criterion(Xs, mask, lengths, lambda p, n: p * np.log(n))

    def aic(self, Xs, *, mask=None, lengths=None):
        """(B,) Akaike information criterion of each dataset (lower is better)."""
        return self._criterion(Xs, mask, lengths, lambda p, n: 2.0 * p + 0.0 * n)

    def sample(self, n_samples=1):
        """(X (B, n_samples, D), y (B, n_samples)): draws from every dataset's model,
        grouped by component within each dataset (NaN and -1 for a dataset with no model)."""
        check_is_fitted(self)
        params, has_model = self._model_params()
        X, y = _draw(self, n_samples, params)
        X[~has_model], y[~has_model] = np.nan, -1
        return X, y

    # -- one dataset at a time
    def get_estimator(self, i: int) -> GaussianMixture:
        """Dataset i's model as a fitted `GaussianMixture` (same hyperparameters;
        its random_state is dataset i's key). A dataset without a model (status_
        TOO_FEW_POINTS or NONFINITE_INPUT, or a failed fit) raises ValueError."""
        check_is_fitted(self)
        if not _validate._is_int(i):
            raise TypeError(f"dataset index must be an integer, got {i!r} ({type(i).__name__}).")
        if not -self.n_datasets_ <= i < self.n_datasets_:
            raise IndexError(f"dataset index {i!r} out of range for {self.n_datasets_} datasets.")
        i = int(i) % self.n_datasets_
        if not self._has_model(slice(i, i + 1))[0]:
            raise ValueError(
                f"dataset {i} has no model (status {Status(int(self.status_[i])).name}): it was not "
                "fitted, or its fit failed."
            )
        return self._estimator(i, self._dataset_keys()[i])

    def _estimator(self, i: int, key) -> GaussianMixture:
        """`get_estimator`'s estimator of dataset i (checked there), with its key."""
        params = self.get_params(deep=False)
        params.pop("n_jobs")  # one dataset: nothing to split
        params["random_state"] = key
        for name in ("weights_init", "means_init", "precisions_init"):
            a = params[name]
            if a is not None and np.ndim(a) == len(self._init_shape(name)) + 1:
                params[name] = np.asarray(a)[i]
        est = GaussianMixture(**params)
        for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
            setattr(est, name, getattr(self, name)[i].copy())
        est.converged_ = bool(self.converged_[i])
        est.n_iter_ = int(self.n_iter_[i])
        est.lower_bounds_ = [float(v) for v in self.lower_bounds_[i]]
        est.lower_bound_ = float(self.lower_bound_[i])
        est.status_ = Status(int(self.status_[i]))
        est.trace_ = Trace(log_likelihood=self.trace_.log_likelihood[i].copy())
        est.n_features_in_ = self.n_features_in_
        return est

    def _init_shape(self, name):
        D = self.means_.shape[-1]
        return {"weights_init": (self.n_components,), "means_init": (self.n_components, D),
                "precisions_init": self._cov_shape(D)}[name]

    def to_sklearn(self):
        """A list of B fitted ``sklearn.mixture.GaussianMixture``, one per dataset (None,
        with a RuntimeWarning, for a dataset without a model: see `get_estimator`)."""
        check_is_fitted(self)
        has_model = self._has_model()
        if not has_model.all():
            warnings.warn(
                f"{_validate.some_datasets(~has_model)} have no model "
                f"(statuses {status_counts(self.status_[~has_model])}): their entries are None.",
                RuntimeWarning,
                stacklevel=2,
            )
        keys = self._dataset_keys()  # once: get_estimator splits them for every dataset
        return [self._estimator(i, keys[i]).to_sklearn() if ok else None for i, ok in enumerate(has_model)]

    # -- saving (see _MixtureBase.save / load)
    def _extra_to_file(self, arrays, attributes):
        arrays["trace_.log_likelihood"] = np.asarray(self.trace_.log_likelihood)
        key = getattr(self, "_fit_key_", None)
        if key is not None:  # with random_state=None, the only record of the datasets' keys
            attributes["_fit_key_"] = _key_to_file(key, arrays, "_fit_key_")

    def _extra_from_file(self, arrays, attributes):
        ll = arrays["trace_.log_likelihood"]
        if "_fit_key_" in attributes:
            self._fit_key_ = _key_from_file(attributes["_fit_key_"], arrays)
        self.trace_ = Trace(log_likelihood=ll)
        self.n_datasets_ = int(self.status_.shape[0])
        self.lower_bounds_ = [ll[i, : self.n_iter_[i]].copy() for i in range(self.n_datasets_)]
