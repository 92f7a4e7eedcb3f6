"""float64 data never silently becomes float32; the picture modules load lazily."""

import subprocess
import sys

CODE = """
import warnings, numpy as np, jax, gmmjax
X = np.random.default_rng(0).normal(size=(50, 2))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = gmmjax.fit(X, gmmjax.EMConfig(2, max_iter=3), key=jax.random.key(0))
    res32 = gmmjax.fit(X.astype(np.float32), gmmjax.EMConfig(2, max_iter=3), key=jax.random.key(0))
msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
assert res.params.means.dtype == np.float32
assert len(msgs) == 1 and "64-bit mode is off" in msgs[0], msgs
# float64 parameters (say, loaded from a file) are computed in float32 too, and said so:
# the density functions and criteria once did it silently.
p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res32.params)
X32 = X.astype(np.float32)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    lp = gmmjax.log_prob(p64, X32)
    gmmjax.bic(p64, X32)
msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
assert lp.dtype == np.float32 and len(msgs) == 2 and all("64-bit mode is off" in m for m in msgs), msgs
# float64 data and float64 starting parameters: one warning for the call, not two.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    gmmjax.fit(X, gmmjax.EMConfig(2, max_iter=3), init_params=p64)
msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
assert len(msgs) == 1, msgs
# Python lists of floats are no float64 arrays: no warning (JAX reads them so too).
with warnings.catch_warnings():
    warnings.simplefilter("error")
    gmmjax.log_prob(gmmjax.GMMParams([0.5, 0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]]), [[0.5]])
print("ok")
"""


def _run_ok(code):
    """Runs code in a fresh Python (JAX's default config, no test set-up): prints ok."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_float64_downcast_warns_when_x64_is_off():
    _run_ok(CODE)


def test_plot_and_animation_are_lazy_attributes():
    code = (
        "import sys, gmmjax; assert 'matplotlib' not in sys.modules; "
        "import matplotlib; matplotlib.use('Agg'); "
        "assert gmmjax.plot.fit and gmmjax.animation.animate; print('ok')"
    )
    _run_ok(code)


def test_float64_weights_alone_do_not_warn():
    code = (
        "import warnings, numpy as np, jax, gmmjax\n"
        "X = np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32)\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('error')\n"
        "    gmmjax.fit(X, gmmjax.EMConfig(2, max_iter=3), key=jax.random.key(0), weights=np.ones(50))\n"
        "print('ok')\n"
    )
    _run_ok(code)
