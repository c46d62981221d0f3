"""What one frame costs besides the renderer: its landmarks, and an in-between picture.

For each backend, on one thread (the other core renders), over a stream of the sample
speech on a face (the sample photo by default):

* **landmarks, whole window**: the landmark generator as the original runs it for a frame
  (every encoder over the 5-frame window and the 15 references, then the transformer):
  what a frame cost before the graph was split;
* **landmarks, per frame**: the stream's cached encodings (one mel encode, one pose encode
  where the face frame is new, the fusion transformer), the ``--gap`` frames between two
  keyframes predicted together (as live sessions and keyframed renders do): what a frame
  costs now;
* **in-between, warp / morph**: an in-between frame made in full: its landmarks (per
  frame), the keyframe(s) moved to them and blended into the frame
  (:func:`~iplap.runtime.keyframes.plan_targets`, :meth:`~iplap.runtime.inbetween.InbetweenMaker.frame`).

::

    python -m iplap.benchmarks.frame_cost --bundle BUNDLE --out DIR [--face FACE] [--seconds 4]

writes ``frame_cost.json`` and ``frame_cost.md`` (milliseconds per frame, best and median).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ..limits import BACKENDS
from ..provenance import machine_info
from .report import machine_line


def _ms(times: list[float]) -> dict:
    return {"best_ms": round(1e3 * min(times), 3), "median_ms": round(1e3 * statistics.median(times), 3),
            "frames": len(times)}


def measure(bundle: Path, backend: str, face: Path, seconds: float, gap: int) -> dict:
    from ..runtime.audio import load_speech
    from ..runtime.backends import BackendConfig
    from ..runtime.inbetween import InbetweenMaker
    from ..runtime.keyframes import plan_keyframe, plan_targets
    from ..runtime.pipeline import Pipeline, PipelineConfig
    from ..samples import SAMPLES_DIR

    pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(backend=backend, threads=1)))
    avatar = pipeline.prepare(face)
    speech = load_speech(SAMPLES_DIR / "speech_16k.wav", max_seconds=None).samples[:int(seconds * 16000)].mean(axis=1)
    generator = pipeline.landmark_generator
    with pipeline.open_stream(avatar) as session:
        session.accept(speech)
        session.finish()
        plans = list(session.plans())
        ref_pose, ref_content = session.landmark_references
        first, last = plans[0], plans[-1]
        keys = [plan_keyframe(session.execute(p)[-1], p, session) for p in (first, last)]
        whole, per_frame, warp, morph = [], [], [], []
        for plan in plans[1:-1]:
            started = time.perf_counter()
            generator.predict(plan.mels, plan.pose, ref_pose, ref_content)
            whole.append(time.perf_counter() - started)
        maker = InbetweenMaker()
        for key in keys:
            maker.bank.add(key)
        between = plans[1:-1]
        for start in range(0, len(between) - gap + 1, gap):  # the frames of a gap come together
            group = between[start:start + gap]
            started = time.perf_counter()
            targets = plan_targets(session, group)
            landmarks = (time.perf_counter() - started) / gap
            per_frame += [landmarks] * gap
            for plan, target in zip(group, targets):
                started = time.perf_counter()
                maker.frame(target, keys[0])
                warped = time.perf_counter()
                t = (plan.indices[0] - keys[0].index) / (keys[1].index - keys[0].index)
                maker.frame(target, keys[0], keys[1], t)
                warp.append(landmarks + warped - started)
                morph.append(landmarks + time.perf_counter() - warped)
    height, width = plans[0].background.shape[:2]
    return {"backend": backend, "gap": gap, "frame_size": [width, height], "landmarks_whole_window": _ms(whole),
            "landmarks_per_frame": _ms(per_frame), "inbetween_warp": _ms(warp), "inbetween_morph": _ms(morph)}


def markdown(report: dict) -> str:
    lines = ["# What a frame costs besides the renderer (1 thread)\n", "```bash", report["command"], "```\n",
             machine_line(report["machine"]),
             "| backend | frame | gap | landmarks, whole window (before) | landmarks, per frame (now) | "
             "in-between, warp (landmarks included) | in-between, morph (landmarks included) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        cells = [f"{r[k]['best_ms']:.1f} ms ({r[k]['median_ms']:.1f})" for k in
                 ("landmarks_whole_window", "landmarks_per_frame", "inbetween_warp", "inbetween_morph")]
        lines.append(f"| {r['backend']} | {r['frame_size'][0]}x{r['frame_size'][1]} | {r['gap']} | "
                     + " | ".join(cells) + " |")
    lines.append("\nBest per frame (median in brackets) over the stream's frames between its first and last "
                 "render.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ..samples import FACE_IMAGE

    p = argparse.ArgumentParser(prog="python -m iplap.benchmarks.frame_cost", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--face", type=Path, default=FACE_IMAGE)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--gap", type=int, default=4, help="frames between two keyframes (k - 1; default 4: k = 5)")
    args = p.parse_args(argv)
    if args.gap < 1:
        p.error(f"--gap must be 1 or more, got {args.gap}")
    results = [measure(args.bundle, b.strip(), args.face, args.seconds, args.gap) for b in args.backends.split(",")]
    command = "python -m iplap.benchmarks.frame_cost " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    report = {"command": command, "machine": machine_info(BACKENDS), "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frame_cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "frame_cost.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
