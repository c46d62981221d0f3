"""Face tracking speed and stability: detection + attention mesh, static and tracking.

Measured per backend (onnxruntime, OpenVINO CPU f32), with a fixed thread count:

* ``static``: one photo (``samples/astronaut.png``), detection + mesh on every call;
* frame sizes (``--frame-sizes``, default 720x528 and 1920x1080): the photo scaled to the
  frame's height in a frame of that shape, static (detection + mesh) and tracking (mesh
  only, the ROI from the previous call); the detector's letterbox and the crops cost what
  the frame's size makes them cost, and a 720x528 frame does not scale to whole pixels;
* ``track``: a 2 s synthetic clip made from the photo with small head motion (rotation
  +-3 degrees, shifts of a few pixels, +-2 % zoom); the first frame detects, the others
  take their ROI from the previous landmarks;
* ``detect 4K``: the short-range detector on a 3840x2160 frame with a large face, and the
  whole small-face search (short-range miss, full-range detector, three short-range
  passes) on a 4K frame with a 420 px face;
* tracking vs static: the difference between the two modes' landmarks on the clip;
* smoothing: the same clip with sensor noise, tracked with and without the One-Euro
  filter: mean frame-to-frame motion of the 131 used points, and how far that motion is
  from the true motion (the affine transforms the clip was made with).

Times are medians over repeats after a warm-up. Usage::

    python -m iplap.benchmarks.bench_face [--models DIR] [--backend both] [--threads 2]
        [--repeats 30] [--frame-sizes 720x528,1920x1080] [--json out.json]

Without ``--models`` the face models are exported into a temporary folder first (needs the
export extra and the mediapipe wheel, see ``iplap.export.facemodels``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ..runtime.constants import BACKENDS


def place_photo(image: np.ndarray, frame_size: tuple[int, int], side: int) -> np.ndarray:
    """The photo scaled to ``side`` pixels (at most the frame's height) and centred in a grey frame."""
    width, height = frame_size
    frame = np.full((height, width, 3), 90, np.uint8)
    y, x = (height - side) // 2, (width - side) // 2
    frame[y:y + side, x:x + side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
    return frame


def _timed(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _pixels(result, width: int, height: int, used: list[int]) -> np.ndarray:
    return result.points[used, :2].astype(np.float64) * [width, height]


def parse_frame_sizes(text: str) -> list[tuple[int, int]]:
    """``"720x528,1920x1080"`` -> [(720, 528), (1920, 1080)] (width x height)."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        width, _, height = item.lower().partition("x")
        if not (width.isdigit() and height.isdigit()) or int(width) < 1 or int(height) < 1:
            raise argparse.ArgumentTypeError(f"frame size {item!r}: expected WIDTHxHEIGHT, e.g. 720x528")
        sizes.append((int(width), int(height)))
    return sizes


def bench_backend(models: Path, backend_name: str, threads: int, repeats: int,
                  frame_sizes: tuple[tuple[int, int], ...] = ()) -> dict:
    from ..runtime.backends import BackendConfig
    from ..runtime.face import FaceTracker, FaceTrackerConfig, OneEuroConfig
    from ..runtime.landmarks import USED_INDICES
    from ..samples import FACE_IMAGE
    from ..samples.clip import head_motion, head_motion_frames

    used = list(USED_INDICES)
    backend = BackendConfig(backend_name, threads=threads)
    static = FaceTracker.from_folder(models, backend, FaceTrackerConfig(mode="static"))
    track = FaceTracker.from_models(static.detector, static.mesh, static.full_range, FaceTrackerConfig(mode="track"))
    photo = cv2.imread(str(FACE_IMAGE))
    height, width = photo.shape[:2]
    result: dict = {"backend": backend_name, "threads": threads}

    result["static_ms"] = _timed(lambda: static.process(photo), repeats)
    result["detect_ms"] = _timed(lambda: static.detect(photo), repeats)

    result["frames"] = {}
    for size in frame_sizes:
        frame = place_photo(photo, size, min(size))
        track.reset()  # after the first call, each call follows the previous landmarks: mesh only
        result["frames"][f"{size[0]}x{size[1]}"] = {"static_ms": _timed(lambda: static.process(frame), repeats),
                                                 "track_ms": _timed(lambda: track.process(frame), repeats)}

    clip = head_motion_frames(2.0, image=photo)
    for _ in range(2):  # warm-up pass
        list(track.process_video(clip))
    per_frame = []
    for _ in range(max(1, repeats // 10)):
        track.reset()
        for frame in clip:
            start = time.perf_counter()
            track.process(frame)
            per_frame.append(time.perf_counter() - start)
    result["track_ms"] = statistics.median(per_frame) * 1000.0

    tracked = list(track.process_video(clip))
    diffs = [np.linalg.norm(_pixels(a, width, height, used) - _pixels(static.process(f), width, height, used), axis=1)
             for a, f in zip(tracked, clip, strict=True)]
    result["track_vs_static_px"] = {"mean": float(np.mean(diffs)), "max": float(np.max(diffs))}

    big_4k = place_photo(photo, (3840, 2160), 2160)
    small_4k = place_photo(photo, (3840, 2160), 2150)  # a 420 px face, as in the small-face goldens
    result["detect_4k_ms"] = _timed(lambda: static.detector.detect(big_4k), repeats)
    result["detect_4k_small_face_ms"] = _timed(lambda: static.detect(small_4k), max(3, repeats // 3))
    result["detect_4k_small_face_found"] = len(static.detect(small_4k))

    noisy, matrices = head_motion(2.0, image=photo, noise=3.0, seed=1)
    base = _pixels(static.process(photo), width, height, used)
    truth = np.stack([base @ m[:, :2].T + m[:, 2] for m in matrices])
    smooth = FaceTracker.from_models(static.detector, static.mesh, static.full_range,
                                     FaceTrackerConfig(mode="track", smoothing=OneEuroConfig()))
    for label, tracker in (("raw", track), ("one_euro", smooth)):
        points = np.stack([_pixels(r, width, height, used) for r in tracker.process_video(noisy)])
        motion = np.linalg.norm(np.diff(points, axis=0), axis=2)
        wrong_motion = np.linalg.norm(np.diff(points, axis=0) - np.diff(truth, axis=0), axis=2)
        result[f"smoothing_{label}"] = {"frame_motion_px": float(motion.mean()),
                                     "motion_error_px": float(wrong_motion.mean()),
                                     "error_vs_truth_px": float(np.linalg.norm(points - truth, axis=2).mean())}
    result["smoothing_true_frame_motion_px"] = float(np.linalg.norm(np.diff(truth, axis=0), axis=2).mean())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, help="folder written by iplap.export.facemodels.export_face_models")
    parser.add_argument("--mediapipe-wheel", type=Path, help="wheel to export from when --models is not given")
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--frame-sizes", type=parse_frame_sizes, default="720x528,1920x1080",
                        help="also time static and tracking on frames of these sizes (WIDTHxHEIGHT,...)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if models is None:
            from ..export.facemodels import export_face_models

            print("exporting the face models ...", file=sys.stderr)
            models = Path(tmp)
            export_face_models(models, args.mediapipe_wheel, check=False)
        backends = BACKENDS if args.backend == "both" else (args.backend,)
        results = [bench_backend(models, name, args.threads, args.repeats, tuple(args.frame_sizes))
                   for name in backends]

    for r in results:
        print(f"{r['backend']} ({r['threads']} threads)")
        print(f"  static  detection + mesh  {r['static_ms']:7.2f} ms/frame   (detection alone {r['detect_ms']:.2f} ms)")
        print(f"  tracking mesh             {r['track_ms']:7.2f} ms/frame")
        for name, t in r["frames"].items():
            print(f"  {name + ' frame':25s} {t['static_ms']:7.2f} ms/frame static, {t['track_ms']:.2f} ms/frame tracking")
        print(f"  detection, 4K frame       {r['detect_4k_ms']:7.2f} ms   small-face search on 4K "
              f"{r['detect_4k_small_face_ms']:.2f} ms (found {r['detect_4k_small_face_found']})")
        d = r["track_vs_static_px"]
        print(f"  tracking vs static        mean {d['mean']:.3f} px, max {d['max']:.3f} px (131 points, 512 px photo)")
        print(f"  smoothing (noise 3/255)   true motion {r['smoothing_true_frame_motion_px']:.3f} px/frame")
        for label in ("raw", "one_euro"):
            s = r[f"smoothing_{label}"]
            print(f"    {label:9s} frame-to-frame {s['frame_motion_px']:.3f} px, off the true motion "
                  f"{s['motion_error_px']:.3f} px, off the true position {s['error_vs_truth_px']:.3f} px")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
