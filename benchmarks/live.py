"""``iplap bench --live``: the live stream's frame rate and latency against the machine's ceiling.

For every bundle, backend, thread count, avatar (the sample photo, and a face video made
from it with head motion) and number of references N, in a fresh process per
configuration and round (:func:`measure_live_round`), through the public live API
(``Pipeline.open_live``, speech pushed as a TTS would push it):

* **sustained frame rate**: a turn rendered without a clock (``realtime=False``: every
  frame gets its picture, as fast as the machine renders), timed from its second render
  to its last: pictures per second the live loop sustains, every stage included
  (landmarks, sketches, crop, graphs, warp, blend, cross-fade);
* **first-frame latency**: a turn on the wall clock (``realtime=True``), from its first
  sample pushed to its first speaking frame shown (the model needs about 80 ms of
  speech before its first window is complete), and what that turn did: pictures
  rendered per second, held frames, the session's ``k`` and real-time factor;
* **interruption latency**: ``interrupt()`` during that turn to the first idle frame;
* **the frame rate the ceiling allows**: the renderer graphs' multiply-adds per frame
  (flow_modulations + flow_head x distinct references + translation) over the
  convolution ceiling (:mod:`.ceiling`) of the same backend, precision and thread count,
  measured before the grid and after it (the faster counts); and the ratio of the two.
  Best against best: the fastest round's rate against the ceiling's fastest run;
* **accuracy**: PSNR of the rendered speaking frames (the face box) against the
  reference configuration's (the fp32 bundle on onnxruntime at the largest N of the
  grid, same avatar, same speech), so that the live choice can prefer the most accurate.

The live choice (:func:`live_choice`): per avatar kind, the most accurate configuration
that sustains 25 fps; where none does, the fastest, with the picture rate it sustains
(a live session renders every k-th frame and holds the picture between).

Outputs ``live.json`` and ``live.md`` in the output folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import IplapError
from ..runtime.constants import BACKENDS, FPS
from . import LIVE_REFS
from .ceiling import CeilingConfig, ceiling_result
from .grid import PER_REFERENCE_GRAPHS, STAGES, Skipped
from .recommend import PSNR_RESOLUTION_DB
from .report import _fmt

log = logging.getLogger(__name__)

AVATARS = ("photo", "video")
PSNR_PEAK = 255.0  # uint8 frames


@dataclass(frozen=True)
class LiveBenchConfig:
    """What ``iplap bench --live`` measures.

    Attributes:
        bundles: model bundles (the fp32 one, if given, is the accuracy reference).
        out_dir: folder for live.json and live.md.
        backends, device, threads, refs, avatars: the grid.
        ov_precisions: OpenVINO inference precision hints to run each OpenVINO case with
            (None: the bundle's own, as ``iplap run`` would; ``f32`` exact; ``bf16`` where the
            CPU has it: the float work around int8 layers).
        fuse_flow: OpenVINO: run flow_modulations and flow_head as one model
            (``BackendConfig.fuse_flow``, the default), as two, or both for comparison.
        workers: renders in flight in the live session (``LiveConfig.workers``), the
            backend built for as many at once (``BackendConfig.streams``), the threads shared.
        frames: pictures timed without a clock, after the first render.
        realtime_seconds: length of the turn played on the wall clock.
        repeats: rounds (every configuration once per round, in a fresh process).
        clip_seconds: length of the face video made from the sample photo.
        ceiling, ceiling_config: the convolution ceiling, before and after the grid.
        soak_seconds: after the grid, run each avatar's live choice for this long as an
            agent would (:func:`soak_live`: replies, gaps, interruptions) and report its
            memory and latencies (0: no soak).
        command: the command line, written above the tables.
    """

    bundles: tuple[Path, ...]
    out_dir: Path
    backends: tuple[str, ...] = BACKENDS
    device: str = "CPU"
    threads: tuple[int, ...] = (os.cpu_count() or 1,)
    refs: tuple[int, ...] = LIVE_REFS
    avatars: tuple[str, ...] = AVATARS
    ov_precisions: tuple[str | None, ...] = (None,)
    fuse_flow: tuple[bool, ...] = (True,)
    workers: tuple[int, ...] = (1,)
    frames: int = 12
    realtime_seconds: float = 3.0
    repeats: int = 2
    clip_seconds: float = 1.0
    ceiling: bool = True
    ceiling_config: CeilingConfig = field(default_factory=CeilingConfig)
    soak_seconds: float = 0.0
    command: str | None = None

    def __post_init__(self):
        unknown = [a for a in self.avatars if a not in AVATARS]
        if unknown:
            raise IplapError(f"unknown avatar kind {unknown[0]!r}: choose photo and/or video")
        if self.frames < 2:
            raise IplapError(f"the live benchmark times at least 2 frames, got {self.frames}")

    @classmethod
    def quick(cls, bundles, out_dir, **kwargs) -> LiveBenchConfig:
        """A smoke run: N=1, 3 timed frames, a 1 s turn on the clock, one round, a short ceiling."""
        values = dict(refs=(1,), frames=3, realtime_seconds=1.0, repeats=1, clip_seconds=0.4,
                      ceiling_config=CeilingConfig(layers=2, channels=64, repeats=3, warmup=1, window_seconds=0.2,
                                                   windows=1,
                                                   calibration_samples=2))
        values.update(kwargs)
        return cls(tuple(bundles), Path(out_dir), **values)


@dataclass(frozen=True)
class LiveCase:
    bundle: str
    precision: str
    backend: str
    device: str
    threads: int
    avatar: str  # photo or video
    refs: int
    hint: str | None = None  # OpenVINO inference precision hint (None: the bundle's)
    name: str = ""  # the bundle's folder name, where two bundles share a precision
    workers: int = 1  # renders in flight
    fuse_flow: bool = True  # OpenVINO: flow_modulations + flow_head as one model

    @property
    def label(self) -> str:
        device = f" {self.device}" if self.backend == "openvino" else ""
        device += "" if self.fuse_flow or self.backend != "openvino" else " unfused"
        hint = f" {self.hint}" if self.hint else ""
        name = f" ({self.name})" if self.name else ""
        workers = f" x{self.workers}" if self.workers > 1 else ""
        return (f"{self.avatar} {self.backend}{device} {self.precision}{hint}{name} N={self.refs} "
                f"t={self.threads}{workers}")

    @property
    def ceiling_precision(self) -> str:
        return "int8" if self.precision == "int8" else "fp32"


def live_cases(config: LiveBenchConfig, bundles: dict) -> list[LiveCase]:
    precisions = [b.precision for b in bundles.values()]
    names = {p: Path(p).name if precisions.count(b.precision) > 1 else "" for p, b in bundles.items()}
    cases = []
    for avatar in config.avatars:
        for refs in config.refs:
            for path, b in bundles.items():
                for backend in config.backends:
                    hints = config.ov_precisions if backend == "openvino" else (None,)
                    fusions = config.fuse_flow if backend == "openvino" else (True,)
                    for hint, fuse, threads, workers in itertools.product(hints, fusions, config.threads,
                                                                          config.workers):
                        device = config.device if backend == "openvino" else "CPU"
                        cases.append(LiveCase(path, b.precision, backend, device, threads, avatar, refs,
                                              hint, names[path], workers, fuse))
    return cases


def reference_case(cases: list[LiveCase], avatar: str) -> LiveCase | None:
    """The accuracy reference for an avatar kind: fp32 on onnxruntime, the largest N, the most threads."""
    fp32 = [c for c in cases if c.avatar == avatar and c.precision == "fp32" and c.backend == "onnxruntime"]
    return max(fp32, key=lambda c: (c.refs, c.threads), default=None)


# -- one configuration, in its own process ------------------------------------------------

def live_inputs(folder: Path, clip_seconds: float) -> dict[str, str]:
    """The photo and the face video every configuration uses (deterministic)."""
    from ..samples import FACE_IMAGE
    from ..samples.clip import head_motion_frames, write_clip

    clip = write_clip(folder / "clip.mp4", head_motion_frames(clip_seconds, size=256))
    return {"photo": str(FACE_IMAGE), "video": str(clip)}


def _speech(seconds: float, offset: float = 0.5) -> np.ndarray:
    from ..runtime.audio import load_audio
    from ..runtime.constants import SAMPLE_RATE
    from ..samples import SPEECH_16K

    wav = load_audio(SPEECH_16K)
    need = int(round(seconds * SAMPLE_RATE))
    start = int(offset * SAMPLE_RATE)
    reps = math.ceil((start + need) / len(wav))
    return np.tile(wav, reps)[start:start + need]


def _face_region(avatar) -> tuple[int, int, int, int]:
    """The box every crop of the avatar falls in (y1, y2, x1, x2)."""
    boxes = np.asarray(avatar.track.boxes)
    return int(boxes[:, 0].min()), int(boxes[:, 1].max()), int(boxes[:, 2].min()), int(boxes[:, 3].max())


def _case_pipeline(case: dict):
    """The pipeline of a configuration (a :class:`LiveCase` as a dict): its backend, hint, N,
    threads, and the graphs built for its renders in flight."""
    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig

    backend = BackendConfig(backend=case["backend"], device=case["device"], threads=case["threads"],
                            precision=case["hint"] if case["backend"] == "openvino" else None,
                            streams=case["workers"], fuse_flow=case["fuse_flow"])
    return Pipeline(case["bundle"], PipelineConfig(backend=backend, refs=case["refs"]))


def measure_live_round(case: dict, face: str, frames: int, realtime_seconds: float, outputs: str) -> dict:
    """One round of a configuration: the throughput turn (no clock), then a turn on the clock
    with an interruption near its end. Writes the throughput turn's face regions to ``outputs``."""
    from ..runtime.constants import SAMPLE_RATE
    from ..runtime.live import LiveConfig
    from .timing import peak_rss_mb

    pipeline = _case_pipeline(case)
    start = time.perf_counter()
    avatar = pipeline.prepare(face)
    prepare_s = time.perf_counter() - start
    region = _face_region(avatar)

    # 1. Throughput: every frame rendered, as fast as the machine goes (no cross-fade, so
    # that the accuracy frames are the renderer's own).
    renders = frames + 1  # the first render (three frames) is not timed
    speech = _speech((renders + 2) / FPS + 0.12)
    shown: list[tuple[float, object]] = []
    with pipeline.open_live(avatar, SAMPLE_RATE, realtime=False, config=LiveConfig(fade_frames=0)) as live:
        it = live.frames()
        next(it)  # the session is up and idle
        live.push(speech)
        live.end_of_turn()
        for frame in it:
            if frame.speaking:
                shown.append((time.perf_counter(), frame))
            elif shown:
                break
        stats = live.stats()
    rendered = [(t, f) for t, f in shown if not f.held][:stats.rendered]
    timed = rendered[3:]  # from the second render: one picture per render
    seconds = [b[0] - a[0] for a, b in zip(timed, timed[1:])]
    y1, y2, x1, x2 = region
    np.savez(outputs, faces=np.stack([f.image[y1:y2, x1:x2] for _, f in rendered]))

    # 2. On the clock: latency, pictures per second, k; then an interruption.
    turn = _speech(realtime_seconds, offset=1.0)
    with pipeline.open_live(avatar, SAMPLE_RATE, realtime=True) as live:
        it = live.frames()
        for _ in range(3):
            next(it)
        live.push(turn)
        live.end_of_turn()
        speaking = 0
        interrupt_at = max(4, int(realtime_seconds * FPS) - 8)
        interrupted = None
        for frame in it:
            if frame.speaking:
                speaking += 1
                if speaking == interrupt_at:
                    asked = time.monotonic()
                    live.interrupt()
                    realtime_stats = live.stats()
            elif speaking:
                interrupted = time.monotonic() - asked if speaking >= interrupt_at else None
                break
        if speaking < interrupt_at:
            realtime_stats = live.stats()
    stage_ms = {k: 1e3 * v / stats.renders for k, v in stats.stage_seconds.items()} if stats.renders else {}
    return {"frame_seconds": seconds, "stage_ms": stage_ms, "prepare_seconds": prepare_s, "peak_rss_mb": peak_rss_mb(),
            "distinct_refs": avatar.references.distinct, "latency_s": realtime_stats.latencies[0],
            "realtime": {"speaking_frames": speaking, "rendered": realtime_stats.rendered,
                         "held": realtime_stats.held, "stalls": realtime_stats.stalls, "k": realtime_stats.k,
                         "real_time_factor": realtime_stats.real_time_factor,
                         # the first render's picture fills three frames: one picture
                         "pictures_per_s": max(0, realtime_stats.rendered - 2) * FPS
                         / max(1, realtime_stats.speaking_frames)},
            "interrupt_s": interrupted}


def soak_live(case: dict, face: str, seconds: float, turn_seconds: float = 6.0, gap_seconds: float = 3.0) -> dict:
    """A live session of ``seconds`` on the wall clock, as an agent uses it: a reply of
    ``turn_seconds`` pushed at once, played, ``gap_seconds`` idle, and again; every third
    reply is interrupted half-way. Its memory (resident, sampled every second, and the
    peak), latencies, interruption latencies, k and real-time factor."""
    from ..runtime.constants import SAMPLE_RATE
    from .timing import peak_rss_mb, rss_mb

    pipeline = _case_pipeline(case)
    avatar = pipeline.prepare(face)
    rss_start = rss_mb()
    samples, interrupts, trace = [], [], []
    replies = 0
    with pipeline.open_live(avatar, SAMPLE_RATE, realtime=True) as live:
        start = time.monotonic()
        next_reply, cut_at, asked = start + 1.0, None, None
        last_sample = start
        for frame in live.frames():
            now = time.monotonic()
            if now - last_sample >= 1.0:
                samples.append(rss_mb())
                last_sample = now
                if len(samples) % 30 == 0:
                    trace.append((round(now - start), samples[-1]))
            if asked is not None and not frame.speaking:
                interrupts.append(now - asked)
                asked = None
            if now - start >= seconds:
                break
            if cut_at is not None and frame.speaking and now >= cut_at:
                asked, cut_at = time.monotonic(), None
                live.interrupt()
            if now >= next_reply and not frame.speaking and live.queued_speech_seconds == 0:
                live.push(_speech(turn_seconds, offset=0.2 + (replies % 5) * 1.3))
                live.end_of_turn()
                replies += 1
                cut_at = now + turn_seconds / 2 if replies % 3 == 0 else None
                next_reply = now + turn_seconds + gap_seconds
        stats = live.stats()
    half = samples[len(samples) // 2] if samples else math.nan
    return {"seconds": seconds, "replies": replies, "rss_start_mb": rss_start,
            "rss_half_mb": half, "rss_trace_mb": trace,  # (seconds, MB) every 30 s
            "rss_max_mb": max(samples, default=math.nan), "rss_end_mb": samples[-1] if samples else math.nan,
            "peak_rss_mb": peak_rss_mb(), "frames": stats.frames, "fps": stats.frames / seconds,
            "latency_s_mean": statistics.mean(stats.latencies) if stats.latencies else None,
            "latency_s_max": max(stats.latencies, default=None),
            "interrupt_s_max": max(interrupts, default=None), "interrupts": len(interrupts),
            "k": stats.k, "real_time_factor": stats.real_time_factor, "rendered": stats.rendered,
            "held": stats.held, "stalls": stats.stalls, "turns": stats.turns, "interrupted": stats.interrupted}


# -- the run ------------------------------------------------------------------------------

def run_live_bench(config: LiveBenchConfig, show_progress: bool = True) -> dict:
    """Measure the live grid and write live.json and live.md; the report."""
    from tqdm import tqdm

    from ..runtime.bundle import Bundle
    from .measure import (build_ceiling_models, has_calibrate_extra, in_process, machine_info, measure_ceiling_run,
                          merge_ceilings)
    from .scoring import graph_gmac, json_default

    if not config.bundles:
        raise IplapError("give at least one --bundle")
    bundles = {str(p): Bundle.load(p) for p in config.bundles}
    cases = live_cases(config, bundles)
    macs_ok, missing = has_calibrate_extra()
    measures_ceiling = config.ceiling and macs_ok
    bar = tqdm(total=len(cases) * config.repeats + 2 * measures_ceiling, desc="live benchmark", unit="config",
               file=sys.stderr, disable=not show_progress)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    ceiling_runs = []
    files: dict[str, str] | None = None
    # Right before and right after each round, its own ceiling (backend, precision, threads):
    # a burst and one window, so that the ceiling is sampled through the same phases of the
    # host as the rounds, and each round has a share of what the machine did at the time.
    between = asdict(dataclasses.replace(config.ceiling_config, windows=min(1, config.ceiling_config.windows)))

    def ceiling(when: str, case: LiveCase | None = None) -> None:
        if case is None:
            bar.set_postfix_str(f"convolution ceiling, {when} the grid")
            run = in_process(measure_ceiling_run, config.backends, config.threads, config.device,
                             asdict(config.ceiling_config), files)
        else:
            run = in_process(measure_ceiling_run, (case.backend,), (case.threads,), case.device, between, files,
                             (case.ceiling_precision,))
        ceiling_runs.append({"when": when, **run})
        bar.update(case is None)

    reference = next((p for p, b in bundles.items() if b.precision == "fp32"), next(iter(bundles)))
    gmac = graph_gmac(bundles[reference]) if macs_ok else None
    rounds: dict[int, list[dict]] = {k: [] for k in range(len(cases))}
    with tempfile.TemporaryDirectory(prefix="iplap-live-bench-") as tmp:
        if measures_ceiling:
            bar.set_postfix_str("convolution ceiling: its models")
            built = in_process(build_ceiling_models, str(Path(tmp) / "ceiling"), asdict(config.ceiling_config))
            files = None if "error" in built else built
            ceiling("before")
        faces = live_inputs(Path(tmp), config.clip_seconds)
        outputs = {k: str(Path(tmp) / f"case{k}.npz") for k in range(len(cases))}
        for round_ in range(config.repeats):
            for k, case in enumerate(cases):
                bar.set_postfix_str(f"{case.label} (round {round_ + 1}/{config.repeats})")
                beside = []
                if measures_ceiling and files:
                    ceiling(f"ahead of (round {round_ + 1}, {case.label})", case)
                    beside.append(ceiling_runs[-1])
                rounds[k].append(in_process(measure_live_round, asdict(case), faces[case.avatar], config.frames,
                                            config.realtime_seconds, outputs[k] if round_ == 0 else
                                            str(Path(tmp) / "again.npz")))
                if measures_ceiling and files:
                    ceiling(f"between (round {round_ + 1}, {case.label})", case)
                    beside.append(ceiling_runs[-1])
                for block, (_, key) in STACK_FIELDS.items():
                    rounds[k][-1][key] = [ceiling_entry(run, case, block) for run in beside]
                bar.update()
        if measures_ceiling:
            ceiling("after")
        bar.close()
        ceilings = merge_ceilings(ceiling_runs) if ceiling_runs else Skipped(
            f"needs {missing} (pip install 'iplap[calibrate]')" if not macs_ok else "")
        results = [pool_live(case, rounds[k], gmac, ceilings) for k, case in enumerate(cases)]
        _score(cases, results, outputs)
        choice = live_choice(results)
        soaks = {}
        if config.soak_seconds > 0:
            for avatar, c in choice.items():
                log.info("soak: %s for %.0f s", c["label"], config.soak_seconds)
                soaks[avatar] = {"label": c["label"], **in_process(soak_live, c["case"], faces[avatar],
                                                                   config.soak_seconds)}
    report = {"command": config.command, "machine": machine_info(),
              "config": {k: (list(map(str, v)) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                         for k, v in asdict(config).items()},
              "ceiling": ceilings, "graph_gmac": gmac if gmac is not None else Skipped(f"needs {missing}"),
              "results": results, "choice": choice, "soak": soaks or Skipped("no --soak")}
    (config.out_dir / "live.json").write_text(json.dumps(report, indent=2, default=json_default) + "\n")
    (config.out_dir / "live.md").write_text(live_markdown(report))
    return report


def frame_gmac(gmac: dict[str, float] | None, distinct_refs: int) -> float | None:
    """The renderer graphs' multiply-adds of one frame, in 10^9."""
    if gmac is None:
        return None
    return sum(v * (distinct_refs if name in PER_REFERENCE_GRAPHS else 1) for name, v in gmac.items())


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
    for block, (prefix, _) in STACK_FIELDS.items():
        entry = ceiling_entry(ceiling, case, block)
        for suffix, key in (("", "gmac_per_s"), ("_sustained", "sustained_gmac_per_s")):
            peak = entry.get(key) if entry else None
            fps = peak / per_frame if peak and per_frame else None
            out[f"{prefix}ceiling_fps{suffix}"] = fps
            out[f"{prefix}share_of_ceiling{suffix}"] = out["fps_best"] / fps if fps and out["fps_best"] else None
    stages = [r["stage_ms"] for r in rounds if r.get("stage_ms")]
    names = dict.fromkeys(k for st in stages for k in st)  # every round's stages, in order of appearance
    out["stage_ms"] = {k: statistics.median(st.get(k, 0.0) for st in stages) for k in names}
    out["rounds"] = [_same_phase(r, per_frame) for r in rounds if r["frame_seconds"]]
    for prefix, _ in STACK_FIELDS.values():
        shares = [r[f"{prefix}share"] for r in out["rounds"] if r[f"{prefix}share"] is not None]
        out[f"{prefix}share_same_phase"] = statistics.median(shares) if shares else None
        out[f"{prefix}share_same_phase_best"] = max(shares) if shares else None
    return out


def ceiling_entry(ceiling, case: LiveCase, block: str = "conv") -> dict | None:
    """The entry of a ceiling measurement (one run, or merged) for ``case``'s backend,
    precision and threads, of the ``block`` stack; None where it has none (skipped,
    failed, not measured)."""
    if isinstance(ceiling, Skipped) or not isinstance(ceiling, dict) or "error" in ceiling:
        return None
    return ceiling_result(ceiling, case.backend, case.ceiling_precision, case.threads, block)


#: Per ceiling stack (the plain one, the SPADE block): the prefix of its fields in a
#: result, and the key of the entries measured beside a round.
STACK_FIELDS = {"conv": ("", "ceiling_beside"), "spade": ("block_", "block_beside")}


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


def _score(cases: list[LiveCase], results: list[dict], outputs: dict[int, str]) -> None:
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


def live_choice(results: list[dict], fps: float = FPS) -> dict:
    """Per avatar kind: the most accurate configuration sustaining ``fps``; where none does,
    the fastest, and the picture rate it sustains (k frames per picture).

    "Sustaining" is judged on the median over all frames of all rounds (``fps_median``), not
    on the fastest round: on a shared host one round can fall in a fast phase (measured:
    8.3 pictures/s in a round of a setting whose median was 5.2), and a session lasts longer."""
    choices = {}

    def rate(r):
        return r.get("fps_median") or r["fps_best"]

    for avatar in AVATARS:
        ok = [r for r in results if r["case"]["avatar"] == avatar and not r["error"] and r.get("fps_best")]
        if not ok:
            continue

        def accuracy(r):
            """PSNR at the tables' resolution, as the offline recommendation compares it."""
            if r.get("identical_to_reference"):
                return math.inf
            psnr = r.get("psnr_vs_reference")
            return -math.inf if psnr is None else round(psnr / PSNR_RESOLUTION_DB) * PSNR_RESOLUTION_DB

        sustaining = [r for r in ok if rate(r) >= fps]
        if sustaining:
            pick = max(sustaining, key=lambda r: (accuracy(r), rate(r)))
            choices[avatar] = {"label": pick["label"], "case": pick["case"], "sustains": True,
                               "fps": rate(pick), "k": 1}
        else:
            pick = max(ok, key=rate)
            k = math.ceil(fps / rate(pick))
            choices[avatar] = {"label": pick["label"], "case": pick["case"], "sustains": False,
                               "fps": rate(pick), "k": k, "picture_rate": fps / k}
    return choices


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


def live_markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# iplap bench --live\n"]
    if report.get("command"):
        lines += ["```bash", report["command"], "```\n"]
    lines += [f"Machine: {m.get('cpu', '?')}, {m['cores']} cores, {' '.join(m['instruction_sets'])}; "
              f"onnxruntime {m['packages'].get('onnxruntime')}, openvino {m['packages'].get('openvino')}.\n",
              "**fps**: pictures per second of a live turn rendered without a clock, every stage included, from "
              "the fastest round (median over all frames in brackets). **ceiling fps**: the renderer graphs' "
              "GMAC per frame over the convolution ceiling of the same backend, precision and threads, the best "
              "of its measurements before the grid, around each round and after the grid: burst (its fastest single run) / sustained (its best window of runs back to back, "
              "as long as a round here; see the ceiling below). **share**: fps / ceiling fps, burst / sustained. **SPADE block**: "
              "the same against the ceiling of the renderer's own block (each convolution with its share of instance norm, "
              "modulation and LeakyReLU; measured as the plain stack is): what the backend makes of the float work that "
              "the renderer's convolutions carry. **same phase**: each round's "
              "fps against its own configuration's sustained ceiling measured right before and right after it (the "
              "faster of the two): median over the rounds (best round in brackets), the share of what the machine "
              "did at the time (noisy round by round, but not set against a burst the round never saw); then the same "
              "against the SPADE block's windows. **latency**: first sample pushed to "
              "first speaking frame on the wall clock (best round). **on the clock**: pictures rendered per second "
              "of a turn played in real time, the session's k and real-time factor. **interrupt**: interrupt() to "
              "the first idle frame. **PSNR**: worst speaking frame's face region against the reference "
              "configuration.\n",
              "| configuration | U | GMAC/frame | fps | ceiling fps: burst / sustained | share: burst / sustained | "
              "SPADE block: ceiling fps, share (burst / sustained) | same phase: plain; SPADE block | latency s | "
              "on the clock: pictures/s, k, RTF | interrupt ms | PSNR dB | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["error"]:
            lines.append(f"| {r['label']} | failed: {r['error']} ||||||||||||")
            continue
        rt = r["realtime"]
        psnr = "reference" if r.get("reference") == r["label"] else (
            "identical" if r.get("identical_to_reference") else _fmt(r.get("psnr_vs_reference"), ".1f"))
        lines.append(
            f"| {r['label']} | {r['distinct_refs']} | {_fmt(r['gmac_per_frame'], '.1f')} | {_fmt(r['fps_best'], '.2f')} "
            f"({_fmt(r['fps_median'], '.2f')}) | {_fmt(r['ceiling_fps'], '.2f')} / "
            f"{_fmt(r.get('ceiling_fps_sustained'), '.2f')} | {_fmt(r['share_of_ceiling'], '.0%')} / "
            f"{_fmt(r.get('share_of_ceiling_sustained'), '.0%')} | {_fmt(r.get('block_ceiling_fps'), '.2f')} / "
            f"{_fmt(r.get('block_ceiling_fps_sustained'), '.2f')}, {_fmt(r.get('block_share_of_ceiling'), '.0%')} / "
            f"{_fmt(r.get('block_share_of_ceiling_sustained'), '.0%')} | {_fmt(r.get('share_same_phase'), '.0%')} "
            f"({_fmt(r.get('share_same_phase_best'), '.0%')}); {_fmt(r.get('block_share_same_phase'), '.0%')} "
            f"({_fmt(r.get('block_share_same_phase_best'), '.0%')}) | {_fmt(r['latency_s'], '.2f')} | {rt['pictures_per_s']:.1f}, {rt['k']}, {rt['real_time_factor']:.2f} | "
            f"{_fmt(r['interrupt_s'] * 1e3 if r['interrupt_s'] is not None else None, '.0f')} | {psnr} | "
            f"{_fmt(r['peak_rss_mb'], '.0f')} |")
    ceiling = report["ceiling"]
    if isinstance(ceiling, Skipped) or "error" in ceiling:
        lines.append(f"\nConvolution ceiling: {ceiling if isinstance(ceiling, Skipped) else ceiling['error']}.")
    else:
        stacks = ceiling["config"].get("stacks") or {"conv": ceiling["config"]["stack"]}
        gmacs = ceiling["config"].get("block_gmac") or {"conv": ceiling["config"]["gmac"]}
        lines += ["\n## The ceiling\n", "; ".join(f"{block}: {stacks[block]}, {gmacs[block]:.2f} GMAC per run"
                                                 for block in stacks)
                  + f", quantized as the bundles are. Burst: the fastest of {ceiling['config']['repeats']} runs. "
                  f"Sustained: the best window of {ceiling['config'].get('window_seconds', 0):g} s of runs back to "
                  f"back ({ceiling['config'].get('windows', 0)} per configuration before and after the grid, and one "
                  "of the round's own configuration right before and right after every round). "
                  "On a shared host the two "
                  "can differ by 2x: single runs that fall in a fast phase of the host set the burst figure, which "
                  "no stream lasting seconds keeps up.\n",
                  "| stack | backend | precision | threads | GMAC/s burst | measured | GMAC/s sustained | measured |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {e.get('block', 'conv')} | {e['backend']} | {e['precision']} | {e['threads']} | "
                  f"{e['gmac_per_s']:.1f} | {e['when']} | "
                  f"{_fmt(e.get('sustained_gmac_per_s'), '.1f')} | {e.get('sustained_when') or ''} |"
                  for e in ceiling["results"]]
    lines += _stage_table(report["results"])
    lines.append("\n## Live choice\n\nJudged on the median over all frames (the figure in brackets), which a session "
                 "lasting minutes keeps; the fastest round is for the comparison with the ceiling.\n")
    for avatar, c in report["choice"].items():
        if c["sustains"]:
            lines.append(f"- {avatar}: **{c['label']}** sustains {FPS} fps ({c['fps']:.1f} pictures/s), the most "
                         "accurate that does.")
        else:
            lines.append(f"- {avatar}: none sustains {FPS} fps; the fastest is **{c['label']}**, {c['fps']:.2f} "
                         f"pictures/s (median): a live session renders every {c['k']}th frame ({c['picture_rate']:.1f} "
                         "pictures/s) and holds the picture between.")
    soak = report.get("soak")
    if isinstance(soak, dict) and soak:
        lines += ["\n## Soak: the live choice as an agent uses it\n",
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
                f"{_fmt(r['latency_s_mean'], '.2f')} / {_fmt(r['latency_s_max'], '.2f')} | "
                f"{_fmt(r['interrupt_s_max'] * 1e3 if r['interrupt_s_max'] is not None else None, '.0f')} | {r['k']} | "
                f"{r['real_time_factor']:.2f} | {r['rss_start_mb']:.0f} / {r.get('rss_half_mb', math.nan):.0f} / "
                f"{r['rss_end_mb']:.0f} / {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


__all__ = ["LIVE_REFS", "LiveBenchConfig", "LiveCase", "ceiling_entry", "frame_gmac", "live_cases", "live_choice", "live_markdown",
           "measure_live_round", "pool_live", "reference_case", "run_live_bench", "soak_live"]
