"""The data that flows through gmmjax: parameters, configuration, results, statuses.

Array shapes use scikit-learn's names: K = n_components, D = n_features,
N = n_samples, T = max_iter + 1 (trace length), B = number of datasets.
Functions in `gmmjax._fit` add a leading B axis to every leaf of a FitResult.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import NamedTuple, Optional

import jax

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
INITS = ("kmeans++", "kmeans", "random", "random_from_data")
TRACES = (None, "loglik", "params")

#: Value held by ``Trace.log_likelihood`` past ``n_iter`` (and everywhere for a dataset
#: that could not be fitted). ``-inf`` rather than NaN so that `jax_debug_nans` stays
#: quiet and ``max`` / ``argmax`` treat it as the worst value.
TRACE_FILL = -math.inf


class GMMParams(NamedTuple):
    """Parameters of one Gaussian mixture (a pytree).

    Attributes:
      weights: (K,) mixing weights, summing to one (all 0 in a fit result of a dataset
        that has no model: not fitted, or a failure that left nothing finite).
      means: (K, D) component means.
      covariances: full (K, D, D), diag (K, D), spherical (K,), tied (D, D),
        as in scikit-learn's ``covariances_``.

    Under `fit_batch` every leaf has a leading (B,) axis; inside `Trace.params`
    a leading (T,) axis follows it.
    """

    weights: jax.Array
    means: jax.Array
    covariances: jax.Array


class Status(enum.IntEnum):
    """Outcome of one fit, one value per dataset (an int32 array in FitResult.status).

    Ordered by severity: larger values are worse.
    """

    #: |LL_t - LL_{t-1}| < tol was reached.
    CONVERGED = 0
    #: max_iter EM iterations ran without meeting tol (scikit-learn's ConvergenceWarning).
    MAX_ITER = 1
    #: Finished, but some component collapsed: its smallest covariance eigenvalue is
    #: held up only by reg_covar (constant data, duplicated points, an empty component).
    DEGENERATE = 2
    #: EM produced a non-finite value; the last finite parameters are returned.
    NUMERICAL_FAILURE = 3
    #: Fewer valid (unmasked, positive-weight) points than components; not fitted.
    TOO_FEW_POINTS = 4
    #: NaN or inf among the valid points; not fitted.
    NONFINITE_INPUT = 5


@dataclasses.dataclass(frozen=True)
class EMConfig:
    """Static, hashable settings of an EM fit (pass as a static jit argument).

    Args:
      n_components: K, the number of mixture components (>= 1).
      covariance_type: "full", "diag", "spherical" or "tied" (scikit-learn's meaning).
      n_init: number of random restarts run in parallel. The one kept has the highest
        log-likelihood among the restarts that neither failed nor collapsed (a
        DEGENERATE restart is kept only when every restart collapsed or failed).
      init: "kmeans++" (greedy k-means++ seeds, every point assigned to its nearest
        seed), "kmeans" (the same seeds, then Lloyd iterations), "random" (random
        responsibilities, as scikit-learn) or "random_from_data" (K distinct data
        points chosen uniformly as seeds, every point assigned to its nearest seed).
      max_iter: maximum number of EM iterations (>= 0).
      tol: stop when the mean per-sample log-likelihood changes by less than tol
        between two iterations (absolute, as scikit-learn).
      reg_covar: non-negative value added to the diagonal of every covariance.
      trace: None, "loglik" (per-iteration log-likelihood) or "params" (also a
        snapshot of the parameters at every iteration, for the animation module).
      keep_restarts: also return every restart's result (and trace) in
        ``FitResult.restarts``, to see why the best one won.
    """

    n_components: int
    covariance_type: str = "full"
    n_init: int = 1
    init: str = "kmeans++"
    max_iter: int = 100
    tol: float = 1e-3
    reg_covar: float = 1e-6
    trace: Optional[str] = "loglik"
    keep_restarts: bool = False

    def __post_init__(self):
        from gmmjax._validate import check_config

        check_config(self)


class Trace(NamedTuple):
    """Per-iteration record of one fit, in fixed-size buffers.

    Attributes:
      log_likelihood: (T,) entry t is the mean per-sample log-likelihood of the
        parameters after t EM iterations (t = 0: the initial guess); entries past
        ``n_iter`` hold `TRACE_FILL` (-inf).
      params: with ``trace="params"``, a GMMParams whose leaves have a leading (T,)
        axis: the parameters after t iterations. Entries past ``n_iter`` repeat the
        final parameters, so a plot of any frame shows a valid mixture. Else None.
    """

    log_likelihood: jax.Array
    params: Optional[GMMParams] = None


class FitResult(NamedTuple):
    """Result of `fit` (one dataset) or `fit_batch` (a leading (B,) axis on every leaf).

    Attributes:
      params: GMMParams of the best restart (always finite).
      log_likelihood: () mean per-sample log-likelihood of ``params`` on the data;
        -inf when the dataset could not be fitted (TOO_FEW_POINTS, NONFINITE_INPUT).
      n_iter: () int32, EM iterations run by the best restart.
      converged: () bool, whether the best restart met tol.
      status: () int32, a `Status` value.
      trace: a `Trace` of the best restart, or None when ``config.trace`` is None.
      restarts: with ``config.keep_restarts``, a FitResult of every restart (a leading
        (n_init,) axis after any batch axis; its own ``restarts`` is None), else None.
    """

    params: GMMParams
    log_likelihood: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    status: jax.Array
    trace: Optional[Trace]
    restarts: Optional["FitResult"] = None
