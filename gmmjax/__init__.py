"""gmmjax: Gaussian mixture models fitted with EM in JAX, one dataset or many at once."""

from gmmjax._density import log_prob, predict, predict_proba, sample
from gmmjax._fit import fit, fit_batch, status_counts
from gmmjax._types import TRACE_FILL, EMConfig, FitResult, GMMParams, Status, Trace
from gmmjax._io import load_params, save_params
from gmmjax._select import Selection, aic, bic, icl, select_n_components

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
    "Selection",
    "aic",
    "bic",
    "icl",
    "load_params",
    "save_params",
    "select_n_components",
]

# The scikit-learn estimators live in gmmjax.sklearn, which needs scikit-learn; they are
# imported on first use (module __getattr__, PEP 562) so that `import gmmjax` works
# without it. They join __all__ only when scikit-learn is installed, so that
# `from gmmjax import *` works either way.
_SKLEARN_NAMES = ("BatchGaussianMixture", "GaussianMixture")


def _have_sklearn() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("sklearn") is not None
    except (ImportError, ValueError, AttributeError):
        return False


if _have_sklearn():
    __all__ += list(_SKLEARN_NAMES)


# The picture modules need matplotlib: `gmmjax.plot` and `gmmjax.animation` import it
# on first attribute access, never at `import gmmjax`.
_LAZY_MODULES = ("animation", "plot")


def __getattr__(name):
    if name in _SKLEARN_NAMES:
        from gmmjax import sklearn as _sklearn  # raises ImportError saying what to install

        return getattr(_sklearn, name)
    if name in _LAZY_MODULES:
        import importlib

        return importlib.import_module(f"gmmjax.{name}")
    raise AttributeError(f"module 'gmmjax' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SKLEARN_NAMES) | set(_LAZY_MODULES))
