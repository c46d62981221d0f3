"""Where a graph's time goes, operator by operator: onnxruntime's profiler, OpenVINO's performance counts.

For one graph of one or more bundles (e.g. an int8 bundle before and after a recipe
change), on each backend: the graph's median time per call, and the time of each
operator type as the backend executes it (after its own fusions and layout changes, so
an int8 convolution shows as ``QLinearConv`` on onnxruntime and as a convolution with an
``amx``/``avx512``/``avx2`` kernel on OpenVINO). The bundles take turns call by call.
Inputs are random in each input's documented range: the time depends on the shapes, not
on the values.

``--graph flow`` profiles OpenVINO's fused flow (flow_modulations and flow_head composed
into one model, as the runtime runs them there; ``BackendConfig.fuse_flow``), OpenVINO only.

Usage::

    python -m iplap.benchmarks.profile_graph --bundle B [--bundle B2] --graph flow_head [--refs 25]
        [--threads 2] [--runs 5] [--backends onnxruntime,openvino] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..limits import BACKENDS, DEFAULT_REFS, Backend


FUSED = "flow"  # OpenVINO's fused flow_modulations + flow_head


def random_inputs(graph: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of ``graph`` with ``batch`` for its dynamic axis, uniform in each input's range."""
    from ..runtime.bundle import GRAPH_BY_NAME, MODULATION_NAMES

    rng = np.random.default_rng(seed)
    feeds = {}
    specs = GRAPH_BY_NAME[graph].inputs if graph != FUSED else (
        *GRAPH_BY_NAME["flow_modulations"].inputs,
        *(s for s in GRAPH_BY_NAME["flow_head"].inputs if s.name not in MODULATION_NAMES))
    for spec in specs:
        shape = tuple(batch if d == "batch" else d for d in spec.shape)
        low, high = spec.value_range
        feeds[spec.name] = rng.uniform(low, high, shape).astype(np.float32)
    return feeds


class _OrtProfiled:
    """An onnxruntime session with the runtime's settings and the profiler on."""

    def __init__(self, path: Path, threads: int, folder: Path):
        import onnxruntime as ort

        from ..runtime.backends import BackendConfig, load_model

        # The runtime's own session options (threads, spinning, optimization level), plus profiling.
        reference = load_model(path, BackendConfig(Backend.ONNXRUNTIME, threads=threads)).session
        options = ort.SessionOptions()
        for name in ("graph_optimization_level", "intra_op_num_threads", "inter_op_num_threads", "execution_mode",
                     "log_severity_level"):
            setattr(options, name, getattr(reference.get_session_options(), name))
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.enable_profiling = True
        options.profile_file_prefix = str(folder / path.stem)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    def run(self, feeds):
        self.session.run(None, feeds)

    def operators(self, calls: int) -> dict[str, float]:
        """Seconds per call of each operator type, over every profiled call."""
        events = json.loads(Path(self.session.end_profiling()).read_text())
        totals: dict[str, float] = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                totals[e["args"].get("op_name", "?")] += e["dur"] / 1e6
        return {op: t / calls for op, t in totals.items()}


class _OvProfiled:
    """An OpenVINO compiled model with the runtime's settings and performance counts on."""

    def __init__(self, path: Path | tuple[Path, Path], threads: int, precision: str | None, batch: int = 1):
        from ..runtime.backends import (BackendConfig, ComposedOpenVINOModel, OpenVINOSource, openvino_core,
                                        openvino_properties)
        from ..runtime.bundle import MODULATION_NAMES

        props = {**openvino_properties(BackendConfig(Backend.OPENVINO, threads=threads, inference_precision=precision)),
                 "PERF_COUNT": True}
        if isinstance(path, tuple):  # the fused flow, compiled for this batch as the runtime does
            first, second = (OpenVINOSource(p, "CPU", props) for p in path)
            compiled, _ = ComposedOpenVINOModel(first, second, MODULATION_NAMES, "h2").compiled_for(batch)
        else:
            compiled = openvino_core().compile_model(str(path), "CPU", props)
        self.request = compiled.create_infer_request()
        self.totals: dict[str, float] = collections.Counter()

    def run(self, feeds):
        self.request.infer(feeds)
        for info in self.request.get_profiling_info():
            if info.status == info.Status.EXECUTED:
                self.totals[f"{info.node_type} ({info.exec_type})"] += info.real_time.total_seconds()

    def operators(self, calls: int) -> dict[str, float]:
        return {op: t / calls for op, t in self.totals.items()}


def profile(bundles: list[Path], graph: str, backends: list[str], batch: int, threads: int,
            runs: int) -> dict[str, dict]:
    """``{"<backend> <bundle folder>": {"seconds": median per call, "operators": {type: s per call}}}``."""
    from ..runtime.bundle import Bundle

    feeds = random_inputs(graph, batch)
    out = {}
    with tempfile.TemporaryDirectory(prefix="iplap-profile-") as tmp:
        for backend in backends:
            models = {}
            for root in bundles:
                bundle = Bundle.load(root)
                if graph == FUSED:
                    if backend != Backend.OPENVINO:
                        raise SystemExit("--graph flow is OpenVINO's fused flow: use --backends openvino")
                    path = tuple(bundle.graph_file(g, Backend.OPENVINO) for g in ("flow_modulations", "flow_head"))
                    models[root.name] = _OvProfiled(path, threads, bundle.openvino_hint("flow_head"), batch)
                    continue
                path = bundle.graph_file(graph, backend)
                models[root.name] = (_OrtProfiled(path, threads, Path(tmp)) if backend == Backend.ONNXRUNTIME
                                     else _OvProfiled(path, threads, bundle.openvino_hint(graph)))
            for model in models.values():  # warm-up, profiled too: divided out below
                model.run(feeds)
            times: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(runs):
                for name, model in models.items():
                    start = time.perf_counter()
                    model.run(feeds)
                    times[name].append(time.perf_counter() - start)
            for name, model in models.items():
                out[f"{backend} {name}"] = {"seconds": statistics.median(times[name]),
                                            "operators": model.operators(runs + 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True)
    parser.add_argument("--graph", default="flow_head")
    parser.add_argument("--refs", type=int, default=DEFAULT_REFS,
                        help=f"batch of the per-reference graphs (default {DEFAULT_REFS})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from ..runtime.bundle import GRAPH_BY_NAME

    per_reference = args.graph == FUSED or GRAPH_BY_NAME[args.graph].inputs[0].shape[0] == "batch"
    batch = args.refs if per_reference else 1
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = profile(args.bundle, args.graph, backends, batch, args.threads, args.runs)
    print(f"\n{args.graph}, batch {batch}, {args.threads} threads, median of {args.runs} calls\n")
    for name, r in results.items():
        total = sum(r["operators"].values())
        print(f"{name}: {r['seconds'] * 1e3:.1f} ms per call ({total * 1e3:.1f} ms in operators)\n")
        print("| operator | ms | share |\n|---|---|---|")
        for op, seconds in sorted(r["operators"].items(), key=lambda kv: -kv[1]):
            print(f"| {op} | {seconds * 1e3:.1f} | {seconds / total:.0%} |")
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
