"""gmmjax.plot: static figures draw what the result holds.

The fitted curve is compared with gmmjax.log_prob, the trace curve with the trace, the
criterion lines with the scores of a stand-in selection result, the batch summary with
counts computed here.
"""

from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import gmmjax  # noqa: E402
from gmmjax import plot  # noqa: E402
from plotting_data import MAX_ITER, by_gid, fit_1d, fit_2d, fit_batch  # noqa: E402, F401

@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_fit_1d_draws_the_final_mixture(fit_1d):
    X, res = fit_1d
    fig, ax = plt.subplots()
    assert plot.fit(res, X, ax=ax) is ax
    mixture = by_gid(ax.lines, "mixture")
    want = np.exp(np.asarray(gmmjax.log_prob(res.params, mixture.get_xdata())))
    np.testing.assert_allclose(mixture.get_ydata(), want, rtol=1e-9)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x", "density")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["data (histogram)", "mixture density", "weighted components"]
    assert f"{float(res.log_likelihood):.4f}" in ax.get_title()
    # A chosen iteration of the trace, or bare parameters.
    ax2 = plot.fit(res, X, iteration=2)
    mixture = by_gid(ax2.lines, "mixture")
    p2 = jax.tree_util.tree_map(lambda a: a[2], res.trace.params)
    np.testing.assert_allclose(mixture.get_ydata(), np.exp(np.asarray(gmmjax.log_prob(p2, mixture.get_xdata()))),
                               rtol=1e-9)
    ax3 = plot.fit(res.params, X)
    np.testing.assert_array_equal(by_gid(ax3.lines, "mixture").get_ydata(), by_gid(ax.lines, "mixture").get_ydata())
    # Weights all 0 (a result without a model): the legend names only the data.
    ax4 = plot.fit(res.params._replace(weights=np.zeros_like(res.params.weights)), X)
    assert [t.get_text() for t in ax4.get_legend().get_texts()] == ["data (histogram)"]
    with pytest.raises(ValueError, match="iteration"):
        plot.fit(res, X, iteration=MAX_ITER + 1)


def test_fit_2d_colours_points_by_component_and_draws_final_ellipses(fit_2d):
    X, res = fit_2d
    ax = plot.fit(res, X, colors=["red", "green", "blue"])
    labels = np.asarray(gmmjax.predict(res.params, X))
    rgba = by_gid(ax.collections, "points").get_facecolors()
    want = matplotlib.colors.to_rgba_array(np.array(["red", "green", "blue"])[labels])
    np.testing.assert_allclose(rgba[:, :3], want[:, :3])
    for k in range(3):
        vals = np.linalg.eigvalsh(np.asarray(res.params.covariances[k]))
        e = by_gid(ax.patches, f"ellipse-{k}-2sd")
        np.testing.assert_allclose(e.get_center(), np.asarray(res.params.means[k]), rtol=1e-9)
        np.testing.assert_allclose([e.get_width(), e.get_height()], 4 * np.sqrt(vals[::-1]), rtol=1e-9)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("feature 0", "feature 1")
    with pytest.raises(ValueError, match="covariance_type"):
        plot.fit(res, X, covariance_type="tied")


def test_loglik_draws_the_trace_and_every_restart(fit_1d):
    X, res = fit_1d
    ax = plot.loglik(res)
    curve = by_gid(ax.lines, "loglik")
    np.testing.assert_allclose(curve.get_ydata(), np.asarray(res.trace.log_likelihood)[: MAX_ITER + 1])
    np.testing.assert_array_equal(curve.get_xdata(), np.arange(MAX_ITER + 1))
    for i in range(3):
        r = by_gid(ax.lines, f"restart-{i}")
        np.testing.assert_allclose(r.get_ydata(), np.asarray(res.restarts.trace.log_likelihood[i]))
    assert ax.get_xlabel() == "EM iteration" and ax.get_ylabel() == "mean log-likelihood"
    assert len(plot.loglik(res, restarts=False).lines) == 1
    with pytest.raises(ValueError, match="trace='loglik'"):
        plot.loglik(res._replace(trace=None))


def test_loglik_of_a_batch_draws_one_curve_per_dataset(fit_batch):
    _, res = fit_batch
    ax = plot.loglik(res, n=2)
    assert len(ax.lines) == 2
    np.testing.assert_allclose(by_gid(ax.lines, "loglik-1").get_ydata(),
                               np.asarray(res.trace.log_likelihood[1])[: int(res.n_iter[1]) + 1])


class Selection(NamedTuple):
    """A stand-in for the model-selection result (read by field name only)."""

    ks: np.ndarray
    covariance_types: tuple
    criterion: str
    scores: np.ndarray
    n_components: object


KS = np.array([1, 2, 3, 4, 5])
TYPES = ("full", "diag", "spherical")
SCORES = np.array([[900.0, 950, 1000], [600, 640, 700], [520, 500, 560], [530, 515, np.inf], [560, 540, 580]])


def test_criterion_draws_a_line_per_covariance_type_and_marks_the_best():
    ax = plot.criterion(Selection(KS, TYPES, "bic", SCORES, 3))
    for j, ct in enumerate(TYPES):
        line = by_gid(ax.lines, f"criterion-{ct}")
        np.testing.assert_array_equal(line.get_xdata(), KS)
        want = np.where(np.isfinite(SCORES[:, j]), SCORES[:, j], np.nan)  # failed fits are left out
        np.testing.assert_array_equal(line.get_ydata(), want)
    best = by_gid(ax.lines, "best")
    assert (best.get_xdata()[0], best.get_ydata()[0]) == (3, 500.0)  # the smallest BIC
    assert by_gid(ax.lines, "chosen").get_xdata()[0] == 3
    assert ax.get_ylabel() == "BIC (lower is better)" and ax.get_xlabel() == "number of components K"
    # The chosen covariance type, where the result has one, is named too.
    class WithType(NamedTuple):
        ks: np.ndarray
        covariance_types: tuple
        criterion: str
        scores: np.ndarray
        n_components: object
        covariance_type: object

    ax = plot.criterion(WithType(KS, TYPES, "bic", np.stack([SCORES] * 2), np.array([3, 4]), np.array(["diag", "full"])),
                        dataset=1)
    assert by_gid(ax.lines, "chosen").get_label() == "chosen K = 4, full"
    # A log-likelihood is better when larger.
    ax = plot.criterion(Selection(KS, TYPES, "loglik", -SCORES, 2))
    assert by_gid(ax.lines, "best").get_ydata()[0] == -500.0


def test_criterion_of_a_batch_draws_the_median_or_one_dataset():
    scores = np.stack([SCORES, SCORES + 10, SCORES + 40])
    sel = Selection(KS, TYPES, "aic", scores, np.array([3, 2, 3]))
    ax = plot.criterion(sel)
    np.testing.assert_array_equal(by_gid(ax.lines, "criterion-full").get_ydata(), SCORES[:, 0] + 10)
    assert by_gid(ax.lines, "chosen").get_xdata()[0] == 3  # the most frequent K
    assert len(ax.collections) == 3  # a 25-75% band per covariance type
    fig, ax = plt.subplots()
    assert plot.criterion(sel, ax=ax, dataset=1) is ax
    np.testing.assert_array_equal(by_gid(ax.lines, "criterion-diag").get_ydata(), SCORES[:, 1] + 10)
    assert by_gid(ax.lines, "chosen").get_xdata()[0] == 2
    # Failed fits (+inf) count as the worst score: every K's median is over all datasets
    # (they were left out, and K = 1's median, over 4 datasets with a tiny dataset's
    # -100, was compared with medians over 3 at other Ks); most fits failed: not drawn.
    tiny = np.full_like(SCORES, np.inf)
    tiny[0] = -100.0
    four = np.stack([SCORES, SCORES + 10, SCORES + 40, tiny])
    ax = plot.criterion(Selection(KS, TYPES, "bic", four, np.array([3, 3, 3, 1])))
    want = np.median(np.where(np.isinf(four), np.inf, four), axis=0)[:, 0]  # 4 datasets: mean of the middle two
    np.testing.assert_array_equal(by_gid(ax.lines, "criterion-full").get_ydata(), want)
    assert np.isnan(by_gid(ax.lines, "criterion-spherical").get_ydata()[3])  # every fit failed at K = 4
    with pytest.raises(ValueError, match="shape"):
        plot.criterion(Selection(KS, TYPES, "bic", SCORES[:, :2], 3))
    with pytest.raises(ValueError, match="n_components"):
        plot.criterion(KS)


@pytest.mark.parametrize("bins", [0, -3, 2.5])
def test_batch_summary_bad_bins(fit_batch, bins):
    with pytest.raises(ValueError, match="bins must be an integer >= 1"):
        plot.batch_summary(fit_batch[1], bins=bins)


def test_batch_summary_counts_what_the_batch_holds(fit_batch):
    _, res = fit_batch
    fig = plot.batch_summary(res)
    a_iter, a_ll, a_status = fig.axes
    assert sum(p.get_height() for p in a_iter.patches) == 5
    finite = np.isfinite(np.asarray(res.log_likelihood))
    assert sum(p.get_height() for p in a_ll.patches) == finite.sum() == 3
    assert "2 not finite" in a_ll.get_title()
    counts = {t.get_text(): p.get_width() for t, p in zip(a_status.get_yticklabels(), a_status.patches)}
    assert counts == {s.name: gmmjax.status_counts(res.status).get(s.name, 0) for s in gmmjax.Status}
    assert counts["NONFINITE_INPUT"] == counts["TOO_FEW_POINTS"] == 1
    # Into the caller's axes.
    fig2, axes = plt.subplots(3, 1)
    assert plot.batch_summary(res, axes=axes) is fig2
    with pytest.raises(ValueError, match="3 Axes"):
        plot.batch_summary(res, axes=axes[:2])
    with pytest.raises(ValueError, match="fit_batch"):
        plot.batch_summary(jax.tree_util.tree_map(lambda a: a[0], res))


def test_limits_of_constant_data_and_of_an_ellipse_far_wider_than_the_data():
    """Constant 2-D data (a DEGENERATE fit: components of width sqrt(reg_covar)) got
    limits of 1 +- 3e-13 around ellipses 1e10 times as wide, and drawing the figure
    never finished; so did an ellipse 1e12 times as wide as the data."""
    X = np.ones((50, 2))
    tiny = gmmjax.GMMParams(np.array([0.5, 0.5]), np.ones((2, 2)), np.stack([np.eye(2) * 1e-6] * 2))
    ax = plot.fit(tiny, X)
    ax.figure.canvas.draw()  # finishes
    e = by_gid(ax.patches, "ellipse-0-2sd")
    assert e.get_visible() and np.isclose(e.get_width(), 4e-3)
    for lo, hi in (ax.get_xlim(), ax.get_ylim()):  # the whole 2-sd ellipse, and not much more
        assert lo <= 1 - 2e-3 and hi >= 1 + 2e-3 and hi - lo < 0.01
    plt.close(ax.figure)
    X = np.random.default_rng(0).normal(size=(50, 2))
    huge = gmmjax.GMMParams(np.array([0.5, 0.5]), np.array([[0.0, 0.0], [1.0, 1.0]]), np.stack([np.eye(2), np.eye(2) * 1e24]))
    ax = plot.fit(huge, X)
    ax.figure.canvas.draw()  # finishes
    assert by_gid(ax.patches, "ellipse-0-2sd").get_visible() and by_gid(ax.lines, "mean-1").get_visible()
    assert not by_gid(ax.patches, "ellipse-1-1sd").get_visible()  # 2e12 wide: nothing of it in view
    assert max(np.abs(ax.get_xlim()).max(), np.abs(ax.get_ylim()).max()) < 10
    plt.close(ax.figure)


def test_component_slots_with_zero_weight_are_not_drawn(fit_2d):
    # Model selection over a batch pads each dataset's mixture to max(ks) slots of weight 0.
    X, res = fit_2d
    p = res.params
    w = np.asarray(p.weights).copy()
    w[1] = 0.0
    w /= w.sum()
    ax = plot.fit(p._replace(weights=w), X)
    assert [by_gid(ax.patches, f"ellipse-{k}-1sd").get_visible() for k in range(3)] == [True, False, True]
    labels = np.asarray(gmmjax.predict(p._replace(weights=w), X))
    assert 1 not in labels
    # Weights all 0 (a result without a model: not fitted) draw no mixture and colour no
    # point by component; predict on them raises, and plot.fit once did too.
    ax = plot.fit(p._replace(weights=np.zeros(3)), X, colors=["red", "green", "blue"])
    assert not any(by_gid(ax.patches, f"ellipse-{k}-1sd").get_visible() for k in range(3))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data"]  # no means or ellipses named
    rgba = by_gid(ax.collections, "points").get_facecolors()
    assert len(np.unique(rgba, axis=0)) == 1  # one colour for every point
