"""gmmjax.animation: what each frame draws equals the trace snapshot of its iteration.

Oracles: gmmjax.log_prob / predict_proba for the 1-D curves, the eigen-decomposition
(and the ellipse equation itself) for the 2-D ellipses, an independent SVD for the
projection of D > 2. Files are checked by opening them (PIL for GIF frame counts).
"""

import re
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import matplotlib.animation as mpl_animation  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import animation  # noqa: E402
from plotting_data import (  # noqa: E402, F401
    BATCH_CONFIG,
    MAX_ITER,
    batch_data,
    by_gid,
    fit_1d,
    fit_2d,
)

COV_TYPES = ("full", "diag", "spherical", "tied")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def drawn(anim):
    """Renders the animation once (its first frame), as a display would."""
    anim.figure.canvas.draw()
    return anim


def snapshot(result, t):
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[t], result.trace.params)


def as_type(result, covariance_type):
    """The fit with its full covariances reduced to another type's shape.

    Valid parameters of that type (diagonals, their mean, the mean matrix), without
    compiling a fit per type: the plotting code only reads the parameters.
    """

    def convert(p):
        c = np.asarray(p.covariances)  # (..., K, D, D)
        d = np.diagonal(c, axis1=-2, axis2=-1)
        c = {"full": c, "diag": d, "spherical": d.mean(axis=-1), "tied": c.mean(axis=-3)}[covariance_type]
        return p._replace(covariances=c)

    trace = result.trace._replace(params=convert(result.trace.params))
    return result._replace(params=convert(result.params), trace=trace, restarts=None)


def test_import_gmmjax_does_not_import_matplotlib():
    code = (
        "import sys, gmmjax, gmmjax.__main__\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'PIL'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_density_frames_are_the_trace_snapshots(fit_1d, covariance_type):
    X, res = fit_1d
    res = as_type(res, covariance_type)
    anim = drawn(animation.animate(res, X, covariance_type=covariance_type, max_frames=4))
    assert anim.iterations.tolist() == [0, 2, 4, 6]
    (ax,) = anim.axes
    mixture = by_gid(ax.lines, "mixture")
    for f, t in enumerate(anim.iterations):
        anim.set_frame(f)
        p = snapshot(res, t)
        x = mixture.get_xdata()
        density = np.exp(np.asarray(gmmjax.log_prob(p, x, covariance_type=covariance_type)))
        np.testing.assert_allclose(mixture.get_ydata(), density, rtol=1e-9, atol=1e-300)
        # Each dashed curve is w_k N(x | mu_k, var_k) = p(k | x) p(x).
        resp = np.asarray(gmmjax.predict_proba(p, x, covariance_type=covariance_type))
        for k in range(3):
            comp = by_gid(ax.lines, f"component-{k}")
            np.testing.assert_allclose(comp.get_ydata(), resp[:, k] * density, rtol=1e-7, atol=1e-12)
        text = by_gid(ax.texts, "status").get_text()
        assert f"EM iteration {t} of {MAX_ITER}" in text
        assert f"{float(res.trace.log_likelihood[t]):.4f}" in text


def to_full(c, covariance_type, K, D):
    """(K, D, D) covariance matrices from scikit-learn's per-type shapes (written out here, not imported)."""
    if covariance_type == "full":
        return c
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    if covariance_type == "spherical":
        return np.stack([v * np.eye(D) for v in c])
    return np.stack([c] * K)  # tied


def ellipse_points(e):
    """Points of the outline of an Ellipse patch in data coordinates."""
    theta = np.linspace(0, 2 * np.pi, 13)
    return e.get_patch_transform().transform(np.c_[np.cos(theta), np.sin(theta)])  # the unit circle, mapped


def check_ellipses(ax, means2, covs2, K):
    """Ellipses of the axes are the 1 and 2 sd contours of (K, 2) means, (K, 2, 2) covariances."""
    for k in range(K):
        vals, vecs = np.linalg.eigh(covs2[k])
        for n in (1, 2):
            e = by_gid(ax.patches, f"ellipse-{k}-{n}sd")
            np.testing.assert_allclose(e.get_center(), means2[k], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(e.get_width(), 2 * n * np.sqrt(vals[1]), rtol=1e-9)
            np.testing.assert_allclose(e.get_height(), 2 * n * np.sqrt(vals[0]), rtol=1e-9)
            if vals[1] > vals[0] * (1 + 1e-6):  # a circle has no orientation
                major = np.array([np.cos(np.radians(e.get_angle())), np.sin(np.radians(e.get_angle()))])
                np.testing.assert_allclose(abs(major @ vecs[:, 1]), 1.0, rtol=1e-9)
            # Every point of the outline is at Mahalanobis distance n from the mean.
            d = ellipse_points(e) - means2[k]
            maha = np.einsum("pi,ij,pj->p", d, np.linalg.inv(covs2[k]), d)
            np.testing.assert_allclose(maha, n**2, rtol=1e-6)
        marker = by_gid(ax.lines, f"mean-{k}")
        np.testing.assert_allclose(np.ravel(marker.get_xydata()), means2[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_ellipse_frames_are_the_trace_snapshots(fit_2d, covariance_type):
    X, res = fit_2d
    res = as_type(res, covariance_type)
    anim = drawn(animation.animate(res, X, covariance_type=covariance_type, max_frames=3))
    (ax,) = anim.axes
    assert anim.iterations.tolist() == [0, 3, 6]
    for f, t in enumerate(anim.iterations):
        anim.set_frame(f)
        p = snapshot(res, t)
        covs = to_full(p.covariances, covariance_type, K=3, D=2)
        check_ellipses(ax, p.means, covs, 3)
        trail = by_gid(ax.lines, "trail-0")
        assert len(trail.get_xdata()) == f + 1  # the path of the mean up to this frame


def lift_to_3d(X, res):
    """A 3-D dataset and fit from a 2-D one: z = (x, a.x + noise), every snapshot moved along.

    If x has mean m and covariance C, z has mean (m, a.m) and covariance
    [[C, C a], [a^T C, a^T C a + s^2]]: valid 3-D parameters without compiling a 3-D fit.
    """
    a, s2 = np.array([0.8, -0.5]), 0.3
    X3 = np.c_[X, X @ a + np.random.default_rng(2).normal(scale=np.sqrt(s2), size=len(X))]

    def lift(p):
        m, C = np.asarray(p.means), np.asarray(p.covariances)
        Ca = C @ a
        top = np.concatenate([C, Ca[..., None]], axis=-1)
        bottom = np.concatenate([Ca, (Ca @ a + s2)[..., None]], axis=-1)[..., None, :]
        return p._replace(means=np.concatenate([m, (m @ a)[..., None]], axis=-1),
                          covariances=np.concatenate([top, bottom], axis=-2))

    return X3, res._replace(params=lift(res.params), trace=res.trace._replace(params=lift(res.trace.params)))


def test_three_features_are_drawn_on_the_principal_axes(fit_2d):
    X, res = lift_to_3d(*fit_2d)
    anim = drawn(animation.animate(res, X, max_frames=3))
    (ax,) = anim.axes
    # The basis the plot used, recovered from the drawn points, is X's top-2 principal axes.
    offsets = np.asarray(by_gid(ax.collections, "points").get_offsets())
    centred = X - X.mean(axis=0)
    basis = np.linalg.lstsq(centred, offsets, rcond=None)[0]  # (3, 2)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(np.sum(basis * vt[:2].T, axis=0)), 1.0, rtol=1e-9)
    assert ax.get_xlabel().startswith("principal axis 1")
    for f, t in enumerate(anim.iterations):
        anim.set_frame(f)
        p = snapshot(res, t)
        check_ellipses(ax, (p.means - X.mean(axis=0)) @ basis, basis.T @ p.covariances @ basis, 3)


def test_named_features_are_drawn_as_they_are(fit_2d):
    X, res = lift_to_3d(*fit_2d)
    anim = drawn(animation.animate(res, X, max_frames=2, features=(2, 0), loglik_panel=False))
    (ax,) = anim.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("feature 2", "feature 0")
    anim.set_frame(1)
    p = snapshot(res, MAX_ITER)
    idx = np.array([2, 0])
    check_ellipses(ax, p.means[:, idx], p.covariances[:, idx][:, :, idx], 3)
    with pytest.raises(ValueError, match="two different indices"):
        animation.animate(res, X, features=(1, 1))


def test_artists_are_created_once_and_updated_in_place(fit_1d):
    X, res = fit_1d
    anim = drawn(animation.animate(res, X, max_frames=MAX_ITER + 1))
    axes = [*anim.axes, anim.loglik_axes]
    counts = [(len(a.lines), len(a.patches), len(a.texts), len(a.collections)) for a in axes]
    mixture = by_gid(anim.axes[0].lines, "mixture")
    for f in range(len(anim.iterations)):
        changed = anim.set_frame(f)
        assert all(a.get_animated() for a in changed)  # blitted, never drawn into the background
        anim.figure.canvas.draw()
    assert [(len(a.lines), len(a.patches), len(a.texts), len(a.collections)) for a in axes] == counts
    assert by_gid(anim.axes[0].lines, "mixture") is mixture
    # The side panel shows the log-likelihood curve up to the current iteration.
    curve = by_gid(anim.loglik_axes.lines, "loglik-0")
    np.testing.assert_allclose(curve.get_ydata(), np.asarray(res.trace.log_likelihood)[: MAX_ITER + 1])


def test_frames_are_subsampled_keeping_both_ends(fit_1d):
    X, res = fit_1d
    anim = drawn(animation.animate(res, X, max_frames=4, loglik_panel=False))
    its = anim.iterations
    assert len(its) == 4 and its[0] == 0 and its[-1] == int(res.n_iter) == MAX_ITER
    assert np.all(np.diff(its) > 0)
    assert anim.loglik_axes is None
    with pytest.raises(ValueError, match="max_frames"):
        animation.animate(res, X, max_frames=1)
    with pytest.raises(IndexError):
        anim.set_frame(4)


def test_error_without_trace_params(fit_1d):
    X, res = fit_1d
    for trace in (None, gmmjax.Trace(res.trace.log_likelihood)):  # trace=None, trace="loglik"
        with pytest.raises(ValueError, match=r"EMConfig\(trace='params'\)"):
            animation.animate(res._replace(trace=trace), X)
        with pytest.raises(ValueError, match=r"EMConfig\(trace='params'\)"):
            animation.animate_restarts(res._replace(restarts=res.restarts._replace(trace=trace)), X)


def test_errors_for_wrong_inputs(fit_1d):
    X, res = fit_1d
    with pytest.raises(ValueError, match="covariance_type"):
        animation.animate(res, X, covariance_type="diag")  # (K, 1, 1) is not diag's (K, 1)
    with pytest.raises(ValueError, match="features"):
        animation.animate(res, np.c_[X, X])
    no_restarts = res._replace(restarts=None)
    with pytest.raises(ValueError, match="keep_restarts=True"):
        animation.animate_restarts(no_restarts, X)
    batched = jax.tree_util.tree_map(lambda a: a[None], res._replace(restarts=None))
    with pytest.raises(ValueError, match="animate_batch"):
        animation.animate(batched, X)
    with pytest.raises(ValueError, match="fit_batch"):
        animation.animate_batch(res, [X])


def test_restarts_side_by_side_mark_the_kept_one(fit_1d):
    X, res = fit_1d
    anim = drawn(animation.animate_restarts(res, X, max_frames=3))
    lls = np.asarray(res.restarts.log_likelihood)
    best = int(np.argmax(lls))
    assert len(anim.axes) == 3
    assert [("(best)" in ax.get_title()) for ax in anim.axes] == [i == best for i in range(3)]
    anim.set_frame(len(anim.iterations) - 1)
    for i, ax in enumerate(anim.axes):
        p = jax.tree_util.tree_map(lambda a: a[i], res.restarts.params)
        mixture = by_gid(ax.lines, "mixture")
        want = np.exp(np.asarray(gmmjax.log_prob(p, mixture.get_xdata())))
        np.testing.assert_allclose(mixture.get_ydata(), want, rtol=1e-9)
    # The marked restart is the one fit kept.
    best_curve = by_gid(anim.axes[best].lines, "mixture").get_ydata()
    np.testing.assert_allclose(best_curve, np.exp(np.asarray(gmmjax.log_prob(res.params, by_gid(
        anim.axes[best].lines, "mixture").get_xdata()))), rtol=1e-9)
    assert len([ln for ln in anim.loglik_axes.lines if ln.get_gid().startswith("loglik-") and "dot" not in
                ln.get_gid()]) == 3


def test_batch_grid_from_a_list_and_from_a_padded_array():
    Xs = batch_data()
    res = gmmjax.fit_batch(Xs, BATCH_CONFIG, key=jax.random.key(0))
    anim = drawn(animation.animate_batch(res, Xs, n=5, max_frames=3))
    assert len(anim.axes) == 5
    anim.set_frame(2)
    for i, ax in enumerate(anim.axes):
        p = jax.tree_util.tree_map(lambda a: a[i], res.params)
        mixture = by_gid(ax.lines, "mixture")
        if i < 3:
            want = np.exp(np.asarray(gmmjax.log_prob(p, mixture.get_xdata())))
            np.testing.assert_allclose(mixture.get_ydata(), want, rtol=1e-9)
        else:  # not fitted: no mixture (weights all 0), not a unit Gaussian drawn as a fit
            assert np.all(mixture.get_ydata() == 0)
        assert gmmjax.Status(int(res.status[i])).name in ax.get_title()
    assert "NONFINITE_INPUT" in anim.axes[3].get_title() and "TOO_FEW_POINTS" in anim.axes[4].get_title()
    padded = np.full((5, 60), np.nan)
    mask = np.zeros((5, 60), bool)
    for i, x in enumerate(Xs):
        padded[i, : len(x)], mask[i, : len(x)] = x, True
    anim2 = drawn(animation.animate_batch(res, padded, mask=mask, n=3, max_frames=3))
    assert len(anim2.axes) == 3
    anim2.set_frame(2)
    for a, b in zip(anim.axes, anim2.axes):
        np.testing.assert_array_equal(by_gid(a.lines, "mixture").get_ydata(), by_gid(b.lines, "mixture").get_ydata())


def test_gif_has_one_frame_per_iteration_shown(fit_1d, tmp_path):
    X, res = fit_1d
    anim = animation.animate(res, X, max_frames=5, figsize=(5, 3))
    path = animation.save(anim, tmp_path / "fit.gif", fps=4, dpi=40)
    assert path == tmp_path / "fit.gif"
    with Image.open(path) as im:
        assert im.n_frames == 5 == len(anim.iterations)
        assert im.info["duration"] == 250  # 4 frames per second


def test_html_embeds_every_frame(fit_1d, tmp_path):
    X, res = fit_1d
    anim = animation.animate(res, X, max_frames=3, figsize=(5, 3), loglik_panel=False)
    path = animation.save(anim, tmp_path / "sub" / "fit.html", dpi=40)
    html = path.read_text()
    assert len(re.findall(r'frames\[\d+\] = "data:image/png;base64,', html)) == 3
    assert "new Array(3)" in html


def test_mp4_without_ffmpeg_and_unknown_formats_say_what_to_do(fit_1d, tmp_path, monkeypatch):
    X, res = fit_1d
    anim = drawn(animation.animate(res, X, max_frames=2))
    monkeypatch.setattr(mpl_animation.writers, "is_available", lambda name: False)
    with pytest.raises(RuntimeError, match="'ffmpeg' writer"):
        animation.save(anim, tmp_path / "fit.mp4")
    with pytest.raises(ValueError, match=r"\.gif.*\.html.*\.mp4"):
        animation.save(anim, tmp_path / "fit.avi")
    for dpi in (0, -1, float("nan")):  # once matplotlib's IndexError
        with pytest.raises(ValueError, match="dpi must be a positive number"):
            animation.save(anim, tmp_path / "fit.gif", dpi=dpi)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a.gif").mkdir()  # once Pillow's IsADirectoryError
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        animation.save(anim, tmp_path / "a.gif")


def test_restart_marked_best_is_the_one_fit_keeps():
    """The pictures use the engine's own rule, DEGENERATE demotion included."""
    from gmmjax import _plotting

    Xs = np.random.default_rng(0).normal(size=(40, 25))
    res = gmmjax.fit_batch(Xs, gmmjax.EMConfig(3, n_init=4, keep_restarts=True), key=jax.random.key(0))
    for i in range(40):
        one = jax.tree_util.tree_map(lambda a: a[i], res)
        b = _plotting.best_restart(one.restarts)
        assert float(one.restarts.log_likelihood[b]) == float(one.log_likelihood)
        assert int(one.restarts.status[b]) == int(one.status)
