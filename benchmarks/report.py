"""Writes a benchmark result (the dict built by `benchmarks.run`) as JSON, Markdown and a PNG chart."""

from __future__ import annotations

import json
import math
import os

#: The quality guard of issue 3: gmmjax's median per-dataset LL >= scikit-learn's - this.
QUALITY_GUARD = 1e-3


def fmt_time(t, per_iteration=False):
    if t is None or not math.isfinite(t):
        return "-"
    if per_iteration:
        return f"{t * 1e3:.2f} ms/iter" if t < 1 else f"{t:.2f} s/iter"
    return f"{t * 1e3:.1f} ms" if t < 1 else f"{t:.2f} s"


def _fmt(x, spec):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(result: dict) -> str:
    m = result["meta"]
    lines = [
        f"# gmmjax benchmark: suite `{m['suite']}`{' (quick)' if m['quick'] else ''}",
        "",
        f"- date: {m['date']}",
        f"- command: `{m['command']}`",
        f"- gmmjax: commit {m['git'].get('commit')}"
        + (" with local changes to gmmjax/" if m["git"].get("gmmjax_modified") else "")
        + f" (imported from {m['git'].get('gmmjax_path')})",
        f"- machine: {m['cpu_model']}, {m['cpu_count']} CPUs (os.cpu_count), {m['platform']}",
        f"- JAX devices: {', '.join(m['jax_devices'])} (backend {m['jax_backend']}); torch device: {m.get('torch_device') or '-'}",
        f"- gmmjax dtype: {m['dtype']}; scikit-learn runs float64 with joblib n_jobs={m['n_jobs']}; gmm-gpu and pomegranate float32",
        f"- environment: {', '.join(f'{k}={v}' for k, v in m['env'].items())}",
        f"- BLAS: {m['blas']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v),
        "",
        "| workload | system | time | time / gmmjax time | quality Δ | non-finite | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in result["workloads"]:
        per_it = w["per_iteration"]
        for name, r in w["systems"].items():
            if "skipped" in r:
                lines.append(f"| {w['name']} | {name} | - | - | - | - | skipped: {r['skipped']} |")
                continue
            time_s = fmt_time(r["time_s"], per_it)
            if r.get("extrapolated_from"):
                time_s += f" (extrapolated from {r['extrapolated_from']})"
            ratio = "1 (ref.)" if name == "gmmjax" else (f"{r['ratio']:.1f}x" if r.get("ratio") else "-")
            q = r.get("quality_delta")
            qs = "ref." if name == "sklearn" else _fmt(q, "+.4f")
            if name == "gmmjax" and q is not None and not math.isnan(q):
                qs += " ok" if q >= -QUALITY_GUARD else " **FAIL**"
            notes = list(r.get("notes", []))
            if name == "gmmjax" and r.get("first_call_s") is not None:
                notes.insert(0, f"first call {fmt_time(r['first_call_s'])} (compile + run)")
            if r.get("extra", {}).get("status_counts"):
                notes.append("status " + ", ".join(f"{k} {v}" for k, v in r["extra"]["status_counts"].items()))
            lines.append(
                f"| {w['name']} | {name} | {time_s} | {ratio} | {qs} | {_fmt(r['nonfinite_fraction'], '.3f')} | {'; '.join(notes)} |"
            )
    lines += [
        "",
        "Workloads: " + "; ".join(f"{w['name']}: {w['description']}" for w in result["workloads"]) + ".",
        "",
        "Definitions. *time*: median wall time of warm runs of one call that fits the whole batch "
        "(gmmjax: after a first call that compiles; data already on the device, results synchronised), "
        "or seconds per EM iteration for a per-iteration workload ((t(M2) - t(M1)) / (M2 - M1) at two "
        "fixed iteration counts). *time / gmmjax time* > 1 means gmmjax is faster. *quality Δ*: median "
        "over datasets of the mean per-sample log-likelihood of the system's fitted parameters, minus "
        "scikit-learn's, all scored in float64 by one scorer on the datasets scikit-learn ran; the guard "
        f"(gmmjax) is Δ >= -{QUALITY_GUARD:g}. *non-finite*: fraction of datasets whose fitted parameters "
        "or log-likelihood are NaN or infinite.",
        "",
    ]
    return "\n".join(lines)


def chart(result: dict, path: str) -> None:
    """Bar chart of time / gmmjax time per workload and peer (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loads = [w for w in result["workloads"] if "gmmjax" in w["systems"]]
    ran = {p for w in loads for p, r in w["systems"].items() if p != "gmmjax" and r.get("ratio")}
    peers = [p for w in loads[:1] for p in w["systems"] if p in ran] + sorted(ran - set(loads[0]["systems"]) if loads else ())
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(loads) + 2), 4.5))
    width = 0.8 / max(1, len(peers))
    for j, p in enumerate(peers):
        xs, ys = [], []
        for i, w in enumerate(loads):
            r = w["systems"].get(p, {})
            if r.get("ratio"):
                xs.append(i + (j - (len(peers) - 1) / 2) * width)
                ys.append(r["ratio"])
        bars = ax.bar(xs, ys, width, label=p)
        ax.bar_label(bars, labels=[f"{y:.3g}x" for y in ys], fontsize=8)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(loads)), [w["name"] for w in loads])
    ax.set_ylabel("peer time / gmmjax time (higher: gmmjax faster)")
    m = result["meta"]
    ax.set_title(f"gmmjax speed ratios, suite {m['suite']}, {m['jax_backend']} ({m['date'][:10]})", fontsize=10)
    if peers:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no peer ran", transform=ax.transAxes, ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: str, *, with_chart: bool = True) -> dict:
    """Writes results.json, results.md and speedups.png into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "json": os.path.join(out_dir, "results.json"),
        "markdown": os.path.join(out_dir, "results.md"),
        "chart": os.path.join(out_dir, "speedups.png"),
    }
    with open(paths["json"], "w") as f:
        json.dump(result, f, indent=1, default=_json_default)
    with open(paths["markdown"], "w") as f:
        f.write(markdown(result))
    if with_chart:
        chart(result, paths["chart"])
    return paths


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
