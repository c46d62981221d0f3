"""``results.md``: the tables of an ``iplap bench`` report (:func:`markdown`).

The report is the dict :func:`~.bench.run_bench` writes as ``results.json``, before JSON:
a measurement that was not made is a :class:`~.grid.Skipped` there.
"""

from __future__ import annotations

import math

from ..limits import BACKENDS
from ..runtime.reports import FUSED_STAGES, RENDERER_STAGES
from .grid import STAGES, Skipped


def fmt(value, spec: str, none: str = "n/a") -> str:
    """A figure of a table; ``none`` for one that was not measured (None, or NaN: failed)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def _psnr_cell(identical: bool, psnr, exact: str = "exact") -> str:
    return exact if identical else fmt(psnr, ".1f")


def machine_line(machine: dict) -> str:
    """The machine a report was measured on: CPU, cores, instruction sets, the backends' versions."""
    versions = ", ".join(f"{b} {machine['packages'].get(b)}" for b in BACKENDS)  # each backend is its package
    sets = " ".join(machine["instruction_sets"])
    return f"Machine: {machine.get('cpu', '?')}, {machine['cores']} cores, {sets}; {versions}.\n"


def markdown(report: dict) -> str:
    lines = ["# iplap bench\n"]
    if report.get("command"):
        lines += ["```bash", report["command"], "```\n"]
    lines.append(machine_line(report["machine"]))
    original = report["original"]
    original_label = None if isinstance(original, Skipped) else original["label"]
    lines += ["Time per rendered frame: median [min-max] over the timed frames of all rounds (in each round every "
              "configuration runs once, in a fresh process). Accuracy, worst frame, of the 128x128 face "
              "(PSNR, SSIM) and of the landmarks (px of a 128 px crop): **vs fp32** against the fp32 exact path at "
              "the same N (onnxruntime), the loss from precision alone; **vs original** against the original "
              f"configuration ({original_label or 'not measured: ' + str(original)}) on the same inputs, "
              "the loss from a lower N and from precision together.\n",
              "| configuration | s/frame | vs torch | first frame s | prepare s | peak RSS MB | PSNR dB vs fp32 "
              "| SSIM vs fp32 | PSNR dB vs original | SSIM vs original | landmarks max/mean px |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["error"]:
            lines.append(f"| {r['label']} | failed: {r['error']} |||||||||| ")
            continue
        lines.append(
            f"| {r['label']} | {fmt(r['seconds_per_frame'], '.3f')} [{fmt(r['seconds_min'], '.3f')}-"
            f"{fmt(r['seconds_max'], '.3f')}] | {fmt(r['speedup_vs_torch'], '.2f')}x | "
            f"{fmt(r['first_frame_seconds'], '.2f')} | {fmt(r['prepare_seconds'], '.1f')} | "
            f"{fmt(r['peak_rss_mb'], '.0f')} | {_psnr_cell(r['identical'], r['psnr'])} | {fmt(r['ssim'], '.4f')} | "
            f"{_psnr_cell(r['identical_to_original'], r['psnr_vs_original'])} | "
            f"{fmt(r['ssim_vs_original'], '.4f')} | "
            f"{fmt(r['landmark_max_px'], '.3f')} / {fmt(r['landmark_mean_px'], '.3f')} |")
    if not isinstance(original, Skipped) and original["measured_apart"]:
        lines.append(f"\nThe original configuration ({original['label']}) was rendered apart, once, for its faces.")
    lines.append(_torch_line(report["torch_baseline"]))
    lines += _ceiling_lines(report)
    lines += _scaling_lines(report)
    lines.append("\n## Stages (median s per rendered frame)\n")
    lines.append("| configuration | " + " | ".join(STAGES) + " |")
    lines.append("|---|" + "---|" * len(STAGES))
    for r in report["results"]:
        if not r["error"]:
            lines.append(f"| {r['label']} | " + " | ".join(fmt(r['stages'].get(s), '.3f') for s in STAGES) + " |")
    from .recommend import describe

    lines += ["\n## Recommendation\n", *describe(report["recommendation"])]
    return "\n".join(lines) + "\n"


def _torch_line(baseline: dict | Skipped) -> str:
    if isinstance(baseline, Skipped):
        return f"\nOriginal torch renderer: {baseline}."
    threads = next((b["threads"] for b in baseline.values() if "threads" in b), "?")
    return (f"\nOriginal torch renderer (whole flow network per reference per frame, {threads} threads; "
            "**vs torch** compares the configurations with as many threads with it): " + ", ".join(
                f"N={n}: {b['seconds_per_frame']:.2f} s/frame" if "error" not in b else f"N={n}: failed ({b['error']})"
                for n, b in baseline.items()) + ".")


def _ceiling_lines(report: dict) -> list[str]:
    ceiling = report["ceiling"]
    lines = ["\n## The machine's ceiling\n"]
    if isinstance(ceiling, Skipped) or "error" in ceiling:
        return lines + [f"Convolution ceiling: {ceiling if isinstance(ceiling, Skipped) else ceiling['error']}."]
    cfg = ceiling["config"]
    stacks = cfg.get("stacks") or {"conv": cfg["stack"]}
    gmacs = cfg.get("block_gmac") or {"conv": cfg["gmac"]}
    lines += ["Stacks: " + "; ".join(f"**{b}**, {stacks[b]}, {gmacs[b]:.2f} GMAC per run" for b in stacks)
              + " (the SPADE block: the renderer's convolutions with their share of its float work); quantized as "
              "the bundles are; GMAC/s "
              f"from the fastest of {cfg['repeats']} runs (median in brackets), all configurations taking turns; "
              "measured before the grid and again after it, the faster of the two counts. Sustained: the best of "
              f"{cfg.get('windows', 0)} windows of {cfg.get('window_seconds', 0):g} s of runs back to back.\n",
              "| stack | backend | precision | threads | ms per run: fastest (median) | GMAC/s: fastest (median) | "
              "GMAC/s sustained | measured |",
              "|---|---|---|---|---|---|---|---|"]
    for e in ceiling["results"]:
        lines.append(f"| {e.get('block', 'conv')} | {e['backend']} | {e['precision']} | {e['threads']} | {e['seconds_min'] * 1e3:.1f} "
                     f"({e['seconds'] * 1e3:.1f}) | {e['gmac_per_s']:.1f} ({e['gmac'] / e['seconds']:.1f}) | "
                     f"{fmt(e.get('sustained_gmac_per_s'), '.1f')} | {e.get('when', '')} the grid |")
    gmac = report["graph_gmac"]
    if isinstance(gmac, Skipped):
        return lines + [f"\nRenderer graphs against the ceiling: {gmac}."]
    lines += ["\nEach renderer graph per frame: GMAC (its convolutions' and matrix products' multiply-adds; "
              f"flow_head: {gmac['flow_head']:.2f} per reference, times the distinct references U), GMAC/s from its "
              "fastest frame, and in brackets its share of the ceiling (fastest run) at the same backend, precision "
              "and thread count: of the plain stack / of the SPADE block. "
              + "; ".join(f"{stage}: {' + '.join(graphs)} run as one model (OpenVINO's fused flow)"
                          for stage, graphs in FUSED_STAGES.items()) + ".\n",
              "| configuration | U | " + " | ".join(f"{g} GMAC | {g} GMAC/s (share)" for g in RENDERER_STAGES) + " |",
              "|---|---|" + "---|---|" * len(RENDERER_STAGES)]
    for r in report["results"]:
        if r["error"] or not r.get("graphs"):
            continue
        cells = []
        for g in RENDERER_STAGES:
            e = r["graphs"].get(g) or {"gmac": 0.0, "gmac_per_s": None, "share_of_ceiling": None}
            share = f" ({e['share_of_ceiling']:.0%}" if e["share_of_ceiling"] is not None else ""
            if share and e.get("share_of_block_ceiling") is not None:
                share += f" / {e['share_of_block_ceiling']:.0%}"
            share += ")" if share else ""
            cells.append(f"{e['gmac']:.1f} | {fmt(e['gmac_per_s'], '.1f')}{share}")
        lines.append(f"| {r['label']} | {r['distinct_refs']} | " + " | ".join(cells) + " |")
    return lines


def _scaling_lines(report: dict) -> list[str]:
    rows = report["thread_scaling"]
    if not rows:
        return []
    keys = ("frame", *RENDERER_STAGES, "warp")
    lines = ["\n## Thread scaling\n",
             "Speed-up of the fastest frame with more threads, and in brackets the efficiency (speed-up divided "
             "by the ratio of threads; 100% is perfect scaling).\n",
             "| setting | threads | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]['speedup']:.2f}x ({row[k]['efficiency']:.0%})" if row.get(k) else "n/a" for k in keys]
        lines.append(f"| {row['setting']} | {row['threads'][0]} -> {row['threads'][1]} | " + " | ".join(cells) + " |")
    return lines
