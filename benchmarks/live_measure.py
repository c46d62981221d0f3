"""One configuration of ``iplap bench --live``, each run in its own process: a round
(:func:`measure_live_round`: a turn without a clock, then one on the clock with an
interruption), and the soak (:func:`soak_live`: the live choice used as an agent would).

What a live session did is reported as ``LiveStats.as_dict()`` (the keys every front end
reports), extended with the benchmark's own figures."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..limits import Backend
from ..runtime.constants import FIRST_RENDER_FRAMES, FPS, SAMPLE_RATE

#: Seconds between the soak's samples of resident memory, and samples between two kept in its trace.
RSS_SAMPLE_SECONDS, RSS_TRACE_EVERY = 1.0, 30


def live_inputs(folder: Path, clip_seconds: float) -> dict[str, str]:
    """The photo and the face video every configuration uses (deterministic)."""
    from ..samples import FACE_IMAGE
    from ..samples.clip import head_motion_frames, write_clip

    clip = write_clip(folder / "clip.mp4", head_motion_frames(clip_seconds, size=256))
    return {"photo": str(FACE_IMAGE), "video": str(clip)}


def _speech(seconds: float, offset: float = 0.5) -> np.ndarray:
    from ..runtime.audio import load_audio
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
    """The pipeline of a configuration (a :class:`~.live_grid.LiveCase` as a dict): its
    backend, hint, N, threads, and the graphs built for its renders in flight."""
    from ..runtime.backends import BackendConfig
    from ..runtime.pipeline import Pipeline, PipelineConfig

    openvino = case["backend"] == Backend.OPENVINO
    backend = BackendConfig(backend=case["backend"], device=case["device"], threads=case["threads"],
                            inference_precision=case["hint"] if openvino else None,
                            streams=case["workers"], fuse_flow=case["fuse_flow"])
    return Pipeline(case["bundle"], PipelineConfig(backend=backend, refs=case["refs"]))


# -- a round ------------------------------------------------------------------------------

def measure_live_round(case: dict, face: str, frames: int, realtime_seconds: float, outputs: str) -> dict:
    """One round of a configuration: the throughput turn (no clock), then a turn on the clock
    with an interruption near its end. Writes the throughput turn's face regions to ``outputs``."""
    from .timing import peak_rss_mb

    pipeline = _case_pipeline(case)
    start = time.perf_counter()
    avatar = pipeline.prepare(face)
    prepare_s = time.perf_counter() - start
    seconds, stats = _throughput_turn(pipeline, avatar, frames, outputs)
    realtime, latency, interrupted = _clock_turn(pipeline, avatar, realtime_seconds, case["inbetween"])
    stage_ms = {k: 1e3 * v / stats.renders for k, v in stats.stage_seconds.items()} if stats.renders else {}
    return {"frame_seconds": seconds, "stage_ms": stage_ms, "prepare_seconds": prepare_s, "peak_rss_mb": peak_rss_mb(),
            "distinct_refs": avatar.references.distinct, "latency_s": latency, "realtime": realtime,
            "interrupt_s": interrupted}


def _throughput_turn(pipeline, avatar, frames: int, outputs: str):
    """A turn rendered as fast as the machine goes, every frame its own picture: the seconds
    between pictures from the second render on, and the session's stats. Without a
    cross-fade, so that the faces saved for accuracy are the renderer's own."""
    from ..runtime.live import LiveConfig

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
    timed = rendered[FIRST_RENDER_FRAMES:]  # from the second render: one picture per render
    seconds = [b[0] - a[0] for a, b in zip(timed, timed[1:])]
    y1, y2, x1, x2 = _face_region(avatar)
    np.savez(outputs, faces=np.stack([f.image[y1:y2, x1:x2] for _, f in rendered]))
    return seconds, stats


def _clock_turn(pipeline, avatar, realtime_seconds: float, inbetween: str) -> tuple[dict, float, float | None]:
    """A turn on the wall clock, interrupted 8 frames before its end: the session's stats
    (as :meth:`LiveStats.as_dict`, with the pictures rendered per second and the distinct
    pictures per second), the turn's first-frame latency, and the seconds from
    ``interrupt()`` to the first idle frame."""
    from ..runtime.live import LiveConfig

    turn = _speech(realtime_seconds, offset=1.0)
    with pipeline.open_live(avatar, SAMPLE_RATE, realtime=True, config=LiveConfig(inbetween=inbetween)) as live:
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
                    stats = live.stats()
            elif speaking:
                interrupted = time.monotonic() - asked if speaking >= interrupt_at else None
                break
        if speaking < interrupt_at:
            stats = live.stats()
    # The first render's picture fills three frames: it counts as one picture.
    pictures = max(0, stats.rendered - (FIRST_RENDER_FRAMES - 1))
    realtime = {**stats.as_dict(), "pictures_per_s": pictures * FPS / max(1, stats.speaking_frames)}
    return realtime, stats.latencies[0], interrupted


# -- the soak -----------------------------------------------------------------------------

@dataclass
class _SoakLog:
    """What the soak's agent saw: resident memory, interruption latencies, replies."""

    start: float
    samples: list[float] = field(default_factory=list)  # resident MB, every RSS_SAMPLE_SECONDS
    trace: list[tuple[int, float]] = field(default_factory=list)  # (seconds, MB), every RSS_TRACE_EVERY samples
    interrupts: list[float] = field(default_factory=list)  # seconds from interrupt() to the first idle frame
    replies: int = 0

    def sample(self, now: float) -> None:
        from .timing import rss_mb

        self.samples.append(rss_mb())
        if len(self.samples) % RSS_TRACE_EVERY == 0:
            self.trace.append((round(now - self.start), self.samples[-1]))


def soak_live(case: dict, face: str, seconds: float, turn_seconds: float = 6.0, gap_seconds: float = 3.0) -> dict:
    """A live session of ``seconds`` on the wall clock, as an agent uses it: a reply of
    ``turn_seconds`` pushed at once, played, ``gap_seconds`` idle, and again; every third
    reply is interrupted half-way. Its stats (:meth:`LiveStats.as_dict`) with its memory
    (resident, sampled every second, and the peak), its frame rate and its slowest
    first-frame and interruption latencies."""
    from .timing import peak_rss_mb, rss_mb

    pipeline = _case_pipeline(case)
    avatar = pipeline.prepare(face)
    rss_start = rss_mb()
    with pipeline.open_live(avatar, SAMPLE_RATE, realtime=True) as live:
        soak = _play_as_agent(live, seconds, turn_seconds, gap_seconds)
        stats = live.stats().as_dict()
    samples = soak.samples
    return {**stats, "seconds": seconds, "replies": soak.replies, "fps": stats["frames"] / seconds,
            "max_latency_s": max(stats["latencies_s"], default=None),
            "max_interrupt_s": max(soak.interrupts, default=None), "interrupts": len(soak.interrupts),
            "rss_start_mb": rss_start, "rss_half_mb": samples[len(samples) // 2] if samples else math.nan,
            "rss_trace_mb": soak.trace, "rss_max_mb": max(samples, default=math.nan),
            "rss_end_mb": samples[-1] if samples else math.nan, "peak_rss_mb": peak_rss_mb()}


def _play_as_agent(live, seconds: float, turn_seconds: float, gap_seconds: float) -> _SoakLog:
    """Replies into ``live`` for ``seconds``: each once the last has played and a gap has
    passed, every third cut half-way (how :func:`soak_live` drives the session)."""
    soak = _SoakLog(time.monotonic())
    next_reply, cut_at, asked = soak.start + 1.0, None, None
    last_sample = soak.start
    for frame in live.frames():
        now = time.monotonic()
        if now - last_sample >= RSS_SAMPLE_SECONDS:
            soak.sample(now)
            last_sample = now
        if asked is not None and not frame.speaking:
            soak.interrupts.append(now - asked)
            asked = None
        if now - soak.start >= seconds:
            break
        if cut_at is not None and frame.speaking and now >= cut_at:
            asked, cut_at = time.monotonic(), None
            live.interrupt()
        if now >= next_reply and not frame.speaking and live.queued_speech_seconds == 0:
            live.push(_speech(turn_seconds, offset=0.2 + (soak.replies % 5) * 1.3))
            live.end_of_turn()
            soak.replies += 1
            cut_at = now + turn_seconds / 2 if soak.replies % 3 == 0 else None
            next_reply = now + turn_seconds + gap_seconds
    return soak


__all__ = ["live_inputs", "measure_live_round", "soak_live"]
