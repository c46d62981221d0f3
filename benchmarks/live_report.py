"""``live.md``: the tables of an ``iplap bench --live`` report (:func:`live_markdown`).

The report is the dict :func:`~.live.run_live_bench` writes as ``live.json``, before JSON:
a measurement that was not made is a :class:`~.grid.Skipped` there.
"""

from __future__ import annotations

import math

from ..runtime.constants import FPS
from .grid import STAGES, Skipped
from .report import fmt, machine_line

#: What the columns of the results table mean.
LEGEND = (
    "**fps**: pictures per second of a live turn rendered without a clock, every stage included, from the "
    "fastest round (median over all frames in brackets). **ceiling fps**: the renderer graphs' GMAC per frame "
    "over the convolution ceiling of the same backend, precision and threads, the best of its measurements "
    "before the grid, around each round and after the grid: burst (its fastest single run) / sustained (its "
    "best window of runs back to back, as long as a round here; see the ceiling below). **share**: fps / "
    "ceiling fps, burst / sustained. **SPADE block**: the same against the ceiling of the renderer's own block "
    "(each convolution with its share of instance norm, modulation and LeakyReLU; measured as the plain stack "
    "is): what the backend makes of the float work that the renderer's convolutions carry. **same phase**: each "
    "round's fps against its own configuration's sustained ceiling measured right before and right after it "
    "(the faster of the two): median over the rounds (best round in brackets), the share of what the machine "
    "did at the time (noisy round by round, but not set against a burst the round never saw); then the same "
    "against the SPADE block's windows. **latency**: first sample pushed to first speaking frame on the wall "
    "clock (best round). **on the clock**: pictures rendered per second of a turn played in real time, distinct "
    "pictures per second (speaking frames whose mouth follows their own landmarks: rendered or in-between, the "
    "configuration's last word), the session's k and real-time factor. **interrupt**: interrupt() to the first idle frame. **PSNR**: worst "
    "speaking frame's face region against the reference configuration.\n")


def _ms(seconds: float | None) -> str:
    return fmt(seconds * 1e3 if seconds is not None else None, ".0f")


def live_markdown(report: dict) -> str:
    lines = ["# iplap bench --live\n"]
    if report.get("command"):
        lines += ["```bash", report["command"], "```\n"]
    lines += [machine_line(report["machine"]), LEGEND]
    lines += _results_table(report["results"])
    lines += _ceiling_section(report["ceiling"])
    lines += _stage_table(report["results"])
    lines += _choice_section(report["choice"])
    soak = report.get("soak")
    if isinstance(soak, dict) and soak:
        lines += _soak_table(soak)
    return "\n".join(lines) + "\n"


def _results_table(results: list[dict]) -> list[str]:
    lines = ["| configuration | U | GMAC/frame | fps | ceiling fps: burst / sustained | share: burst / sustained | "
             "SPADE block: ceiling fps, share (burst / sustained) | same phase: plain; SPADE block | latency s | "
             "on the clock: rendered pictures/s, distinct pictures/s, k, RTF | interrupt ms | PSNR dB | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["error"]:
            lines.append(f"| {r['label']} | failed: {r['error']} ||||||||||||")
        else:
            lines.append(_result_row(r))
    return lines


def _result_row(r: dict) -> str:
    rt = r["realtime"]
    psnr = "reference" if r.get("reference") == r["label"] else (
        "identical" if r.get("identical_to_reference") else fmt(r.get("psnr_vs_reference"), ".1f"))
    return (
        f"| {r['label']} | {r['distinct_refs']} | {fmt(r['gmac_per_frame'], '.1f')} | {fmt(r['fps_best'], '.2f')} "
        f"({fmt(r['fps_median'], '.2f')}) | {fmt(r['ceiling_fps'], '.2f')} / "
        f"{fmt(r.get('ceiling_fps_sustained'), '.2f')} | {fmt(r['share_of_ceiling'], '.0%')} / "
        f"{fmt(r.get('share_of_ceiling_sustained'), '.0%')} | {fmt(r.get('block_ceiling_fps'), '.2f')} / "
        f"{fmt(r.get('block_ceiling_fps_sustained'), '.2f')}, {fmt(r.get('block_share_of_ceiling'), '.0%')} / "
        f"{fmt(r.get('block_share_of_ceiling_sustained'), '.0%')} | {fmt(r.get('share_same_phase'), '.0%')} "
        f"({fmt(r.get('share_same_phase_best'), '.0%')}); {fmt(r.get('block_share_same_phase'), '.0%')} "
        f"({fmt(r.get('block_share_same_phase_best'), '.0%')}) | {fmt(r['latency_s'], '.2f')} | "
        f"{rt['pictures_per_s']:.1f}, {rt.get('distinct_per_s', 0.0):.1f}, {rt['k']}, {rt['real_time_factor']:.2f} | "
        f"{_ms(r['interrupt_s'])} | {psnr} | {fmt(r['peak_rss_mb'], '.0f')} |")


def _ceiling_section(ceiling) -> list[str]:
    if isinstance(ceiling, Skipped) or "error" in ceiling:
        return [f"\nConvolution ceiling: {ceiling if isinstance(ceiling, Skipped) else ceiling['error']}."]
    config = ceiling["config"]
    stacks = config.get("stacks") or {"conv": config["stack"]}
    gmacs = config.get("block_gmac") or {"conv": config["gmac"]}
    lines = ["\n## The ceiling\n", "; ".join(f"{block}: {stacks[block]}, {gmacs[block]:.2f} GMAC per run"
                                             for block in stacks)
             + f", quantized as the bundles are. Burst: the fastest of {config['repeats']} runs. "
             f"Sustained: the best window of {config.get('window_seconds', 0):g} s of runs back to "
             f"back ({config.get('windows', 0)} per configuration before and after the grid, and one "
             "of the round's own configuration right before and right after every round). "
             "On a shared host the two "
             "can differ by 2x: single runs that fall in a fast phase of the host set the burst figure, which "
             "no stream lasting seconds keeps up.\n",
             "| stack | backend | precision | threads | GMAC/s burst | measured | GMAC/s sustained | measured |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {e.get('block', 'conv')} | {e['backend']} | {e['precision']} | {e['threads']} | "
              f"{e['gmac_per_s']:.1f} | {e['when']} | "
              f"{fmt(e.get('sustained_gmac_per_s'), '.1f')} | {e.get('sustained_when') or ''} |"
              for e in ceiling["results"]]
    return lines


def _stage_table(results: list[dict]) -> list[str]:
    """Where a render's time goes, per configuration (the throughput turn's renders, median
    over the rounds of each stage's mean)."""
    measured = [r for r in results if not r["error"] and r.get("stage_ms")]
    if not measured:
        return []
    seen = {k for r in measured for k in r["stage_ms"]}
    stages = [k for k in STAGES if k in seen] + sorted(seen - set(STAGES))
    lines = ["\n## Where a render's time goes\n",
             "Milliseconds per render of the turn rendered without a clock, by stage (median over the rounds of "
             "each stage's mean); the graphs' stages are their calls, the rest runs in Python, numpy, OpenCV and "
             "the Numba warp kernel. With renders in flight the stages of several renders overlap, so their sum "
             "exceeds the time between pictures.\n",
             "| configuration | " + " | ".join(stages) + " | sum |", "|---|" + "---|" * (len(stages) + 1)]
    for r in measured:
        ms = r["stage_ms"]
        lines.append(f"| {r['label']} | " + " | ".join(f"{ms[k]:.1f}" if k in ms else "-" for k in stages)
                     + f" | {sum(ms.values()):.1f} |")
    return lines


def _choice_section(choice: dict) -> list[str]:
    lines = ["\n## Live choice\n\nJudged on the median over all frames (the figure in brackets), which a session "
             "lasting minutes keeps; the fastest round is for the comparison with the ceiling.\n"]
    for avatar, c in choice.items():
        if c["sustains"]:
            lines.append(f"- {avatar}: **{c['label']}** sustains {FPS} fps ({c['fps']:.1f} pictures/s), the most "
                         "accurate that does.")
        else:
            lines.append(f"- {avatar}: none sustains {FPS} fps; the fastest is **{c['label']}**, {c['fps']:.2f} "
                         f"pictures/s (median): a live session renders every {c['k']}th frame ({c['picture_rate']:.1f} "
                         "pictures/s) and holds the picture between.")
    return lines


def _soak_table(soak: dict) -> list[str]:
    lines = ["\n## Soak: the live choice as an agent uses it\n",
             "Replies pushed at once, played, a pause, again; every third interrupted half-way. Memory: "
             "resident MB before the session, half-way through it, at its end, and the process's peak "
             "(live.json has the trace, every 30 s).\n",
             "| avatar | configuration | s | replies | fps | latency s mean / max | interrupt ms max | k | "
             "RTF | RSS MB start / half-way / end / peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for avatar, r in soak.items():
        if "error" in r:
            lines.append(f"| {avatar} | {r['label']} | failed: {r['error']} ||||||||")
            continue
        lines.append(
            f"| {avatar} | {r['label']} | {r['seconds']:.0f} | {r['replies']} | {r['fps']:.2f} | "
            f"{fmt(r['mean_latency_s'], '.2f')} / {fmt(r['max_latency_s'], '.2f')} | "
            f"{_ms(r['max_interrupt_s'])} | {r['k']} | "
            f"{r['real_time_factor']:.2f} | {r['rss_start_mb']:.0f} / {r.get('rss_half_mb', math.nan):.0f} / "
            f"{r['rss_end_mb']:.0f} / {r['peak_rss_mb']:.0f} |")
    return lines


__all__ = ["LEGEND", "live_markdown"]
