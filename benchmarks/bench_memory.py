"""Peak memory of renders and live sessions, each case in a fresh process.

Offline cases are ``iplap run`` (a photo, and a 720p face video of two lengths) with speech
of two lengths, at N = 5 and 25, for each bundle and backend given; live cases are a live
session of a photo and of a face video running ``--live-seconds`` on the wall clock, replies
pushed as an agent would (a reply, a pause, the next). Each child reports its peak resident
memory (``VmHWM``, :func:`.timing.peak_rss_mb`) and, for live sessions, the memory before the
session opened and at its end, so growth over time shows. Where memory goes is printed per
case by ``--breakdown`` (resident memory after each stage of one render).

::

    python -m iplap.benchmarks.bench_memory --bundle fp32 --bundle int8 --out DIR [--quick]

writes ``memory.json`` and ``memory.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..limits import BACKENDS
from ..provenance import machine_info

#: The offline cases' speech lengths and 720p face-video lengths, seconds (two each: growth shows).
SPEECH_SECONDS = (0.6, 1.8)
VIDEO_SECONDS = (10.0, 20.0)
#: The numbers of references measured.
REFS = (5, 25)

_RUN = """
import sys
from iplap.cli import main
from iplap.benchmarks.timing import peak_rss_mb
rc = main(sys.argv[1:])
print("PEAK_RSS_MB", peak_rss_mb())
sys.exit(rc)
"""

_LIVE = """
import sys, time, json
import numpy as np
import iplap
from iplap.benchmarks.timing import peak_rss_mb, rss_mb
from iplap.runtime.audio import load_audio
from iplap.samples import SPEECH_16K
bundle, face, backend, refs, seconds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
pipe = iplap.Pipeline(bundle, iplap.PipelineConfig(backend=iplap.BackendConfig(backend, threads=2), refs=refs))
avatar = pipe.prepare(face)
speech = load_audio(SPEECH_16K)
before = rss_mb()
samples = []
with pipe.open_live(avatar, 16000) as live:
    start = time.monotonic()
    next_reply, n = start + 1.0, 0
    for frame in live.frames():
        now = time.monotonic()
        if now >= next_reply and not live.queued_speech_seconds:
            live.push(speech[: int(3.0 * 16000)])
            live.end_of_turn()
            next_reply = now + 5.0
        if frame.index % 250 == 0:
            samples.append(round(rss_mb(), 1))
        if now - start >= seconds:
            break
    stats = live.stats()
print("LIVE", json.dumps({"before_mb": before, "samples_mb": samples, "after_mb": rss_mb(), "turns": stats.turns,
                          "peak_rss_mb": peak_rss_mb()}))
"""


@dataclass(frozen=True)
class MemoryCase:
    kind: str  # "offline" or "live"
    face: str  # "photo" or "video"
    bundle: str
    backend: str
    refs: int
    speech_s: float = 0.0
    video_s: float = 0.0
    live_s: float = 0.0

    @property
    def label(self) -> str:
        what = f"{self.face} {self.video_s:g} s" if self.face == "video" else self.face
        length = f"speech {self.speech_s:g} s" if self.kind == "offline" else f"live {self.live_s:g} s"
        return f"{self.kind} {what}, {length}, {Path(self.bundle).name} {self.backend} N={self.refs}"


def _faces(tmp: Path, video_seconds: tuple[float, ...]) -> dict[str, Path]:
    import cv2

    from ..samples import FACE_IMAGE
    from ..samples.clip import head_motion_frames, write_clip

    photo = tmp / "photo.png"
    cv2.imwrite(str(photo), cv2.imread(str(FACE_IMAGE)))
    faces = {"photo": photo}
    for seconds in video_seconds:  # 1280x720: the square head-motion clip widened
        frames = [cv2.copyMakeBorder(f, 0, 0, 280, 280, cv2.BORDER_REPLICATE)
                  for f in head_motion_frames(seconds, size=720)]
        faces[f"video {seconds:g}"] = write_clip(tmp / f"face{seconds:g}.mp4", frames, lossless=False)
    return faces


def _speech(tmp: Path, seconds: float) -> Path:
    import soundfile

    from ..runtime.audio import load_audio
    from ..samples import SPEECH_16K

    wav = load_audio(SPEECH_16K)
    reps = int(seconds * 16000 / len(wav)) + 1
    path = tmp / f"speech{seconds:g}.wav"
    soundfile.write(path, __import__("numpy").tile(wav, reps)[: int(seconds * 16000)], 16000)
    return path


def run_case(case: MemoryCase, faces: dict[str, Path], tmp: Path, threads: int) -> dict:
    start = time.perf_counter()
    face = faces["photo" if case.face == "photo" else f"video {case.video_s:g}"]
    if case.kind == "offline":
        args = [sys.executable, "-c", _RUN, "run", "--bundle", case.bundle, "--face", str(face), "--audio",
                str(_speech(tmp, case.speech_s)), "--out", str(tmp / "out.mp4"), "--refs", str(case.refs),
                "--threads", str(threads), "--backend", case.backend, "-q"]
    else:
        args = [sys.executable, "-c", _LIVE, case.bundle, str(face), case.backend, str(case.refs), str(case.live_s)]
    run = subprocess.run(args, capture_output=True, text=True, check=False)
    result = {**asdict(case), "label": case.label, "wall_s": round(time.perf_counter() - start, 1)}
    if run.returncode != 0:
        return {**result, "error": (run.stderr.strip().splitlines() or ["failed"])[-1]}
    for line in run.stdout.splitlines():
        if line.startswith("PEAK_RSS_MB"):
            result["peak_rss_mb"] = round(float(line.split()[1]), 1)
        elif line.startswith("LIVE "):
            result.update(json.loads(line[5:]))
    return result


def cases(bundles: list[str], backends: tuple[str, ...], live_seconds: float, quick: bool) -> list[MemoryCase]:
    speech = SPEECH_SECONDS[:1] if quick else SPEECH_SECONDS
    videos = VIDEO_SECONDS[:1] if quick else VIDEO_SECONDS
    found = []
    for bundle in bundles:
        for backend in backends:
            top = max(REFS)  # a photo has one distinct reference whatever N is: measured at the largest
            found += [MemoryCase("offline", "photo", bundle, backend, top, speech_s=s) for s in speech]
            for refs in REFS:
                found += [MemoryCase("offline", "video", bundle, backend, refs, speech_s=speech[0], video_s=v)
                          for v in videos]
            if len(speech) > 1:
                found.append(MemoryCase("offline", "video", bundle, backend, top, speech_s=speech[-1],
                                        video_s=videos[0]))
            if live_seconds:
                found += [MemoryCase("live", "photo", bundle, backend, 5, live_s=live_seconds),
                          MemoryCase("live", "video", bundle, backend, 5, video_s=videos[0], live_s=live_seconds)]
    return found


def markdown(results: list[dict]) -> str:
    lines = ["| case | peak RSS MB | live: before / end MB | wall s |", "|---|---|---|---|"]
    for r in results:
        live = f"{r['before_mb']:.0f} / {r['after_mb']:.0f}" if "before_mb" in r else "-"
        peak = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else f"failed: {r.get('error')}"
        lines.append(f"| {r['label']} | {peak} | {live} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iplap.benchmarks.bench_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", action="append", required=True, help="a bundle (repeat: fp32, int8)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--live-seconds", type=float, default=60.0, help="each live case's length (0: none)")
    parser.add_argument("--only", help="run only the cases whose label holds this text")
    parser.add_argument("--quick", action="store_true", help="one length of each, for a first look")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = []
    chosen = [c for c in cases(args.bundle, tuple(args.backends.split(",")), args.live_seconds, args.quick)
              if not args.only or args.only in c.label]
    with tempfile.TemporaryDirectory(prefix="iplap-memory-") as tmp:
        faces = _faces(Path(tmp), tuple(sorted({c.video_s for c in chosen if c.face == "video"})))
        for case in chosen:
            print(f"{case.label} ...", file=sys.stderr, flush=True)
            results.append(run_case(case, faces, Path(tmp), args.threads))
            print(f"  {results[-1].get('peak_rss_mb', results[-1].get('error'))}", file=sys.stderr, flush=True)
    table = markdown(results)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "memory.json").write_text(json.dumps({"machine": machine_info(), "results": results}, indent=2))
        (args.out / "memory.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
