"""``iplap bench``: accuracy against speed, per backend, precision, number of references and threads.

Every configuration runs in a fresh process (so its peak memory and thread settings are
its own) on the same fixed inputs, made from the shipped samples: a clip of the sample
photo with small head motion, and a slice of the sample speech. For each it measures:

* time per rendered frame (median and range over all timed frames of all rounds, after
  warm-up), and per stage (landmarks, sketches, renderer graphs, warp, blend, decode, encode);
* the first-frame latency of streaming, and the per-video preparation time;
* peak RSS of the process;
* accuracy against the fp32 exact path (the fp32 bundle on onnxruntime, same N): PSNR and
  SSIM of the rendered 128x128 faces, and the error of the predicted landmarks in pixels
  of a 128 px crop;
* the same accuracy against the original configuration (the fp32 bundle on onnxruntime,
  N=25, rendered once per run on the same inputs): the loss from a lower N and the loss
  from precision together, which is what a user accepts by choosing a setting;
* for each renderer graph: its GMAC per frame, GMAC/s, and its share of this machine's
  convolution ceiling (:mod:`.ceiling`, measured for each backend, precision and thread
  count before the grid and again after it: the faster of the two counts); and, across
  the thread counts, each graph's speed-up and parallel efficiency.

At the end, a selection over the results (:mod:`.recommend`): the Pareto front of time
against accuracy vs the original configuration, and with a time budget (or a PSNR floor)
the setting to use, as ``iplap run`` flags.

The original-style torch renderer (the whole flow network per reference per frame) is
timed on the same inputs as the baseline when torch is installed, and reported as skipped
when it is not. Outputs: ``results.json`` (with the machine's CPU, cores, instruction
sets and package versions), ``results.md`` and three PNG plots.

The ceiling and the graphs' multiply-add counts need onnx and nncf (the ``calibrate``
extra); without them those tables are reported as skipped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IplapError
from ..runtime.bundle import package_versions
from ..runtime.constants import DEFAULT_REFS
from .ceiling import CeilingConfig
from .timing import peak_rss_mb

log = logging.getLogger(__name__)

STAGES = ("landmarks", "sketches", "flow_modulations", "flow_head", "warp", "translation", "blend", "decode", "encode")
#: The renderer graphs that run every frame: the ones measured against the ceiling.
FRAME_GRAPHS = ("flow_modulations", "flow_head", "translation")
#: Graphs that run once per distinct reference on every frame (batch N).
PER_REFERENCE_GRAPHS = ("flow_head",)
#: The original release's configuration, which every setting is also compared with.
ORIGINAL_REFS = DEFAULT_REFS


@dataclass(frozen=True)
class BenchConfig:
    """What ``iplap bench`` measures.

    Attributes:
        bundles: model bundles to compare (one per precision); the fp32 one is the reference.
        out: folder for results.json, results.md and the plots.
        backends: inference backends to run.
        device: OpenVINO device.
        refs: numbers of references N.
        threads: thread counts.
        frames: rendered frames timed per repeat.
        repeats: rounds: in each, every configuration runs once in a fresh process and
            times ``frames`` renders after ``warmup`` untimed ones.
        clip_seconds: length of the face clip made from the sample photo.
        torch_baseline: time the original torch renderer when torch is installed.
        renderer_checkpoint: the checkpoint for that baseline (default: stand-in weights,
            which cost the same: the time depends on the architecture, not the values).
        ceiling: measure the machine's convolution ceiling before the grid and after it.
        ceiling_config: the convolution stack of the ceiling and its repeats.
        budget: seconds per frame: recommend the most accurate setting within it.
        min_psnr: dB against the original configuration: recommend the fastest setting at or above it.
        command: the command line that started the run, written above the tables.
    """

    bundles: tuple[Path, ...]
    out: Path
    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    device: str = "CPU"
    refs: tuple[int, ...] = (5, 10, 25)
    threads: tuple[int, ...] = (os.cpu_count() or 1,)
    frames: int = 4
    repeats: int = 3
    warmup: int = 1
    clip_seconds: float = 1.0
    torch_baseline: bool = True
    renderer_checkpoint: Path | None = None
    ceiling: bool = True
    ceiling_config: CeilingConfig = field(default_factory=CeilingConfig)
    budget: float | None = None
    min_psnr: float | None = None
    command: str | None = None

    def __post_init__(self):
        if self.budget is not None and self.min_psnr is not None:
            raise IplapError("give a time budget or a PSNR floor, not both")
        if self.budget is not None and self.budget <= 0:
            raise IplapError(f"the time budget must be positive, got {self.budget:g} s/frame")

    @classmethod
    def quick(cls, bundles, out, **kwargs) -> "BenchConfig":
        """A fast grid for smoke tests: N=5, two frames, one repeat, a short ceiling."""
        values = dict(refs=(5,), frames=2, repeats=1, warmup=1, clip_seconds=0.4,
                      ceiling_config=CeilingConfig(layers=4, repeats=3, warmup=1, calibration_samples=2))
        values.update(kwargs)
        return cls(tuple(bundles), Path(out), **values)


@dataclass(frozen=True)
class Case:
    bundle: str
    precision: str
    backend: str
    device: str
    refs: int
    threads: int
    name: str = ""  # the bundle's folder name, where two bundles have the same precision

    @property
    def label(self) -> str:
        return f"{self.setting} t={self.threads}"

    @property
    def setting(self) -> str:
        """The label without the thread count."""
        device = f" {self.device}" if self.backend == "openvino" else ""
        name = f" ({self.name})" if self.name else ""
        return f"{self.backend}{device} {self.precision}{name} N={self.refs}"


@dataclass
class Accuracy:
    """Rendered faces and landmarks against a reference render of the same frames."""

    psnr: float  # worst frame, dB (inf: identical)
    ssim: float  # worst frame
    landmark_max_px: float
    landmark_mean_px: float


@dataclass
class CaseResult:
    case: Case
    seconds_per_frame: float
    seconds_min: float
    seconds_max: float
    stages: dict[str, float]
    first_frame_seconds: float
    prepare_seconds: float
    peak_rss_mb: float
    stages_min: dict[str, float] | None = None  # each stage's fastest frame
    distinct_refs: int | None = None  # the references whose flow is computed every frame
    psnr: float | None = None
    ssim: float | None = None
    landmark_max_px: float | None = None
    landmark_mean_px: float | None = None
    vs_original: Accuracy | None = None
    graphs: dict[str, dict] | None = None  # FRAME_GRAPHS: gmac, seconds, gmac_per_s, share of the ceiling
    speedup_vs_torch: float | None = None
    error: str | None = None
    outputs: str | None = None  # the npz of its faces and landmarks (this run only)


# -- inputs ---------------------------------------------------------------------------------------

def fixed_inputs(folder: Path, clip_seconds: float, frames: int, repeats: int, warmup: int) -> tuple[Path, Path]:
    """The clip and the speech every configuration renders (deterministic)."""
    import soundfile

    from ..runtime.audio import MelConfig, MelWindows, load_audio
    from ..runtime.constants import MEL_WINDOW, SAMPLE_RATE
    from ..samples import SPEECH_16K
    from ..samples.clip import head_motion_frames, write_clip

    clip = write_clip(folder / "clip.mp4", head_motion_frames(clip_seconds, size=256))
    renders = warmup + frames
    n_mel = MelWindows().start(renders + 2) + MEL_WINDOW  # windows for `renders` renders
    wav = load_audio(SPEECH_16K)
    need = (n_mel - 1) * MelConfig().hop + 1
    start = min(int(0.5 * SAMPLE_RATE), max(0, len(wav) - need))
    speech = folder / "speech.wav"
    soundfile.write(speech, wav[start:start + need], SAMPLE_RATE)
    return clip, speech


# -- one configuration, in its own process --------------------------------------------------------

def _measure(case: dict, clip: str, speech: str, frames: int, warmup: int, outputs: str) -> dict:
    """One round of a configuration: prepare, then ``warmup`` + ``frames`` renders; the raw
    times (the parent pools the rounds) and the timed frames' faces and landmarks."""
    from ..runtime.audio import load_audio
    from ..runtime.backends import BackendConfig
    from ..runtime.media import VideoWriter
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from .timing import time_renders

    backend = BackendConfig(backend=case["backend"], device=case["device"], threads=case["threads"])
    pipeline = Pipeline(case["bundle"], PipelineConfig(backend=backend, refs=case["refs"]))
    start = time.perf_counter()
    avatar = pipeline.prepare(clip)
    prepare_s = time.perf_counter() - start
    wav = load_audio(speech)
    with tempfile.TemporaryDirectory() as tmp:
        writer = VideoWriter(Path(tmp) / "out.mp4", avatar.track.width, avatar.track.height)
        times = time_renders(pipeline, avatar, wav, warmup, frames, writer, keep_outputs=True)
        writer.abort()
    np.savez(outputs, faces=np.stack(times.faces), contents=np.stack(times.contents))
    return {"walls": times.walls, "stages": times.stages, "first_frame_seconds": times.first_frame_seconds,
            "prepare_seconds": prepare_s, "peak_rss_mb": peak_rss_mb(), "distinct_refs": avatar.references.distinct}


def pool_rounds(case: Case, rounds: list[dict], outputs: str) -> CaseResult:
    """A configuration's result from its rounds: medians over every timed frame of every round
    (and the fastest frame, per stage too); the first failing round's error, if any."""
    failed = next((r for r in rounds if "error" in r), None)
    if failed is not None or not rounds:
        nan = float("nan")
        return CaseResult(case, nan, nan, nan, {}, nan, nan, nan,
                          error=failed["error"] if failed else "not measured")
    walls = [w for r in rounds for w in r["walls"]]
    stages = [s for r in rounds for s in r["stages"]]
    return CaseResult(
        case, statistics.median(walls), min(walls), max(walls),
        {k: statistics.median(s.get(k, 0.0) for s in stages) for k in STAGES},
        statistics.median(r["first_frame_seconds"] for r in rounds),
        statistics.median(r["prepare_seconds"] for r in rounds), max(r["peak_rss_mb"] for r in rounds),
        stages_min={k: min(s.get(k, 0.0) for s in stages) for k in STAGES},
        distinct_refs=rounds[-1]["distinct_refs"], outputs=outputs)


def _torch_baseline(bundle: str, checkpoint: str | None, clip: str, speech: str, refs: int, threads: int,
                    repeats: int) -> dict:
    """The original renderer (flow network per reference per frame) on the benchmark's inputs:
    the clip's references, their sketches, a frame's sketches and crop, and a mel window."""
    import torch

    from ..models import Renderer, load_renderer, standin_state_dict
    from ..runtime.audio import load_audio, melspectrogram
    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from ..runtime.sketch import draw_sketches

    torch.set_num_threads(threads)
    if checkpoint:
        renderer = load_renderer(checkpoint)
    else:  # stand-in weights: the same architecture, so the same cost
        renderer = Renderer()
        renderer.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v))
                                  for k, v in standin_state_dict("renderer").items() if not k.startswith("perceptual.")})
        renderer.eval()
    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(threads=threads), refs=refs))
    avatar = pipeline.prepare(clip)
    track, references = avatar.track, avatar.references
    images = references.images[references.index].transpose(0, 3, 1, 2)
    sketches = draw_sketches(np.stack([track.normalised(int(k)) for k in avatar.ref_frames]),
                             np.stack([track.crop_hw(int(k)) for k in avatar.ref_frames]))
    target = draw_sketches(np.stack([track.normalised(k % len(track)) for k in range(5)]),
                           np.stack([track.crop_hw(k % len(track)) for k in range(5)]))
    mel = melspectrogram(load_audio(speech))[:, :16]
    args = (torch.from_numpy(np.ascontiguousarray(images[:1]))[None], torch.from_numpy(target)[None],
            torch.from_numpy(np.ascontiguousarray(images))[None], torch.from_numpy(sketches)[None],
            torch.from_numpy(mel)[None, None, None])
    times = []
    with torch.no_grad():
        renderer(*args)
        for _ in range(repeats):
            start = time.perf_counter()
            renderer(*args)
            times.append(time.perf_counter() - start)
    return {"seconds_per_frame": statistics.median(times), "seconds_min": min(times), "seconds_max": max(times),
            "threads": threads, "peak_rss_mb": peak_rss_mb()}


def _in_process(target, *args) -> dict:
    """Run ``target(*args)`` in a fresh process; return its dict, or {"error": ...}."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        try:
            return pool.apply(target, args)
        except IplapError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one failing configuration must not end the whole benchmark
            return {"error": f"{type(exc).__name__}: {exc}"}


# -- the grid -------------------------------------------------------------------------------------

def machine_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and "cpu" not in info:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_bf16", "amx_int8", "neon", "asimd")
    info["instruction_sets"] = [f for f in wanted if f in flags]
    versions = package_versions(("iplap", "numpy", "onnxruntime", "openvino", "numba", "opencv-python-headless",
                                 "av", "torch", "nncf", "matplotlib"), missing=None)
    info["packages"] = versions
    return info


def run_bench(config: BenchConfig, progress: bool = True) -> dict:
    from tqdm import tqdm

    from ..runtime.bundle import Bundle

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise IplapError("iplap bench draws its plots with matplotlib: pip install 'iplap[bench]'") from None
    if not config.bundles:
        raise IplapError("give at least one --bundle")
    # Each bundle keeps the path it was given as, so that the recommended flags name it the same way.
    bundles = {str(path): Bundle.load(path) for path in config.bundles}
    config.out.mkdir(parents=True, exist_ok=True)
    precisions = [b.precision for b in bundles.values()]
    names = {path: Path(path).name if precisions.count(b.precision) > 1 else "" for path, b in bundles.items()}
    cases = [Case(path, b.precision, backend, config.device if backend == "openvino" else "CPU", refs, threads,
                  names[path])
             for refs in config.refs for path, b in bundles.items() for backend in config.backends
             for threads in config.threads]
    fp32 = next((p for p, b in bundles.items() if b.precision == "fp32"), None)
    original = Case(fp32, "fp32", "onnxruntime", "CPU", ORIGINAL_REFS, max(config.threads), names[fp32]) \
        if fp32 else None
    measure_original = original is not None and original not in cases
    torch_available = _has_torch()
    macs_available, missing = _has_calibrate_extra()
    steps = (len(cases) * config.repeats + int(measure_original) + 2 * int(config.ceiling and macs_available)
             + (len(config.refs) if config.torch_baseline and torch_available else 0))
    bar = tqdm(total=steps, desc="benchmark", unit="config", file=sys.stderr, disable=not progress)
    ceiling: dict | str = f"skipped: needs {missing} (pip install 'iplap[calibrate]')" if not macs_available \
        else "skipped" if not config.ceiling else {}
    ceiling_runs: list[dict] = []

    def ceiling_run(when: str) -> None:
        bar.set_postfix_str(f"convolution ceiling, {when} the grid")
        ceiling_runs.append({"when": when, **_in_process(_ceiling, config.backends, config.threads, config.device,
                                                          asdict(config.ceiling_config))})
        bar.update()

    if config.ceiling and macs_available:
        ceiling_run("before")
    gmac = _graph_gmac(bundles[fp32 or next(iter(bundles))]) if macs_available else None
    baselines: dict[int, dict] = {}
    original_result: CaseResult | None = None
    with tempfile.TemporaryDirectory(prefix="iplap-bench-") as tmp:
        clip, speech = fixed_inputs(Path(tmp), config.clip_seconds, config.frames, config.repeats, config.warmup)

        # Rounds: every configuration once per round, each in a fresh process, so that load
        # from other processes on the machine, which comes and goes, falls on all of them alike.
        rounds: dict[int, list[dict]] = {k: [] for k in range(len(cases))}
        outputs = {k: str(Path(tmp) / f"case{k}.npz") for k in range(len(cases))}
        for round_ in range(config.repeats):
            for k, case in enumerate(cases):
                bar.set_postfix_str(f"{case.label} (round {round_ + 1}/{config.repeats})")
                rounds[k].append(_in_process(_measure, asdict(case), str(clip), str(speech), config.frames,
                                             config.warmup, outputs[k]))
                bar.update()
        results = [pool_rounds(case, rounds[k], outputs[k]) for k, case in enumerate(cases)]
        if measure_original:
            # Only its faces are needed: one round renders the same frames as the others' rounds.
            bar.set_postfix_str(f"original configuration {original.label}")
            path = str(Path(tmp) / "original.npz")
            original_result = pool_rounds(original, [_in_process(_measure, asdict(original), str(clip), str(speech),
                                                                 config.frames, config.warmup, path)], path)
            bar.update()
        elif original is not None:
            original_result = next(r for r in results if r.case == original)
        if config.torch_baseline and torch_available:
            checkpoint = str(config.renderer_checkpoint) if config.renderer_checkpoint else None
            for refs in config.refs:
                bar.set_postfix_str(f"torch original N={refs}")
                baselines[refs] = _in_process(_torch_baseline, fp32 or next(iter(bundles)), checkpoint, str(clip),
                                              str(speech), refs, max(config.threads), max(1, min(config.repeats, 2)))
                bar.update()
        if config.ceiling and macs_available:
            # Again after the grid: a ceiling measured while other work held a core would
            # understate the machine for the whole report.
            ceiling_run("after")
            ceiling = merge_ceilings(ceiling_runs)
        bar.close()
        _score(results, original_result)
    for r in results:
        base = baselines.get(r.case.refs)
        # torch runs at the most threads of the grid: compared with the configurations at as many.
        if base and "error" not in base and r.case.threads == max(config.threads) \
                and r.seconds_per_frame == r.seconds_per_frame:
            r.speedup_vs_torch = base["seconds_per_frame"] / r.seconds_per_frame
        if gmac is not None and r.error is None:
            r.graphs = graph_throughput(r, gmac, ceiling if isinstance(ceiling, dict) else {})
    from .recommend import recommend

    result_dicts = [_result_dict(r) for r in results]
    report = {
        "command": config.command,
        "machine": machine_info(),
        "config": {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                   for k, v in asdict(config).items()},
        "original": _original_dict(original_result, measure_original) if original_result else
        "skipped: no fp32 bundle",
        "ceiling": ceiling,
        "graph_gmac": gmac if gmac is not None else f"skipped: needs {missing}",
        "results": result_dicts,
        "thread_scaling": thread_scaling(result_dicts),
        "torch_baseline": ({str(n): b for n, b in baselines.items()} if baselines
                           else "skipped: torch is not installed" if not torch_available else "skipped"),
        "recommendation": recommend(result_dicts, config.budget, config.min_psnr),
    }
    (config.out / "results.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (config.out / "results.md").write_text(markdown(report))
    plot(report, config.out)
    return report


def _original_dict(result: CaseResult, measured_apart: bool) -> dict:
    return {"label": result.case.label, "case": asdict(result.case), "error": result.error,
            "measured_apart": measured_apart,
            "seconds_per_frame": None if measured_apart or result.error else result.seconds_per_frame}


def _ceiling(backends: tuple[str, ...], threads: tuple[int, ...], device: str, ceiling_config: dict) -> dict:
    """The ceiling (in its own process): {"config": ..., "results": [...]}."""
    from .ceiling import CeilingConfig, measure_ceiling

    config = CeilingConfig(**ceiling_config)
    results = measure_ceiling(tuple(backends), tuple(threads), device, config)
    return {"config": {**ceiling_config, "gmac": config.gmac,
                       "stack": f"{config.layers} x Conv 3x3 {config.channels}->{config.channels} + ReLU at "
                                f"{config.size}x{config.size}, batch 1"},
            "results": [r.to_dict() for r in results]}


def merge_ceilings(runs: list[dict]) -> dict:
    """The faster of several ceiling measurements for each backend, precision and thread
    count (each entry says when it was measured); the runs themselves under ``runs``."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": "; ".join(r["error"] for r in runs), "runs": runs}
    best: dict[tuple, dict] = {}
    for run in good:
        for entry in run["results"]:
            key = (entry["backend"], entry["precision"], entry["threads"])
            if key not in best or entry["gmac_per_s"] > best[key]["gmac_per_s"]:
                best[key] = {**entry, "when": run["when"]}
    return {"config": good[0]["config"], "results": list(best.values()), "runs": runs}


def _has_calibrate_extra() -> tuple[bool, str]:
    """onnx (multiply-add counts, the ceiling's models) and nncf (its OpenVINO int8 model)."""
    import importlib.util

    missing = [m for m in ("onnx", "nncf") if importlib.util.find_spec(m) is None]
    return not missing, " and ".join(missing)


def _graph_gmac(bundle) -> dict[str, float]:
    """GMAC of one call of each frame graph at batch 1 (flow_head: one reference)."""
    from ..runtime.bundle import GRAPH_BY_NAME
    from .bench_int8 import graph_macs

    shapes = {name: {t.name: tuple(1 if d == "batch" else d for d in t.shape) for t in GRAPH_BY_NAME[name].inputs}
              for name in FRAME_GRAPHS}
    return {name: graph_macs(bundle.graph_file(name, "onnxruntime"), shapes[name]) / 1e9 for name in FRAME_GRAPHS}


def graph_throughput(result: CaseResult, gmac: dict[str, float], ceiling: dict) -> dict[str, dict]:
    """Each frame graph's GMAC per frame, GMAC/s and share of the ceiling of the same backend,
    precision and thread count (None where the ceiling has no such entry, e.g. bf16).

    Best against best: the graph's fastest frame against the ceiling's fastest run. Other
    load on the machine only ever slows a run, so the best of several is the figure it
    disturbs least; medians taken at different moments would compare the load instead."""
    c = result.case
    peak = next((e["gmac_per_s"] for e in ceiling.get("results", ()) if e["backend"] == c.backend
                 and e["precision"] == c.precision and e["threads"] == c.threads), None)
    out = {}
    for name in FRAME_GRAPHS:
        per_frame = gmac[name] * ((result.distinct_refs or c.refs) if name in PER_REFERENCE_GRAPHS else 1)
        seconds = (result.stages_min or result.stages).get(name)
        rate = per_frame / seconds if seconds else None
        out[name] = {"gmac": per_frame, "seconds": seconds, "gmac_per_s": rate,
                     "share_of_ceiling": rate / peak if rate and peak else None}
    return out


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
                     **{s: (base["stages_min"].get(s), r["stages_min"].get(s)) for s in (*FRAME_GRAPHS, "warp")}}
            rows.append({"setting": setting, "threads": [base["case"]["threads"], r["case"]["threads"]],
                         **{k: {"speedup": a / b, "efficiency": a / b / ratio} if a and b else None
                            for k, (a, b) in times.items()}})
    return rows


def _setting(case: dict) -> str:
    return Case(**case).setting


def _json_default(value):
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _compare(outputs: str, reference: str) -> Accuracy:
    from ..metrics import landmark_error_px, psnr, ssim

    with np.load(reference) as a, np.load(outputs) as b:
        faces_a, faces_b = a["faces"], b["faces"]
        n = min(len(faces_a), len(faces_b))
        to_img = lambda f: (np.clip(f, 0, 1).transpose(1, 2, 0) * 255)  # noqa: E731
        # Python floats: numpy's would compare into numpy bools, which JSON cannot write.
        return Accuracy(float(min(psnr(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))),
                        float(min(ssim(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))),
                        *map(float, landmark_error_px(b["contents"][:n], a["contents"][:n])))


def _score(results: list[CaseResult], original: CaseResult | None) -> None:
    """Accuracy of every case against the fp32 onnxruntime case with the same N, and against
    the original configuration."""
    references = {r.case.refs: r for r in results
                  if r.case.precision == "fp32" and r.case.backend == "onnxruntime" and r.error is None}
    for r in results:
        if r.error is not None:
            continue
        ref = references.get(r.case.refs)
        if ref is not None:
            same = _compare(r.outputs, ref.outputs)
            r.psnr, r.ssim, r.landmark_max_px, r.landmark_mean_px = (same.psnr, same.ssim, same.landmark_max_px,
                                                                     same.landmark_mean_px)
        if original is not None and original.error is None:
            r.vs_original = _compare(r.outputs, original.outputs)


def _result_dict(r: CaseResult) -> dict:
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


# -- reports --------------------------------------------------------------------------------------

def _fmt(value, spec: str, none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def _psnr_cell(identical: bool, psnr, exact: str = "exact") -> str:
    return exact if identical else _fmt(psnr, ".1f")


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# iplap bench\n"]
    if report.get("command"):
        lines += ["```bash", report["command"], "```\n"]
    lines += [f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {' '.join(m['instruction_sets'])}; "
              f"onnxruntime {m['packages'].get('onnxruntime')}, openvino {m['packages'].get('openvino')}.\n"]
    original = report["original"]
    original_label = original["label"] if isinstance(original, dict) else None
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
            f"| {r['label']} | {_fmt(r['seconds_per_frame'], '.3f')} [{_fmt(r['seconds_min'], '.3f')}-"
            f"{_fmt(r['seconds_max'], '.3f')}] | {_fmt(r['speedup_vs_torch'], '.2f')}x | "
            f"{_fmt(r['first_frame_seconds'], '.2f')} | {_fmt(r['prepare_seconds'], '.1f')} | "
            f"{_fmt(r['peak_rss_mb'], '.0f')} | {_psnr_cell(r['identical'], r['psnr'])} | {_fmt(r['ssim'], '.4f')} | "
            f"{_psnr_cell(r['identical_to_original'], r['psnr_vs_original'])} | "
            f"{_fmt(r['ssim_vs_original'], '.4f')} | "
            f"{_fmt(r['landmark_max_px'], '.3f')} / {_fmt(r['landmark_mean_px'], '.3f')} |")
    if isinstance(original, dict) and original["measured_apart"]:
        lines.append(f"\nThe original configuration ({original['label']}) was rendered apart, once, for its faces.")
    baseline = report["torch_baseline"]
    if isinstance(baseline, dict):
        threads = next((b["threads"] for b in baseline.values() if "threads" in b), "?")
        lines.append(f"\nOriginal torch renderer (whole flow network per reference per frame, {threads} threads; "
                     "**vs torch** compares the configurations with as many threads with it): " + ", ".join(
            f"N={n}: {b['seconds_per_frame']:.2f} s/frame" if "error" not in b else f"N={n}: failed ({b['error']})"
            for n, b in baseline.items()) + ".")
    else:
        lines.append(f"\nOriginal torch renderer: {baseline}.")
    lines += _ceiling_lines(report)
    lines += _scaling_lines(report)
    lines.append("\n## Stages (median s per rendered frame)\n")
    lines.append("| configuration | " + " | ".join(STAGES) + " |")
    lines.append("|---|" + "---|" * len(STAGES))
    for r in report["results"]:
        if not r["error"]:
            lines.append(f"| {r['label']} | " + " | ".join(_fmt(r['stages'].get(s), '.3f') for s in STAGES) + " |")
    from .recommend import describe

    lines += ["\n## Recommendation\n", *describe(report["recommendation"])]
    return "\n".join(lines) + "\n"


def _ceiling_lines(report: dict) -> list[str]:
    ceiling = report["ceiling"]
    lines = ["\n## The machine's ceiling\n"]
    if not isinstance(ceiling, dict) or "error" in ceiling:
        return lines + [f"Convolution ceiling: {ceiling if not isinstance(ceiling, dict) else ceiling['error']}."]
    cfg = ceiling["config"]
    lines += [f"A stack of {cfg['stack']}, {cfg['gmac']:.2f} GMAC per run, quantized as the bundles are; GMAC/s "
              f"from the fastest of {cfg['repeats']} runs (median in brackets), all configurations taking turns; "
              "measured before the grid and again after it, the faster of the two counts.\n",
              "| backend | precision | threads | ms per run: fastest (median) | GMAC/s: fastest (median) | measured |",
              "|---|---|---|---|---|---|"]
    for e in ceiling["results"]:
        lines.append(f"| {e['backend']} | {e['precision']} | {e['threads']} | {e['seconds_min'] * 1e3:.1f} "
                     f"({e['seconds'] * 1e3:.1f}) | {e['gmac_per_s']:.1f} ({e['gmac'] / e['seconds']:.1f}) | "
                     f"{e.get('when', '')} the grid |")
    gmac = report["graph_gmac"]
    if not isinstance(gmac, dict):
        return lines + [f"\nRenderer graphs against the ceiling: {gmac}."]
    lines += ["\nEach renderer graph per frame: GMAC (its convolutions' and matrix products' multiply-adds; "
              f"flow_head: {gmac['flow_head']:.2f} per reference, times the distinct references U), GMAC/s from its "
              "fastest frame, and in brackets its share of the ceiling (fastest run) at the same backend, precision "
              "and thread count.\n",
              "| configuration | U | " + " | ".join(f"{g} GMAC | {g} GMAC/s (share)" for g in FRAME_GRAPHS) + " |",
              "|---|---|" + "---|---|" * len(FRAME_GRAPHS)]
    for r in report["results"]:
        if r["error"] or not r.get("graphs"):
            continue
        cells = []
        for g in FRAME_GRAPHS:
            e = r["graphs"][g]
            share = f" ({e['share_of_ceiling']:.0%})" if e["share_of_ceiling"] is not None else ""
            cells.append(f"{e['gmac']:.1f} | {_fmt(e['gmac_per_s'], '.1f')}{share}")
        lines.append(f"| {r['label']} | {r['distinct_refs']} | " + " | ".join(cells) + " |")
    return lines


def _scaling_lines(report: dict) -> list[str]:
    rows = report["thread_scaling"]
    if not rows:
        return []
    keys = ("frame", *FRAME_GRAPHS, "warp")
    lines = ["\n## Thread scaling\n",
             "Speed-up of the fastest frame with more threads, and in brackets the efficiency (speed-up divided "
             "by the ratio of threads; 100% is perfect scaling).\n",
             "| setting | threads | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]['speedup']:.2f}x ({row[k]['efficiency']:.0%})" if row[k] else "n/a" for k in keys]
        lines.append(f"| {row['setting']} | {row['threads'][0]} -> {row['threads'][1]} | " + " | ".join(cells) + " |")
    return lines


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if not r["error"]]
    # 1. accuracy against time per frame, against fp32 at the same N (left) and against the
    # original configuration (right): one colour per backend and precision, one marker per N;
    # PSNR above the cap (float rounding only) is drawn at the cap.
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharex=True)
    cap = 70.0
    palette = plt.get_cmap("tab20")
    colours: dict[str, str] = {}
    markers = dict(zip(sorted({r["case"]["refs"] for r in ok}), "osD^v<>p"))
    panels = ((axes[0], "psnr", "identical", "vs fp32 at the same N: the loss from precision"),
              (axes[1], "psnr_vs_original", "identical_to_original",
               "vs the original configuration (N=25 fp32): what a setting gives up"))
    for ax, key, identical, title in panels:
        for r in ok:
            c = r["case"]
            name = f" ({c['name']})" if c.get("name") else ""
            series = f"{c['backend']} {c['precision']}{name}" + (
                f" t={c['threads']}" if len(report["config"]["threads"]) > 1 else "")
            colour = colours.setdefault(series, palette(len(colours) % 20))
            if r[key] is None and not r[identical]:
                continue  # no accuracy measured (no reference)
            y = cap if r[identical] or r[key] >= cap else r[key]
            ax.scatter(r["seconds_per_frame"], y, s=50, color=colour, marker=markers[c["refs"]], zorder=3)
        baseline = report["torch_baseline"]
        if isinstance(baseline, dict):
            for n, b in baseline.items():
                if "error" not in b:
                    ax.axvline(b["seconds_per_frame"], color="black", lw=0.8, ls=":")
                    ax.annotate(f"torch N={n}", (b["seconds_per_frame"], cap + 1.5), fontsize=7, ha="right",
                                rotation=90, va="bottom")
        ax.axhline(35, color="grey", lw=0.8, ls="--")
        ax.annotate("calibration gate (35 dB)", (0, 35), xycoords=("axes fraction", "data"), fontsize=7,
                    va="bottom", color="grey", xytext=(3, 2), textcoords="offset points")
        low = [r[key] - 2 for r in ok if r[key] is not None]
        ax.set_ylim(min(30.0, *low), cap + 8)
        ax.set_xlabel("seconds per frame (median)")
        ax.set_ylabel(f"worst-frame face PSNR (dB; >= {cap:.0f} drawn at {cap:.0f})")
        ax.set_title(title, fontsize=10)
    recommendation = report.get("recommendation") or {}
    front = recommendation.get("front") or []
    if front:  # the Pareto front, as a staircase
        xs = [o["seconds_per_frame"] for o in front]
        ys = [cap if o["identical_to_original"] else min(o["psnr_vs_original"], cap) for o in front]
        axes[1].step(xs, ys, where="post", color="black", lw=0.8, alpha=0.6, label="Pareto front")
    if recommendation.get("budget_seconds_per_frame"):
        axes[1].axvline(recommendation["budget_seconds_per_frame"], color="red", lw=0.8, ls="--")
    if recommendation.get("choice"):
        choice = recommendation["choice"]
        y = cap if choice["identical_to_original"] else min(choice["psnr_vs_original"], cap)
        axes[1].scatter(choice["seconds_per_frame"], y, s=220, facecolors="none", edgecolors="red", zorder=4)
        axes[1].annotate("recommended", (choice["seconds_per_frame"], y), fontsize=8, color="red",
                         xytext=(8, -12), textcoords="offset points")
    handles = [plt.Line2D([], [], color=col, marker="o", ls="", label=name) for name, col in colours.items()]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=f"N={n}") for n, m in markers.items()]
    if front:
        handles.append(plt.Line2D([], [], color="black", lw=0.8, alpha=0.6, label="Pareto front"))
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle("Accuracy against speed (up and left is better)")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_time.png", dpi=120)
    plt.close(fig)
    # 2. stage breakdown
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
    fig.savefig(out / "stages.png", dpi=120)
    plt.close(fig)
    # 3. time per frame against N
    fig, ax = plt.subplots(figsize=(8, 5))
    series: dict[str, list] = {}
    for r in ok:
        c = r["case"]
        name = f" ({c['name']})" if c.get("name") else ""
        series.setdefault(f"{c['backend']} {c['precision']}{name} t={c['threads']}", []).append((c["refs"],
                                                                                           r["seconds_per_frame"]))
    for name, points in series.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    baseline = report["torch_baseline"]
    if isinstance(baseline, dict):
        points = sorted((int(n), b["seconds_per_frame"]) for n, b in baseline.items() if "error" not in b)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="s", ls="--", color="black",
                    label="torch original")
    ax.set_xlabel("references N")
    ax.set_ylabel("seconds per frame")
    ax.legend(fontsize=8)
    ax.set_title("Time per frame against N")
    fig.tight_layout()
    fig.savefig(out / "time_vs_refs.png", dpi=120)
    plt.close(fig)
