"""The command line (`gmmjax demo`) and the example scripts run and write their files."""

import os
import pathlib
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from gmmjax.__main__ import main  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [e.get("PYTHONPATH")] if p])
    e["MPLBACKEND"] = "Agg"
    return e


def test_demo_out_writes_one_animation_per_k_and_the_final_fits(tmp_path, capsys):
    assert main(["demo", "--components", "2", "--n-init", "2", "--out", str(tmp_path / "pics")]) == 0
    printed = capsys.readouterr().out
    assert "K = 2: status" in printed  # the table is still there
    gif, png = tmp_path / "pics" / "demo_k2.gif", tmp_path / "pics" / "demo_fits.png"
    assert str(gif) in printed and str(png) in printed
    n_iter = int(printed.split("K = 2: status")[1].split(",")[1].split()[0])
    with Image.open(gif) as im:
        assert im.n_frames == min(n_iter + 1, 60)  # every iteration, 0 included
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_demo_without_out_prints_the_table_only():
    # In a fresh process: without --out the command line never imports matplotlib.
    code = (
        "import sys\n"
        "from gmmjax.__main__ import main\n"
        "assert main(['demo', '--components', '1', '--n-init', '1']) == 0\n"
        "assert 'matplotlib' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "K = 1: status CONVERGED" in done.stdout and "wrote" not in done.stdout


EXAMPLES = {
    # script: (arguments that keep it small, files it writes)
    "uniform_demo.py": (["--max-frames", "2"],
                        ["uniform_k3.gif", "uniform_k6.gif", "uniform_k6_restarts.gif", "uniform_fits.png"]),
    "ellipses_2d.py": (["--max-frames", "2"], ["ellipses_2d.gif", "ellipses_2d_restarts.gif", "ellipses_2d.png"]),
    "many_datasets.py": (["--n-datasets", "50", "--max-frames", "2"],
                         ["many_datasets_summary.png", "many_datasets_first9.gif"]),
}


def test_examples_run_as_is(tmp_path):
    # All three at once: each spends most of its time compiling, one core each.
    runs = {}
    for script, (args, _) in EXAMPLES.items():
        out = tmp_path / script.removesuffix(".py")
        cmd = [sys.executable, "-W", "error", str(ROOT / "examples" / script), str(out), *args]
        runs[script] = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for script, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script} failed:\n{stderr}"
        out = tmp_path / script.removesuffix(".py")
        for name in EXAMPLES[script][1]:
            assert (out / name).is_file(), (script, name)
            assert f"wrote {out / name}" in stdout
        for gif in out.glob("*.gif"):
            with Image.open(gif) as im:
                assert im.n_frames == 2, gif


@pytest.mark.parametrize("argv, says", [
    (["demo", "--out"], "expected one argument"),
    (["demo", "--n-init", "0x"], "--n-init: must be an integer >= 1, got '0x'"),  # not "invalid _positive_int value"
    (["demo", "--seed", "99999999999999999999999"], "--seed: must be an integer in [0, 2**32)"),  # was an OverflowError
    (["demo", "--components", "3", "150"], "--components: at most the 100 samples, got 150"),  # was 150 placeholder rows
    (["demo", "--out", ""], "--out: must be a folder, got an empty path"),  # was the current folder, silently
])
def test_demo_rejects_bad_arguments(argv, says, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage" in err and says in err


def test_demo_out_that_cannot_be_a_folder_fails_before_fitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("gmmjax.__main__.run_demo", lambda args: pytest.fail("fitted first"))
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "file")])
    assert e.value.code == 2 and "--out: cannot write into" in capsys.readouterr().err



def test_demo_out_without_matplotlib_says_what_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["demo", "--components", "1", "--out", str(tmp_path)]) == 1
    assert "pip install 'gmmjax[plot]'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--components", "0"], ["--n-init", "0"], ["--components", "x"]])
def test_demo_bad_numbers_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", *args])
    assert exit_.value.code == 2 and "error: argument" in capsys.readouterr().err
