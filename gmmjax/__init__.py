"""gmmjax: Gaussian mixture models fitted with EM in JAX, one dataset or many at once."""

from gmmjax._density import log_prob, predict, predict_proba, sample
from gmmjax._fit import fit, fit_batch, status_counts
from gmmjax._types import TRACE_FILL, EMConfig, FitResult, GMMParams, Status, Trace

__version__ = "0.1.0"

__all__ = [
    "EMConfig",
    "FitResult",
    "GMMParams",
    "Status",
    "TRACE_FILL",
    "Trace",
    "fit",
    "fit_batch",
    "log_prob",
    "predict",
    "predict_proba",
    "sample",
    "status_counts",
]
