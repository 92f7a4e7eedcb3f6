"""The engine never waits on itself: a batch with many 16x16 covariances finishes, and so do two fits at once.

jaxlib's batched LAPACK kernels on a CPU wait for their own tasks on the thread pool
they run on. Two large ones at once (a D=16, K=32 fit with restarts had two triangular
solves side by side in its EM loop) blocked both threads of a 2-core machine for good:
three calls below hung 3 times out of 3 before the precision Cholesky was written out
(`gmmjax._covariance.WRITTEN_OUT_MAX_D`). Run in a subprocess, so a hang fails the test
instead of stalling the suite.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, gmmjax
    X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 1500, 16)), jnp.float32)
    cfg = gmmjax.EMConfig(n_components=32, n_init=5, max_iter=3, trace=None)
    for i in range(3):
        res = gmmjax.fit_batch(X, cfg, key=jax.random.key(i), chunk_size=2)
        assert np.all(np.isfinite(np.asarray(res.log_likelihood)))
    print("done")
    """
)


def test_a_batch_of_16_feature_fits_with_restarts_finishes():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("done")


THREADS_SCRIPT = textwrap.dedent(
    """
    import threading, jax, jax.numpy as jnp, numpy as np, gmmjax
    rng = np.random.default_rng(0)
    parts = [jnp.asarray(rng.normal(size=(20, 2000, 8)) * rng.uniform(0.5, 2, size=(20, 1, 8)) + 3 * rng.normal(size=(20, 1, 8)), jnp.float32) for _ in range(2)]
    cfg = gmmjax.EMConfig(n_components=5, n_init=5, trace=None)
    for p in parts:  # compiled before the threads start
        gmmjax.fit_batch(p, cfg, key=jax.random.key(0)).status.block_until_ready()
    for i in range(8):
        out = [None, None]
        def run(j):
            out[j] = np.asarray(gmmjax.fit_batch(parts[j], cfg, key=jax.random.key(i)).log_likelihood)
        threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert all(np.all(np.isfinite(o)) for o in out)
    print("done")
    """
)


def test_two_fits_at_once_in_one_process_finish():
    """Two Python threads fitting 8-feature batches at once: each fit's collapse check
    (eigenvalues of every covariance) hung both with LAPACK's batched eigh, now Jacobi
    rotations on a CPU (`gmmjax._covariance._jacobi_eigvalsh`)."""
    out = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("done")
