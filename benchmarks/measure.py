"""Measuring ``iplap bench``'s configurations: the fixed inputs, one round of a configuration
(each in a fresh process: :func:`in_process`), the rounds pooled, the torch baseline, the
convolution ceiling, and the machine's description."""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import IplapError
from ..limits import BACKENDS
from ..provenance import machine_info as _machine_info
from .grid import STAGES, Case, CaseResult
from .timing import peak_rss_mb


def fixed_inputs(folder: Path, clip_seconds: float, frames: int, warmup: int) -> tuple[Path, Path]:
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



def measure_round(case: dict, clip: str, speech: str, frames: int, warmup: int, outputs: str) -> dict:
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


def torch_baseline(bundle: str, checkpoint: str | None, clip: str, speech: str, refs: int, threads: int,
                    repeats: int) -> dict:
    """The original renderer (flow network per reference per frame) on the benchmark's inputs:
    the clip's references, their sketches, a frame's sketches and crop, and a mel window."""
    import torch

    from ..export.reference import original_renderer
    from ..runtime.audio import load_audio, melspectrogram
    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from ..runtime.sketch import draw_sketches

    torch.set_num_threads(threads)
    renderer = original_renderer(checkpoint)  # stand-in weights without one: the same cost
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


def in_process(target, *args) -> dict:
    """Run ``target(*args)`` in a fresh process; return its dict, or {"error": ...}."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        try:
            return pool.apply(target, args)
        except IplapError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one failing configuration must not end the whole benchmark
            return {"error": f"{type(exc).__name__}: {exc}"}


def machine_info() -> dict:
    return _machine_info(("iplap", "numpy", *BACKENDS, "numba", "opencv-python-headless", "av",
                          "torch", "nncf", "matplotlib"))


def measure_ceiling_run(backends: tuple[str, ...], threads: tuple[int, ...], device: str, ceiling_config: dict,
                        files: dict[str, str] | None = None, precisions: tuple[str, ...] | None = None) -> dict:
    """The ceiling (in its own process): {"config": ..., "results": [...]}. ``files``: the
    stack's models by "backend precision" (:func:`build_ceiling_models`), else made here."""
    from .ceiling import PRECISIONS, CeilingConfig, measure_ceiling

    config = CeilingConfig.from_dict(ceiling_config)
    models = {tuple(k.split()): Path(v) for k, v in files.items()} if files else None
    results = measure_ceiling(tuple(backends), tuple(threads), device, config, models, tuple(precisions or PRECISIONS))
    return {"config": {**asdict(config), "gmac": config.gmac, "stack": config.describe("conv"),
                       "block_gmac": {b: config.block_gmac(b) for b in config.blocks},
                       "stacks": {b: config.describe(b) for b in config.blocks}},
            "results": [r.to_dict() for r in results]}


def build_ceiling_models(folder: str, ceiling_config: dict) -> dict[str, str]:
    """The ceiling stack's models, made once (in its own process: it needs nncf), by
    "backend precision"; for :func:`measure_ceiling_run`."""
    from .ceiling import CeilingConfig, build_models

    config = CeilingConfig.from_dict(ceiling_config)
    return {" ".join(key): str(path) for key, path in build_models(Path(folder), config).items()}


def merge_ceilings(runs: list[dict]) -> dict:
    """The faster of several ceiling measurements for each backend, precision and thread
    count (each entry says when it was measured); the burst and the sustained ceiling each
    from its own best run (``sustained_when``); the runs themselves under ``runs``."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": "; ".join(r["error"] for r in runs), "runs": runs}
    best: dict[tuple, dict] = {}
    sustained: dict[tuple, tuple[float, str]] = {}
    for run in good:
        for entry in run["results"]:
            key = (entry.get("block", "conv"), entry["backend"], entry["precision"], entry["threads"])
            if key not in best or entry["gmac_per_s"] > best[key]["gmac_per_s"]:
                best[key] = {**entry, "when": run["when"]}
            rate = entry.get("sustained_gmac_per_s")
            if rate and (key not in sustained or rate > sustained[key][0]):
                sustained[key] = rate, run["when"]
    for key, entry in best.items():
        entry["sustained_gmac_per_s"], entry["sustained_when"] = sustained.get(key, (None, None))
    return {"config": good[0]["config"], "results": list(best.values()), "runs": runs}


def has_calibrate_extra() -> tuple[bool, str]:
    """onnx (multiply-add counts, the ceiling's models) and nncf (its OpenVINO int8 model)."""
    import importlib.util

    missing = [m for m in ("onnx", "nncf") if importlib.util.find_spec(m) is None]
    return not missing, " and ".join(missing)


def has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
