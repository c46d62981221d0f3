"""``iplap bench``: accuracy against speed, per backend, precision, number of references and threads.

Every configuration runs in a fresh process (so its peak memory and thread settings are
its own) on the same fixed inputs, made from the shipped samples: a clip of the sample
photo with small head motion, and a slice of the sample speech. For each it measures:

* time per rendered frame (median and range over repeats, after warm-up), and per stage
  (landmarks, sketches, renderer graphs, warp, blend, decode, encode);
* the first-frame latency of streaming, and the per-video preparation time;
* peak RSS of the process;
* accuracy against the fp32 exact path (the fp32 bundle on onnxruntime, same N): PSNR and
  SSIM of the rendered 128x128 faces, and the error of the predicted landmarks in pixels
  of a 128 px crop.

The original-style torch renderer (the whole flow network per reference per frame) is
timed on the same inputs as the baseline when torch is installed, and reported as skipped
when it is not. Outputs: ``results.json`` (with the machine's CPU, cores, instruction
sets and package versions), ``results.md`` and three PNG plots.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import IplapError
from ..runtime.bundle import package_versions
from .timing import peak_rss_mb

log = logging.getLogger(__name__)

STAGES = ("landmarks", "sketches", "flow_modulations", "flow_head", "warp", "translation", "blend", "decode", "encode")


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
        repeats: timed repeats (after ``warmup`` untimed renders).
        clip_seconds: length of the face clip made from the sample photo.
        torch_baseline: time the original torch renderer when torch is installed.
        renderer_checkpoint: the checkpoint for that baseline (default: stand-in weights,
            which cost the same: the time depends on the architecture, not the values).
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

    @classmethod
    def quick(cls, bundles, out, **kwargs) -> "BenchConfig":
        """A fast grid for smoke tests: N=5, two frames, one repeat."""
        values = dict(refs=(5,), frames=2, repeats=1, warmup=1, clip_seconds=0.4)
        values.update(kwargs)
        return cls(tuple(bundles), Path(out), **values)


@dataclass
class Case:
    bundle: str
    precision: str
    backend: str
    device: str
    refs: int
    threads: int

    @property
    def label(self) -> str:
        device = f" {self.device}" if self.backend == "openvino" else ""
        return f"{self.backend}{device} {self.precision} N={self.refs} t={self.threads}"


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
    psnr: float | None = None
    ssim: float | None = None
    landmark_max_px: float | None = None
    landmark_mean_px: float | None = None
    speedup_vs_torch: float | None = None
    error: str | None = None


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

def _measure(case: dict, clip: str, speech: str, frames: int, repeats: int, warmup: int, outputs: str) -> dict:
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
    per_frame, stages, first_frame = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            writer = VideoWriter(Path(tmp) / "out.mp4", avatar.track.width, avatar.track.height)
            times = time_renders(pipeline, avatar, wav, warmup, frames, writer, keep_outputs=repeat == repeats - 1)
            writer.abort()
            per_frame += times.walls
            stages += times.stages
            first_frame = times.first_frame_seconds if first_frame is None else first_frame
    faces, contents = times.faces, times.contents
    np.savez(outputs, faces=np.stack(faces), contents=np.stack(contents))
    stage_median = {k: statistics.median(s.get(k, 0.0) for s in stages) for k in STAGES}
    return {"seconds_per_frame": statistics.median(per_frame), "seconds_min": min(per_frame),
            "seconds_max": max(per_frame), "stages": stage_median, "first_frame_seconds": first_frame,
            "prepare_seconds": prepare_s, "peak_rss_mb": peak_rss_mb()}


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
            "peak_rss_mb": peak_rss_mb()}


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
    bundles = [Bundle.load(b) for b in config.bundles]
    if not bundles:
        raise IplapError("give at least one --bundle")
    config.out.mkdir(parents=True, exist_ok=True)
    cases = [Case(str(b.root), b.precision, backend, config.device if backend == "openvino" else "CPU", refs, threads)
             for refs in config.refs for b in bundles for backend in config.backends for threads in config.threads]
    torch_available = _has_torch()
    steps = len(cases) + (len(config.refs) if config.torch_baseline and torch_available else 0)
    bar = tqdm(total=steps, desc="benchmark", unit="config", file=sys.stderr, disable=not progress)
    results: list[CaseResult] = []
    baselines: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="iplap-bench-") as tmp:
        clip, speech = fixed_inputs(Path(tmp), config.clip_seconds, config.frames, config.repeats, config.warmup)
        for k, case in enumerate(cases):
            bar.set_postfix_str(case.label)
            outputs = str(Path(tmp) / f"case{k}.npz")
            raw = _in_process(_measure, asdict(case), str(clip), str(speech), config.frames, config.repeats,
                              config.warmup, outputs)
            if "error" in raw:
                results.append(CaseResult(case, float("nan"), float("nan"), float("nan"), {}, float("nan"),
                                          float("nan"), float("nan"), error=raw["error"]))
            else:
                result = CaseResult(case, **raw)
                result.outputs = outputs  # type: ignore[attr-defined]
                results.append(result)
            bar.update()
        if config.torch_baseline and torch_available:
            checkpoint = str(config.renderer_checkpoint) if config.renderer_checkpoint else None
            fp32 = next((b for b in bundles if b.precision == "fp32"), bundles[0])
            for refs in config.refs:
                bar.set_postfix_str(f"torch original N={refs}")
                baselines[refs] = _in_process(_torch_baseline, str(fp32.root), checkpoint, str(clip), str(speech),
                                              refs, max(config.threads), max(1, min(config.repeats, 2)))
                bar.update()
        bar.close()
        _score(results)
    for r in results:
        base = baselines.get(r.case.refs)
        if base and "error" not in base and r.seconds_per_frame == r.seconds_per_frame:
            r.speedup_vs_torch = base["seconds_per_frame"] / r.seconds_per_frame
    report = {
        "machine": machine_info(),
        "config": {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                   for k, v in asdict(config).items()},
        "results": [_result_dict(r) for r in results],
        "torch_baseline": ({str(n): b for n, b in baselines.items()} if baselines
                           else "skipped: torch is not installed" if not torch_available else "skipped"),
    }
    (config.out / "results.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (config.out / "results.md").write_text(markdown(report))
    plot(report, config.out)
    return report


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


def _score(results: list[CaseResult]) -> None:
    """Accuracy of every case against the fp32 onnxruntime case with the same N."""
    from ..metrics import landmark_error_px, psnr, ssim

    references = {r.case.refs: r for r in results
                  if r.case.precision == "fp32" and r.case.backend == "onnxruntime" and r.error is None}
    for r in results:
        ref = references.get(r.case.refs)
        if ref is None or r.error is not None:
            continue
        with np.load(ref.outputs) as a, np.load(r.outputs) as b:  # type: ignore[attr-defined]
            faces_a, faces_b = a["faces"], b["faces"]
            n = min(len(faces_a), len(faces_b))
            to_img = lambda f: (np.clip(f, 0, 1).transpose(1, 2, 0) * 255)  # noqa: E731
            r.psnr = min(psnr(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))
            r.ssim = min(ssim(to_img(x), to_img(y)) for x, y in zip(faces_a[:n], faces_b[:n]))
            r.landmark_max_px, r.landmark_mean_px = landmark_error_px(b["contents"][:n], a["contents"][:n])


def _result_dict(r: CaseResult) -> dict:
    d = asdict(r)
    d["label"] = r.case.label
    # JSON has no infinity: identical faces (the reference configuration) get psnr null.
    d["identical"] = r.psnr == float("inf")
    if d["identical"]:
        d["psnr"] = None
    return d


# -- reports --------------------------------------------------------------------------------------

def _fmt(value, spec: str, none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# iplap bench\n",
             f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {' '.join(m['instruction_sets'])}; "
             f"onnxruntime {m['packages'].get('onnxruntime')}, openvino {m['packages'].get('openvino')}.\n",
             "Time per rendered frame: median [min-max] over repeats. Accuracy against the fp32 exact path "
             "(onnxruntime, same N): worst-frame PSNR and SSIM of the 128x128 face, landmark error in px of a "
             "128 px crop.\n",
             "| configuration | s/frame | vs torch | first frame s | prepare s | peak RSS MB | PSNR dB | SSIM "
             "| landmarks max/mean px |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["error"]:
            lines.append(f"| {r['label']} | failed: {r['error']} |||||||| ")
            continue
        accuracy = "exact" if r.get("identical") else _fmt(r["psnr"], ".1f")
        lines.append(
            f"| {r['label']} | {_fmt(r['seconds_per_frame'], '.3f')} [{_fmt(r['seconds_min'], '.3f')}-"
            f"{_fmt(r['seconds_max'], '.3f')}] | {_fmt(r['speedup_vs_torch'], '.2f')}x | "
            f"{_fmt(r['first_frame_seconds'], '.2f')} | {_fmt(r['prepare_seconds'], '.1f')} | "
            f"{_fmt(r['peak_rss_mb'], '.0f')} | {accuracy} | {_fmt(r['ssim'], '.4f')} | "
            f"{_fmt(r['landmark_max_px'], '.3f')} / {_fmt(r['landmark_mean_px'], '.3f')} |")
    baseline = report["torch_baseline"]
    if isinstance(baseline, dict):
        lines.append("\nOriginal torch renderer (whole flow network per reference per frame): " + ", ".join(
            f"N={n}: {b['seconds_per_frame']:.2f} s/frame" if "error" not in b else f"N={n}: failed ({b['error']})"
            for n, b in baseline.items()) + ".")
    else:
        lines.append(f"\nOriginal torch renderer: {baseline}.")
    lines.append("\nStages (median s per rendered frame):\n")
    lines.append("| configuration | " + " | ".join(STAGES) + " |")
    lines.append("|---|" + "---|" * len(STAGES))
    for r in report["results"]:
        if not r["error"]:
            lines.append(f"| {r['label']} | " + " | ".join(_fmt(r['stages'].get(s), '.3f') for s in STAGES) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if not r["error"]]
    # 1. accuracy against time per frame: one colour per backend and precision, one marker per N;
    # PSNR above the cap (fp32 on either backend: float rounding only) is drawn at the cap.
    fig, ax = plt.subplots(figsize=(8, 5))
    cap = 60.0
    colours: dict[str, str] = {}
    markers = dict(zip(sorted({r["case"]["refs"] for r in ok}), "osD^v<>p"))
    for r in ok:
        c = r["case"]
        series = f"{c['backend']} {c['precision']}" + (f" t={c['threads']}" if len(report["config"]["threads"]) > 1
                                                        else "")
        colour = colours.setdefault(series, f"C{len(colours)}")
        if r["psnr"] is None and not r.get("identical"):
            continue  # no accuracy measured (no fp32 reference at this N)
        y = cap if r.get("identical") or r["psnr"] >= cap else r["psnr"]
        ax.scatter(r["seconds_per_frame"], y, s=50, color=colour, marker=markers[c["refs"]], zorder=3)
    baseline = report["torch_baseline"]
    if isinstance(baseline, dict):
        for n, b in baseline.items():
            if "error" not in b:
                ax.axvline(b["seconds_per_frame"], color="black", lw=0.8, ls=":")
                ax.annotate(f"torch N={n}", (b["seconds_per_frame"], cap + 1.5), fontsize=7, ha="right",
                            rotation=90, va="bottom")
    ax.axhline(35, color="grey", lw=0.8, ls="--")
    ax.annotate("calibration gate (35 dB)", (ax.get_xlim()[0], 35), fontsize=7, va="bottom", color="grey",
                xytext=(3, 2), textcoords="offset points")
    handles = [plt.Line2D([], [], color=col, marker="o", ls="", label=name) for name, col in colours.items()]
    handles += [plt.Line2D([], [], color="grey", marker=m, ls="", label=f"N={n}") for n, m in markers.items()]
    ax.legend(handles=handles, fontsize=8, loc="center right")
    ax.set_ylim(min(30.0, *(r["psnr"] - 2 for r in ok if r["psnr"] is not None)), cap + 8)
    ax.set_xlabel("seconds per frame (median)")
    ax.set_ylabel(f"worst-frame face PSNR vs fp32 (dB; >= {cap:.0f} drawn at {cap:.0f})")
    ax.set_title("Accuracy against speed (up and left is better)")
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
        series.setdefault(f"{c['backend']} {c['precision']} t={c['threads']}", []).append((c["refs"],
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
