"""What the rounds of ``iplap bench --live`` come to: a configuration's result from its
rounds against the ceiling (:func:`pool_live`), its accuracy against its avatar's
reference (:func:`score_live`), and the live choice (:func:`live_choice`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..runtime.constants import FPS
from . import AVATARS
from .ceiling import ceiling_result
from .grid import PER_REFERENCE_GRAPHS, Skipped
from .live_grid import LiveCase, reference_case
from .recommend import PSNR_RESOLUTION_DB

PSNR_PEAK = 255.0  # uint8 frames
#: Per ceiling stack (the plain one, the SPADE block): the prefix of its fields in a
#: result, and the key of the entries measured beside a round.
STACK_FIELDS = {"conv": ("", "ceiling_beside"), "spade": ("block_", "block_beside")}


def frame_gmac(gmac: dict[str, float] | None, distinct_refs: int) -> float | None:
    """The renderer graphs' multiply-adds of one frame, in 10^9."""
    if gmac is None:
        return None
    return sum(v * (distinct_refs if name in PER_REFERENCE_GRAPHS else 1) for name, v in gmac.items())


def ceiling_entry(ceiling, case: LiveCase, block: str = "conv") -> dict | None:
    """The entry of a ceiling measurement (one run, or merged) for ``case``'s backend,
    precision and threads, of the ``block`` stack; None where it has none (skipped,
    failed, not measured)."""
    if isinstance(ceiling, Skipped) or not isinstance(ceiling, dict) or "error" in ceiling:
        return None
    return ceiling_result(ceiling, case.backend, case.ceiling_precision, case.threads, block)


def pool_live(case: LiveCase, rounds: list[dict], gmac: dict | None, ceiling) -> dict:
    """A configuration's result from its rounds (best against best for the rates)."""
    out = {"label": case.label, "case": asdict(case), "error": None}
    failed = next((r for r in rounds if "error" in r), None)
    if failed is not None or not rounds:
        out["error"] = failed["error"] if failed else "not measured"
        return out
    per_round = [statistics.median(r["frame_seconds"]) for r in rounds if r["frame_seconds"]]
    frame_seconds = [s for r in rounds for s in r["frame_seconds"]]
    best = min(per_round) if per_round else math.nan
    out.update(
        fps_best=1 / best if per_round else None,
        fps_median=1 / statistics.median(frame_seconds) if frame_seconds else None,
        latency_s=min(r["latency_s"] for r in rounds),
        latency_s_median=statistics.median(r["latency_s"] for r in rounds),
        interrupt_s=max((r["interrupt_s"] for r in rounds if r["interrupt_s"] is not None), default=None),
        prepare_seconds=statistics.median(r["prepare_seconds"] for r in rounds),
        peak_rss_mb=max(r["peak_rss_mb"] for r in rounds),
        distinct_refs=rounds[-1]["distinct_refs"],
        realtime=max((r["realtime"] for r in rounds), key=lambda x: x["pictures_per_s"]),
    )
    per_frame = frame_gmac(gmac, out["distinct_refs"])
    out["gmac_per_frame"] = per_frame
    out.update(_against_ceiling(case, ceiling, per_frame, out["fps_best"]))
    stages = [r["stage_ms"] for r in rounds if r.get("stage_ms")]
    names = dict.fromkeys(k for st in stages for k in st)  # every round's stages, in order of appearance
    out["stage_ms"] = {k: statistics.median(st.get(k, 0.0) for st in stages) for k in names}
    out["rounds"] = [_same_phase(r, per_frame) for r in rounds if r["frame_seconds"]]
    for prefix, _ in STACK_FIELDS.values():
        shares = [r[f"{prefix}share"] for r in out["rounds"] if r[f"{prefix}share"] is not None]
        out[f"{prefix}share_same_phase"] = statistics.median(shares) if shares else None
        out[f"{prefix}share_same_phase_best"] = max(shares) if shares else None
    return out


def _against_ceiling(case: LiveCase, ceiling, per_frame: float | None, fps_best: float | None) -> dict:
    """The frame rates each stack's ceiling allows (burst, sustained), and the share of them
    the fastest round reached."""
    out = {}
    for block, (prefix, _) in STACK_FIELDS.items():
        entry = ceiling_entry(ceiling, case, block)
        for suffix, key in (("", "gmac_per_s"), ("_sustained", "sustained_gmac_per_s")):
            peak = entry.get(key) if entry else None
            fps = peak / per_frame if peak and per_frame else None
            out[f"{prefix}ceiling_fps{suffix}"] = fps
            out[f"{prefix}share_of_ceiling{suffix}"] = fps_best / fps if fps and fps_best else None
    return out


def _same_phase(round_: dict, per_frame: float | None) -> dict:
    """One round against the ceiling measured right before and right after it (its own
    configuration's sustained window, the faster of the two), of the plain stack and
    (``block_``) of the SPADE block: on a host whose speed moves by 2-3x between phases,
    the share of what the machine did at the time."""
    fps = 1 / statistics.median(round_["frame_seconds"])
    out = {"fps": fps}
    for prefix, key in STACK_FIELDS.values():
        rates = [e["sustained_gmac_per_s"] for e in round_.get(key, []) if e and e.get("sustained_gmac_per_s")]
        ceiling_fps = max(rates) / per_frame if rates and per_frame else None
        out[f"{prefix}ceiling_fps"] = ceiling_fps
        out[f"{prefix}share"] = fps / ceiling_fps if ceiling_fps else None
    return out


def score_live(cases: list[LiveCase], results: list[dict], outputs: dict[int, str]) -> None:
    """Each configuration's PSNR (worst frame of the face region) against its avatar's reference."""
    from ..metrics import psnr

    for avatar in {c.avatar for c in cases}:
        ref = reference_case(cases, avatar)
        ref_k = cases.index(ref) if ref is not None else None
        if ref_k is None or results[ref_k]["error"] or not Path(outputs[ref_k]).exists():
            for k, c in enumerate(cases):
                if c.avatar == avatar:
                    results[k]["psnr_vs_reference"] = None
            continue
        reference = np.load(outputs[ref_k])["faces"]
        for k, c in enumerate(cases):
            if c.avatar != avatar or results[k]["error"] or not Path(outputs[k]).exists():
                continue
            faces = np.load(outputs[k])["faces"]
            n = min(len(faces), len(reference))
            values = [psnr(faces[i], reference[i], PSNR_PEAK) for i in range(n)]
            worst = min(values) if values else None
            results[k]["psnr_vs_reference"] = None if worst is None or math.isinf(worst) else worst
            results[k]["identical_to_reference"] = worst is not None and math.isinf(worst)
            results[k]["reference"] = ref.label


def _rate(result: dict) -> float:
    """The pictures per second a session would keep: the median over all frames, where measured."""
    return result.get("fps_median") or result["fps_best"]


def _accuracy(result: dict) -> float:
    """PSNR at the tables' resolution, as the offline recommendation compares it."""
    if result.get("identical_to_reference"):
        return math.inf
    psnr = result.get("psnr_vs_reference")
    return -math.inf if psnr is None else round(psnr / PSNR_RESOLUTION_DB) * PSNR_RESOLUTION_DB


def live_choice(results: list[dict], fps: float = FPS) -> dict:
    """Per avatar kind: the most accurate configuration sustaining ``fps``; where none does,
    the fastest, and the picture rate it sustains (k frames per picture).

    "Sustaining" is judged on the median over all frames of all rounds (``fps_median``), not
    on the fastest round: on a shared host one round can fall in a fast phase (measured:
    8.3 pictures/s in a round of a setting whose median was 5.2), and a session lasts longer."""
    choices = {}
    for avatar in AVATARS:
        ok = [r for r in results if r["case"]["avatar"] == avatar and not r["error"] and r.get("fps_best")]
        if not ok:
            continue
        sustaining = [r for r in ok if _rate(r) >= fps]
        if sustaining:
            pick = max(sustaining, key=lambda r: (_accuracy(r), _rate(r)))
            choices[avatar] = {"label": pick["label"], "case": pick["case"], "sustains": True,
                               "fps": _rate(pick), "k": 1}
        else:
            pick = max(ok, key=_rate)
            k = math.ceil(fps / _rate(pick))
            choices[avatar] = {"label": pick["label"], "case": pick["case"], "sustains": False,
                               "fps": _rate(pick), "k": k, "picture_rate": fps / k}
    return choices


__all__ = ["STACK_FIELDS", "ceiling_entry", "frame_gmac", "live_choice", "pool_live", "score_live"]
