"""The PNG plots of an ``iplap bench`` report, one function per plot (:func:`plot` draws all three).

Each takes the report (the dict :func:`~.bench.run_bench` writes as ``results.json``, with
:class:`~.grid.Skipped` for measurements not made) and the output folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..calibration.recipe import MIN_GATE_PSNR_DB
from .grid import ORIGINAL_REFS, STAGES, Skipped

#: PSNR above this (float rounding only) is drawn at it.
PSNR_CAP_DB = 70.0


def plot(report: dict, out_dir: Path) -> None:
    """accuracy_vs_time.png, stages.png and time_vs_refs.png in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    plot_accuracy_vs_time(report, out_dir)
    plot_stages(report, out_dir)
    plot_time_vs_refs(report, out_dir)


def _measured(report: dict) -> list[dict]:
    return [r for r in report["results"] if not r["error"]]


def _series_name(case: dict, threads: bool) -> str:
    name = f" ({case['name']})" if case.get("name") else ""
    return f"{case['backend']} {case['precision']}{name}" + (f" t={case['threads']}" if threads else "")


def plot_accuracy_vs_time(report: dict, out_dir: Path) -> None:
    """Accuracy against time per frame, against fp32 at the same N (left) and against the
    original configuration (right): one colour per backend and precision, one marker per N."""
    import matplotlib.pyplot as plt

    ok = _measured(report)
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharex=True)
    palette = plt.get_cmap("tab20")
    colours: dict[str, str] = {}
    markers = dict(zip(sorted({r["case"]["refs"] for r in ok}), "osD^v<>p"))
    panels = ((axes[0], "psnr", "identical", "vs fp32 at the same N: the loss from precision"),
              (axes[1], "psnr_vs_original", "identical_to_original",
               f"vs the original configuration (N={ORIGINAL_REFS} fp32): what a setting gives up"))
    several_threads = len(report["config"]["threads"]) > 1
    for ax, key, identical, title in panels:
        for r in ok:
            colour = colours.setdefault(_series_name(r["case"], several_threads), palette(len(colours) % 20))
            if r[key] is None and not r[identical]:
                continue  # no accuracy measured (no reference)
            y = PSNR_CAP_DB if r[identical] or r[key] >= PSNR_CAP_DB else r[key]
            ax.scatter(r["seconds_per_frame"], y, s=50, color=colour, marker=markers[r["case"]["refs"]], zorder=3)
        _accuracy_axes(ax, report, [r[key] - 2 for r in ok if r[key] is not None], title)
    front = _mark_recommendation(axes[1], report.get("recommendation") or {})
    handles = [plt.Line2D([], [], color=col, marker="o", ls="", label=name) for name, col in colours.items()]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=f"N={n}") for n, m in markers.items()]
    if front:
        handles.append(plt.Line2D([], [], color="black", lw=0.8, alpha=0.6, label="Pareto front"))
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against speed (up and left is better)")
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy_vs_time.png", dpi=120)
    plt.close(fig)


def _accuracy_axes(ax, report: dict, low: list[float], title: str) -> None:
    """The torch baselines, the calibration gate, the limits and the labels of one panel."""
    cap = PSNR_CAP_DB
    baseline = report["torch_baseline"]
    if not isinstance(baseline, Skipped):
        for n, b in baseline.items():
            if "error" not in b:
                ax.axvline(b["seconds_per_frame"], color="black", lw=0.8, ls=":")
                ax.annotate(f"torch N={n}", (b["seconds_per_frame"], cap + 1.5), fontsize=7, ha="right",
                            rotation=90, va="bottom")
    ax.axhline(MIN_GATE_PSNR_DB, color="grey", lw=0.8, ls="--")
    ax.annotate(f"calibration gate ({MIN_GATE_PSNR_DB:g} dB)", (0, MIN_GATE_PSNR_DB),
                xycoords=("axes fraction", "data"), fontsize=7, va="bottom", color="grey", xytext=(3, 2),
                textcoords="offset points")
    ax.set_ylim(min([30.0, *low]), cap + 8)
    ax.set_xlabel("seconds per frame (median)")
    ax.set_ylabel(f"worst-frame face PSNR (dB; >= {cap:.0f} drawn at {cap:.0f})")
    ax.set_title(title, fontsize=10)


def _mark_recommendation(ax, recommendation: dict) -> list[dict]:
    """The Pareto front (a staircase), the budget and the recommended setting; the front."""
    cap = PSNR_CAP_DB
    front = recommendation.get("front") or []
    if front:
        xs = [o["seconds_per_frame"] for o in front]
        ys = [cap if o["identical_to_original"] else min(o["psnr_vs_original"], cap) for o in front]
        ax.step(xs, ys, where="post", color="black", lw=0.8, alpha=0.6, label="Pareto front")
    if recommendation.get("budget_seconds_per_frame"):
        ax.axvline(recommendation["budget_seconds_per_frame"], color="red", lw=0.8, ls="--")
    if recommendation.get("choice"):
        choice = recommendation["choice"]
        y = cap if choice["identical_to_original"] else min(choice["psnr_vs_original"], cap)
        ax.scatter(choice["seconds_per_frame"], y, s=220, facecolors="none", edgecolors="red", zorder=4)
        ax.annotate("recommended", (choice["seconds_per_frame"], y), fontsize=8, color="red",
                    xytext=(8, -12), textcoords="offset points")
    return front


def plot_stages(report: dict, out_dir: Path) -> None:
    """Where the time of a frame goes, per configuration: one stacked bar each."""
    import matplotlib.pyplot as plt

    ok = _measured(report)
    fig, ax = plt.subplots(figsize=(9, 0.45 * max(3, len(ok)) + 1.5))
    left = np.zeros(len(ok))
    for stage in STAGES:
        values = np.array([r["stages"].get(stage, 0.0) for r in ok])
        ax.barh([r["label"] for r in ok], values, left=left, label=stage)
        left += values
    ax.set_xlabel("seconds per frame")
    ax.legend(fontsize=7, ncols=4, loc="lower right")
    ax.set_title("Where the time goes")
    fig.tight_layout()
    fig.savefig(out_dir / "stages.png", dpi=120)
    plt.close(fig)


def plot_time_vs_refs(report: dict, out_dir: Path) -> None:
    """Time per frame against N: one line per backend, precision and thread count, and torch's."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list] = {}
    for r in _measured(report):
        c = r["case"]
        series.setdefault(_series_name(c, True), []).append((c["refs"], r["seconds_per_frame"]))
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    baseline = report["torch_baseline"]
    if not isinstance(baseline, Skipped):
        points = sorted((int(n), b["seconds_per_frame"]) for n, b in baseline.items() if "error" not in b)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="s", ls="--", color="black",
                    label="torch original")
    ax.set_xlabel("references N")
    ax.set_ylabel("seconds per frame")
    ax.legend(fontsize=8)
    ax.set_title("Time per frame against N")
    fig.tight_layout()
    fig.savefig(out_dir / "time_vs_refs.png", dpi=120)
    plt.close(fig)
