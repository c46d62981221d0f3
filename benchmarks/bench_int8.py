"""fp32 against a calibrated (int8) bundle: per-graph times, renderer and end-to-end time per frame.

In one run, on the same machine, thread count and inputs, for each backend (onnxruntime,
OpenVINO CPU) and each bundle:

* every graph alone, on inputs recorded from the real fp32 pipeline (sample clip and
  speech, N references): median milliseconds per call, and GMAC/s of its convolutions and
  matrix products;
* the renderer per frame (flow modulations + flow head + warp kernel + translation);
* the whole pipeline per frame after ``prepare`` (landmarks, sketches, renderer, blend),
  as :meth:`Pipeline.stream` yields frames.

Usage::

    python -m iplap.benchmarks.bench_int8 --bundle FP32 --int8 INT8 [--refs 25] [--threads 2]
        [--repeats 3] [--frames 4] [--backends onnxruntime,openvino] [--json out.json]

Needs onnx (the calibrate extra) to count multiply-adds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..runtime.bundle import GRAPH_NAMES
from ..limits import BACKENDS, DEFAULT_REFS, Backend
from ..runtime.reports import RENDERER_STAGES

#: The renderer's timed stages: its graphs (or OpenVINO's fused flow) and the warp kernel.
TIMED_STAGES = (*RENDERER_STAGES, "warp")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def graph_macs(onnx_path: Path, feeds: dict[str, np.ndarray | tuple[int, ...]]) -> int:
    """Multiply-adds of the Conv, Gemm and MatMul nodes of a graph for these inputs (arrays,
    or their shapes)."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    for value in model.graph.input:
        if value.name in feeds:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, getattr(feeds[value.name], "shape", feeds[value.name])):
                dim.ClearField("dim_param")
                dim.dim_value = int(size)
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            out_shape, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out_shape and weight and all(out_shape):
                total += int(np.prod(out_shape)) * int(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out_shape = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out_shape and all(out_shape) and all(a):
                total += int(np.prod(out_shape)) * a[-1]
    return total


def record_inputs(bundle: Path, clip: Path, wav: np.ndarray, refs: int, threads: int):
    """One real input set per graph (the pipeline's last frame; the reference encoder on
    all N references), the distinct reference crops and sketches, and the prepared avatar."""
    from ..calibration.record import RecordingModel
    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig

    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(threads=threads), refs=refs))
    seen: dict[str, dict] = {}
    crops: list[dict] = []

    def keep(name):
        def on_call(feeds, outputs):
            seen[name] = {k: np.array(v) for k, v in feeds.items()}
            if name == "reference_encoder":
                crops.append(seen[name])
        return on_call

    recording = pipeline.with_graphs({n: RecordingModel(m, keep(n)) for n, m in pipeline.graphs.items()})
    avatar = recording.prepare(clip)
    for _ in recording.stream(avatar, [wav]):
        pass
    distinct = {k: np.concatenate([c[k] for c in crops]) for k in ("ref_image", "ref_sketch")}
    seen["reference_encoder"] = {k: np.ascontiguousarray(np.resize(v, (refs, *v.shape[1:])))
                                 for k, v in distinct.items()}
    return seen, distinct, avatar


def time_backend(bundles: dict[str, Path], backend: str, inputs: dict, distinct: dict, avatar, wav: np.ndarray,
                 refs: int, threads: int, repeats: int) -> dict[str, dict]:
    """For each bundle (by precision), on one backend: each graph alone; the renderer per
    frame (median over repeats); the pipeline per frame (median interval between rendered
    frames, the first one excluded). The bundles take turns call by call, so that another
    load on the machine slows them alike."""
    from dataclasses import replace

    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig

    config = PipelineConfig(backend=BackendConfig(backend, threads=threads), refs=refs)
    pipelines = {p: Pipeline(b, config) for p, b in bundles.items()}
    models = {p: pipe.graphs for p, pipe in pipelines.items()}
    out: dict[str, dict] = {p: {"graphs_s": {}} for p in bundles}
    for name in GRAPH_NAMES:
        runs: dict[str, list[float]] = {p: [] for p in bundles}
        for p in bundles:
            models[p][name].run(inputs[name])  # warm-up
        for _ in range(repeats):
            for p in bundles:
                start = time.perf_counter()
                models[p][name].run(inputs[name])
                runs[p].append(time.perf_counter() - start)
        for p in bundles:
            out[p]["graphs_s"][name] = _median(runs[p])
    t = inputs["translation"]
    face, sketches, mel = t["face"][0], t["target_sketches"].reshape(5, 3, 128, 128), t["mel"].reshape(80, 16)
    references = {p: pipe.renderer.encode_references(distinct["ref_image"], distinct["ref_sketch"],
                                                     avatar.references.index) for p, pipe in pipelines.items()}
    totals: dict[str, list[float]] = {p: [] for p in bundles}
    stages: dict[str, list[dict]] = {p: [] for p in bundles}
    for p, pipe in pipelines.items():
        pipe.renderer.render(references[p], face, sketches, mel)  # warm-up
    for _ in range(repeats):
        for p, pipe in pipelines.items():
            start = time.perf_counter()
            result = pipe.renderer.render(references[p], face, sketches, mel)
            totals[p].append(time.perf_counter() - start)
            stages[p].append(result.seconds)
    streams = {p: pipe.stream(replace(avatar, references=references[p]), [wav]) for p, pipe in pipelines.items()}
    intervals: dict[str, list[float]] = {p: [] for p in bundles}
    rendered = 0
    while streams:
        for p in list(streams):
            start = time.perf_counter()
            frame = next(streams[p], None)
            while frame is not None and frame.index in (1, 2):  # the first render fills frames 0, 1, 2
                frame = next(streams[p], None)
            if frame is None:
                del streams[p]
            elif rendered > 0:  # the first render pays for opening the video
                intervals[p].append(time.perf_counter() - start)
        rendered += 1
    for p in bundles:
        out[p].update(renderer_s=_median(totals[p]),
                      renderer_stages_s={k: _median([s[k] for s in stages[p]]) for k in TIMED_STAGES
                                         if all(k in s for s in stages[p])},
                      end_to_end_s=_median(intervals[p]), end_to_end_frames=len(intervals[p]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the fp32 bundle")
    parser.add_argument("--int8", type=Path, required=True, help="the calibrated bundle made from it")
    parser.add_argument("--refs", type=int, default=DEFAULT_REFS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="rendered frames timed end to end")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from ..runtime.bundle import Bundle

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bundles = {"fp32": args.bundle, Bundle.load(args.int8).precision: args.int8}
    results = measure(args, backends, bundles)
    print_tables(results, backends, list(bundles))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def measure(args, backends: list[str], bundles: dict[str, Path]) -> dict:
    """Every graph's multiply-adds, and each backend and bundle timed on the same recorded inputs."""
    from ..calibration.record import speech_for_renders
    from ..runtime.audio import load_audio
    from ..runtime.bundle import Bundle
    from ..samples import SPEECH_16K
    from ..samples.clip import make_head_motion_clip

    results: dict = {"refs": args.refs, "threads": args.threads, "repeats": args.repeats,
                     "machine": platform.processor() or platform.machine(), "graphs": {}, "pipeline": {}}
    with tempfile.TemporaryDirectory(prefix="iplap-bench-int8-") as tmp:
        clip = make_head_motion_clip(Path(tmp) / "clip.mp4", seconds=2.0)
        wav, _ = speech_for_renders(load_audio(SPEECH_16K)[8000:], args.frames + 2)
        print(f"recording real inputs (fp32, N={args.refs})...", file=sys.stderr)
        inputs, distinct, avatar = record_inputs(args.bundle, clip, wav, args.refs, args.threads)
        macs = {name: graph_macs(Bundle.load(args.bundle).graph_file(name, Backend.ONNXRUNTIME), inputs[name])
                for name in GRAPH_NAMES}
        results["gmac"] = {k: v / 1e9 for k, v in macs.items()}
        for backend in backends:
            print(f"timing {backend}: {', '.join(bundles)}...", file=sys.stderr)
            timed = time_backend(bundles, backend, inputs, distinct, avatar, wav, args.refs, args.threads,
                                 args.repeats)
            for precision, r in timed.items():
                results["graphs"][f"{backend} {precision}"] = r.pop("graphs_s")
                results["pipeline"][f"{backend} {precision}"] = r
    return results


def print_tables(results: dict, backends: list[str], precisions: list[str]) -> None:
    """Per graph and per frame: each backend and bundle, and the speed-up of the last bundle over fp32."""
    print(f"\nfp32 vs {precisions[-1]}, N={results['refs']}, {results['threads']} threads, {results['machine']}, "
          f"median of {results['repeats']}\n")
    header = "| graph | GMAC |" + "".join(f" {b} {p} ms |" for b in backends for p in precisions)
    header += "".join(f" {b} speed-up |" for b in backends)
    print(header)
    print("|---" * (2 + len(backends) * (len(precisions) + 1)) + "|")
    for name in GRAPH_NAMES:
        row = f"| {name} | {results['gmac'][name]:.1f} |"
        for b in backends:
            for p in precisions:
                seconds = results["graphs"][f"{b} {p}"][name]
                row += f" {seconds * 1e3:.0f} ({results['gmac'][name] / seconds:.0f} GMAC/s) |"
        for b in backends:
            g = results["graphs"]
            row += f" {g[f'{b} fp32'][name] / g[f'{b} {precisions[-1]}'][name]:.2f}x |"
        print(row)
    for key, label in (("renderer_s", "renderer s/frame"), ("end_to_end_s", "end to end s/frame")):
        row = f"| **{label}** | |"
        for b in backends:
            for p in precisions:
                row += f" {results['pipeline'][f'{b} {p}'][key]:.3f} |"
        for b in backends:
            pl = results["pipeline"]
            row += f" {pl[f'{b} fp32'][key] / pl[f'{b} {precisions[-1]}'][key]:.2f}x |"
        print(row)
    print()
    for name, r in results["pipeline"].items():
        print(f"{name} renderer stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["renderer_stages_s"].items()))

if __name__ == "__main__":
    sys.exit(main())
