"""End-to-end figures: time per frame by stage, first-frame latency, and peak memory against length.

Usage::

    python -m iplap.benchmarks.bench_pipeline --bundle B [--refs 25] [--threads 2] [--frames 6]
        [--memory 10,60 --memory-refs 5] [--json out.json]

* Stages: renders ``--frames`` frames of the sample clip (distinct references, so N is
  real) with the sample speech, per backend, after one warm-up frame, and reports the
  median seconds per frame of each stage (decode, face, landmarks, sketches, renderer
  graphs, warp, blend, encode). Face tracking is timed per 25 fps frame of the clip.
* First-frame latency: from the start of streaming an already prepared avatar to the
  first frame out.
* Memory: ``iplap run`` in a child process on a face video and speech both ``S`` seconds
  long, for each ``S`` in ``--memory``; the child's peak RSS (VmHWM, see
  :func:`iplap.benchmarks.timing.peak_rss_mb`) is reported.
  This runs the whole product, so it takes as long as rendering ``25 * S`` frames.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..limits import BACKENDS, DEFAULT_REFS
from ..runtime.constants import FPS


def _speech(seconds: float, path: Path) -> Path:
    import soundfile

    from ..runtime.audio import load_audio
    from ..runtime.constants import SAMPLE_RATE
    from ..samples import SPEECH_16K

    wav = load_audio(SPEECH_16K)
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(wav)))
    soundfile.write(path, np.tile(wav, reps)[:int(seconds * SAMPLE_RATE)], SAMPLE_RATE)
    return path


def stage_times(bundle: Path, backend: str, refs: int, threads: int, frames: int, tmp: Path) -> dict:
    from ..runtime.audio import load_audio
    from ..runtime.backends import BackendConfig
    from ..runtime.media import VideoScan, VideoWriter
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from ..runtime.reports import RENDERER_STAGES, StageClock
    from ..runtime.tracking import track_faces
    from ..samples.clip import head_motion_frames, write_clip
    from .timing import time_renders

    clip = write_clip(tmp / "clip.mp4", head_motion_frames(2.0, size=512))
    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(backend=backend, threads=threads), refs=refs))
    clock = StageClock()
    track = track_faces(VideoScan(clip), pipeline.new_tracker(), clock=clock)
    face_ms = 1000 * clock.totals["face"] / len(track)
    decode_ms = 1000 * clock.totals["decode"] / len(track)
    start = time.perf_counter()
    avatar = pipeline.prepare(clip)
    prepare_s = time.perf_counter() - start
    wav = load_audio(_speech(0.4 + (frames + 1) * 0.04 + 0.3, tmp / "speech.wav"))
    writer = VideoWriter(tmp / "out.mp4", avatar.track.width, avatar.track.height)
    times = time_renders(pipeline, avatar, wav, 1, frames, writer)  # the first render is the warm-up
    writer.abort()
    per_stage = []
    for stages in times.stages:
        stages = dict(stages)
        stages["renderer graphs"] = sum(stages.pop(g, 0.0) for g in RENDERER_STAGES)
        per_stage.append(stages)
    walls, first = times.walls, times.first_frame_seconds
    keys = sorted({k for s in per_stage for k in s})
    return {"backend": backend, "refs": refs, "threads": threads, "seconds_per_frame": statistics.median(walls),
            "stages_s": {k: statistics.median(s.get(k, 0.0) for s in per_stage) for k in keys},
            "face_tracking_ms_per_video_frame": face_ms, "decode_ms_per_video_frame": decode_ms,
            "prepare_s": prepare_s, "first_frame_latency_s": first}


def peak_memory(bundle: Path, seconds: float, refs: int, threads: int, tmp: Path) -> dict:
    """Peak RSS of ``iplap run`` on a face video and speech both ``seconds`` long."""
    from ..samples.clip import head_motion_frames, write_clip

    clip = write_clip(tmp / f"clip{seconds:g}.mp4", head_motion_frames(seconds, size=512))
    speech = _speech(seconds, tmp / f"speech{seconds:g}.wav")
    code = ("import sys; from iplap.cli import main; from iplap.benchmarks.timing import peak_rss_mb; "
            "rc = main(sys.argv[1:]); print('PEAK_RSS_MB', peak_rss_mb()); sys.exit(rc)")
    args = [sys.executable, "-c", code, "run", "--bundle", str(bundle), "--face", str(clip), "--audio", str(speech),
            "--out", str(tmp / f"out{seconds:g}.mp4"), "--refs", str(refs), "--threads", str(threads), "--quiet"]
    start = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "iplap run failed")
    peak = next(float(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("PEAK_RSS_MB"))
    return {"seconds": seconds, "frames": int(seconds * FPS), "peak_rss_mb": peak,
            "wall_s": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--refs", type=int, default=DEFAULT_REFS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--memory", default="", help="comma-separated seconds, e.g. 10,60 (slow: renders them)")
    parser.add_argument("--memory-refs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results: dict = {"stages": [], "memory": []}
    with tempfile.TemporaryDirectory(prefix="iplap-bench-") as tmp:
        for backend in [b for b in args.backends.split(",") if b]:
            print(f"timing {backend} N={args.refs}...", file=sys.stderr)
            results["stages"].append(stage_times(args.bundle, backend, args.refs, args.threads, args.frames, Path(tmp)))
        for seconds in [float(s) for s in args.memory.split(",") if s]:
            print(f"peak memory of iplap run on {seconds:g} s...", file=sys.stderr)
            m = peak_memory(args.bundle, seconds, args.memory_refs, args.threads, Path(tmp))
            results["memory"].append(m)
            print(f"peak RSS, {m['seconds']:g} s of video and speech ({m['frames']} frames, N={args.memory_refs}): "
                  f"{m['peak_rss_mb']:.0f} MB (run took {m['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    for r in results["stages"]:
        print(f"\n{r['backend']}, N={r['refs']}, {r['threads']} threads: {r['seconds_per_frame']:.3f} s/frame; "
              f"first frame {r['first_frame_latency_s']:.2f} s; prepare {r['prepare_s']:.1f} s; face tracking "
              f"{r['face_tracking_ms_per_video_frame']:.1f} ms and decode {r['decode_ms_per_video_frame']:.1f} ms "
              "per video frame")
        print("| stage | s/frame |\n|---|---|")
        for k, v in sorted(r["stages_s"].items(), key=lambda kv: -kv[1]):
            print(f"| {k} | {v:.4f} |")
    for m in results["memory"]:
        print(f"\npeak RSS, {m['seconds']:g} s ({m['frames']} frames, N={args.memory_refs}): {m['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
