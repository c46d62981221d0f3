"""Scoring ``iplap bench``'s measurements: accuracy against fp32 and against the original
configuration, the renderer graphs' multiply-adds against the ceiling, thread scaling, and
the results as ``results.json`` holds them."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from ..limits import Backend
from ..runtime.reports import FUSED_STAGES, PER_FRAME_GRAPHS, RENDERER_STAGES
from .ceiling import ceiling_result
from .grid import PER_REFERENCE_GRAPHS, Accuracy, Case, CaseResult


def compare(outputs: str, reference: str) -> Accuracy:
    from ..metrics import landmark_error_px, psnr, ssim

    with np.load(reference) as a, np.load(outputs) as b:
        faces_a, faces_b = a["faces"], b["faces"]
        n = min(len(faces_a), len(faces_b))
        to_img = lambda f: (np.clip(f, 0, 1).transpose(1, 2, 0) * 255)  # noqa: E731
        # Python floats: numpy's would compare into numpy bools, which JSON cannot write.
        return Accuracy(float(min(psnr(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))),
                        float(min(ssim(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))),
                        *map(float, landmark_error_px(b["contents"][:n], a["contents"][:n])))


def score(results: list[CaseResult], original: CaseResult | None) -> None:
    """Accuracy of every case against the fp32 onnxruntime case with the same N, and against
    the original configuration."""
    references = {r.case.refs: r for r in results
                  if r.case.precision == "fp32" and r.case.backend == Backend.ONNXRUNTIME and r.error is None}
    for r in results:
        if r.error is not None:
            continue
        ref = references.get(r.case.refs)
        if ref is not None:
            same = compare(r.outputs, ref.outputs)
            r.psnr, r.ssim, r.landmark_max_px, r.landmark_mean_px = (same.psnr, same.ssim, same.landmark_max_px,
                                                                     same.landmark_mean_px)
        if original is not None and original.error is None:
            r.vs_original = compare(r.outputs, original.outputs)


def result_dict(r: CaseResult) -> dict:
    d = asdict(r)
    del d["outputs"], d["vs_original"]
    d["label"] = r.case.label
    # JSON has no infinity: identical faces (the reference configuration) get psnr null.
    d["identical"] = r.psnr == float("inf")
    if d["identical"]:
        d["psnr"] = None
    o = r.vs_original
    d["identical_to_original"] = o is not None and o.psnr == float("inf")
    d.update(psnr_vs_original=None if o is None or d["identical_to_original"] else o.psnr,
             ssim_vs_original=o and o.ssim, landmark_max_px_vs_original=o and o.landmark_max_px,
             landmark_mean_px_vs_original=o and o.landmark_mean_px)
    return d


def original_dict(result: CaseResult, measured_apart: bool) -> dict:
    return {"label": result.case.label, "case": asdict(result.case), "error": result.error,
            "measured_apart": measured_apart,
            "seconds_per_frame": None if measured_apart or result.error else result.seconds_per_frame}


def graph_gmac(bundle) -> dict[str, float]:
    """GMAC of one call of each frame graph at batch 1 (flow_head: one reference)."""
    from ..runtime.bundle import GRAPH_BY_NAME
    from .bench_int8 import graph_macs

    shapes = {name: {t.name: tuple(1 if d == "batch" else d for d in t.shape) for t in GRAPH_BY_NAME[name].inputs}
              for name in PER_FRAME_GRAPHS}
    return {name: graph_macs(bundle.graph_file(name, Backend.ONNXRUNTIME), shapes[name]) / 1e9
            for name in PER_FRAME_GRAPHS}


def graph_throughput(result: CaseResult, gmac: dict[str, float], ceiling: dict) -> dict[str, dict]:
    """Each frame graph's GMAC per frame, GMAC/s and share of the ceiling of the same backend,
    precision and thread count (None where the ceiling has no such entry, e.g. bf16).

    Best against best: the graph's fastest frame against the ceiling's fastest run. Other
    load on the machine only ever slows a run, so the best of several is the figure it
    disturbs least; medians taken at different moments would compare the load instead."""
    c = result.case
    peaks = {block: (ceiling_result(ceiling, c.backend, c.precision, c.threads, block) or {}).get("gmac_per_s")
             for block in ("conv", "spade")}
    graphs = {}
    refs = result.distinct_refs or c.refs
    for name in RENDERER_STAGES:  # a fused stage does the work of its graphs
        per_frame = sum(gmac[g] * (refs if g in PER_REFERENCE_GRAPHS else 1) for g in FUSED_STAGES.get(name, (name,)))
        seconds = (result.stages_min or result.stages).get(name)
        rate = per_frame / seconds if seconds else None
        graphs[name] = {"gmac": per_frame, "seconds": seconds, "gmac_per_s": rate,
                        "share_of_ceiling": rate / peaks["conv"] if rate and peaks["conv"] else None,
                        "share_of_block_ceiling": rate / peaks["spade"] if rate and peaks["spade"] else None}
    return graphs


def thread_scaling(results: list[dict]) -> list[dict]:
    """For each setting measured at several thread counts: the speed-up of each more-thread
    run over the fewest-thread one, and its efficiency (speed-up / thread ratio), for the
    whole frame and each renderer stage, from the fastest frames (best against best, as
    :func:`graph_throughput`)."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        if not r["error"]:
            groups.setdefault(_setting(r["case"]), []).append(r)
    rows = []
    for setting, runs in groups.items():
        runs.sort(key=lambda r: r["case"]["threads"])
        base = runs[0]
        for r in runs[1:]:
            ratio = r["case"]["threads"] / base["case"]["threads"]
            times = {"frame": (base["seconds_min"], r["seconds_min"]),
                     **{s: (base["stages_min"].get(s), r["stages_min"].get(s)) for s in (*RENDERER_STAGES, "warp")}}
            rows.append({"setting": setting, "threads": [base["case"]["threads"], r["case"]["threads"]],
                         **{k: {"speedup": a / b, "efficiency": a / b / ratio} if a and b else None
                            for k, (a, b) in times.items()}})
    return rows


def _setting(case: dict) -> str:
    return Case(**case).setting


def json_default(value):
    """NaN (a failed measurement) as null; anything else, e.g. :class:`Skipped`, as its text."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
