"""Smoke test of the benchmark runner (benchmarks/run.py) on tiny sizes.

Nothing here measures time: it checks that the runner writes its JSON, Markdown and
chart with the expected rows, that a peer that does not import becomes a note, and
that the one scorer every system is judged by agrees with SciPy.
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import multivariate_normal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` run without the repo root on the path
    sys.path.insert(0, str(ROOT))

from benchmarks import peers, workloads  # noqa: E402
from benchmarks import run as bench_run  # noqa: E402


def test_quick_suite_writes_json_markdown_and_chart(tmp_path):
    bench_run.main(["--suite", "cpu", "--quick", "--only", "W1,W4", "--jobs", "1", "--out", str(tmp_path)])

    data = json.loads((tmp_path / "results.json").read_text())
    meta = data["meta"]
    assert meta["suite"] == "cpu" and meta["quick"] is True
    assert "--suite cpu" in meta["command"]
    assert meta["versions"]["jax"] and meta["versions"]["numpy"] and meta["versions"]["scikit-learn"]
    assert meta["jax_devices"] and meta["cpu_count"] >= 1
    assert {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} <= set(meta["env"])
    assert "commit" in meta["git"]

    names = [w["name"] for w in data["workloads"]]
    assert names == ["W1-quick", "W4-quick"]
    for w in data["workloads"]:
        assert set(w["systems"]) == set(bench_run.SYSTEMS)
        for name in ("gmmjax", "sklearn"):
            r = w["systems"][name]
            assert "skipped" not in r, r
            assert r["time_s"] is not None and r["nonfinite_fraction"] is not None
            assert r["median_ll"] is not None and math.isfinite(r["median_ll"])
        assert w["systems"]["gmmjax"]["quality_delta"] is not None
        assert w["systems"]["gmmjax"]["nonfinite_fraction"] == 0.0
        assert isinstance(w["quality_guard_ok"], bool)
        for name in ("gmm-gpu", "pomegranate"):  # ran, or skipped with a reason
            r = w["systems"][name]
            assert r.get("skipped") or r["time_s"] is not None
    w1 = data["workloads"][0]
    assert w1["systems"]["sklearn"]["extrapolated_from"] == "B=4 of 6"
    assert w1["systems"]["gmmjax"]["first_call_s"] is not None
    assert w1["systems"]["gmmjax"]["extra"]["status_counts"]

    md = (tmp_path / "results.md").read_text()
    for name in names:
        for system in bench_run.SYSTEMS:
            assert f"| {name} | {system} |" in md
    assert "extrapolated from B=4 of 6" in md
    assert (tmp_path / "speedups.png").stat().st_size > 0


def test_a_peer_that_does_not_import_is_a_note(tmp_path, monkeypatch):
    real = peers.available

    def fake(name):
        return (False, f"{name} not importable (test)") if name != "gmmjax" else real(name)

    monkeypatch.setattr(peers, "available", fake)
    bench_run.main(["--suite", "cpu", "--quick", "--only", "W4", "--jobs", "1", "--out", str(tmp_path)])
    w = json.loads((tmp_path / "results.json").read_text())["workloads"][0]
    assert w["systems"]["sklearn"] == {"skipped": "sklearn not importable (test)"}
    assert "skipped" not in w["systems"]["gmmjax"]
    assert w["systems"]["gmmjax"]["quality_delta"] is None  # no reference without scikit-learn
    assert "skipped: pomegranate not importable (test)" in (tmp_path / "results.md").read_text()


def test_scorer_matches_scipy_and_flags_bad_parameters():
    rng = np.random.default_rng(0)
    B, N, D, K = 3, 50, 2, 2
    X = rng.normal(size=(B, N, D))
    weights = rng.dirichlet([1.0] * K, size=B)
    means = rng.normal(size=(B, K, D))
    A = rng.normal(size=(B, K, D, D))
    cov = A @ np.swapaxes(A, -1, -2) + 0.5 * np.eye(D)
    ll = peers.mean_loglik(X, weights, means, cov)
    for b in range(B):
        dens = sum(weights[b, k] * multivariate_normal(means[b, k], cov[b, k]).pdf(X[b]) for k in range(K))
        assert ll[b] == pytest.approx(np.mean(np.log(dens)), rel=1e-10)
    P = np.swapaxes(np.linalg.inv(np.linalg.cholesky(cov)), -1, -2)
    np.testing.assert_allclose(peers.mean_loglik(X, weights, means, prec_chol=P), ll, rtol=1e-10)

    cov_bad = cov.copy()
    cov_bad[1, 0] = -np.eye(D)  # not positive definite
    means_bad = means.copy()
    means_bad[2, 1, 0] = np.nan
    bad = peers.mean_loglik(X, weights, means_bad, cov_bad)
    assert bad[0] == pytest.approx(ll[0]) and np.isnan(bad[1]) and np.isnan(bad[2])


def test_smaller_workloads_are_prefixes_of_larger_ones():
    small = dataclasses.replace(workloads.W3, B=3, N=40)
    big = dataclasses.replace(small, B=11)
    np.testing.assert_array_equal(workloads.make_data(big)[:3], workloads.make_data(small))
    w4 = dataclasses.replace(workloads.W4, N=1_000, D=3, K=4)
    X = workloads.make_data(w4)
    assert X.shape == (1, 1_000, 3) and np.all(np.isfinite(X))
    np.testing.assert_array_equal(workloads.make_data(dataclasses.replace(w4, N=600)), X[:, :600])
