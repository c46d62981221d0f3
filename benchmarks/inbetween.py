"""``iplap bench --inbetween``: in-between frames against real talking-head footage.

The clip's own frames are the keyframes and the truth: every k-th frame is a keyframe (its
face crop stands for a rendered face), and each frame between is made from the keyframes and
its own landmarks, as a live session or ``--keyframe-every`` makes it, then scored against
the real frame. The landmarks are the project's own face tracking of the real frames (the
same FaceMesh points the model's landmarks come from), so the score is an upper bound of
what the renderer's keyframes and the landmark generator's predictions give.

A keyframe stands for a rendered picture: its face crop, resized to the renderer's 128 x 128
and pasted back as a rendered face is (so every method pays the same 128 px round trip).
Methods: ``hold`` (today: the keyframe's whole picture stays until the next), ``warp`` (the
previous keyframe's face moved to the frame's landmarks, pasted on the frame) and ``morph``
(the previous and the next keyframe warped and mixed by time). The clip is resampled to 25
fps by nearest frame, and its first ``seconds`` are used. Scores, over in-between frames only:

* ``mouth_psnr`` (colour) and ``mouth_ssim`` (grey): the real frame's outer-lip box enlarged
  1.5x, resized to 96 x 96;
* ``lower_psnr``: the jaw and lip points' box enlarged 1.1x, resized to 128 x 128;
* ``temporal_error``: the mean absolute difference between the output's and the real video's
  change from the frame before, in the mouth box;
* ``ms_per_frame``: making the in-between face and pasting it (the landmarks are given).

Writes ``DIR/inbetween.json`` (a list of records ``{"clip", "k", "method", "mouth_psnr",
"mouth_ssim", "lower_psnr", "temporal_error", "frames", "ms_per_frame"}``), ``inbetween.md``
and ``inbetween.png``.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..metrics import psnr, ssim
from ..runtime.inbetween import MODES

#: The scored methods: the runtime's modes (hold, warp, morph).
METHODS = MODES
#: Mouth box and lower-face box: how much they are enlarged, and their side after resizing.
MOUTH_SCALE, MOUTH_SIZE = 1.5, 96
LOWER_SCALE, LOWER_SIZE = 1.1, 128


@dataclass(frozen=True)
class InbetweenBenchConfig:
    bundle: Path  # for its face models
    videos: tuple[Path, ...]
    out_dir: Path
    keyframe_every: tuple[int, ...] = (2, 3, 5, 8)
    seconds: float = 10.0
    methods: tuple[str, ...] = METHODS
    threads: int = 1


@dataclass
class Clip:
    """A clip's 25 fps frames (the first ``seconds``) and their tracked faces."""

    name: str
    frames: list[np.ndarray]
    track: object  # iplap.runtime.avatar.FaceTrack
    usable: np.ndarray  # (F,) bool: a face was found

    def landmarks(self, j: int) -> np.ndarray:
        return self.track.normalised(j)

    def face(self, j: int) -> np.ndarray:
        y1, y2, x1, x2 = (int(v) for v in self.track.boxes[j])
        return cv2.resize(self.frames[j][y1:y2, x1:x2], (128, 128))

    def box(self, j: int) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.track.boxes[j])

    def paste(self, j: int, face: np.ndarray) -> np.ndarray:
        """``face`` (128 px) on frame ``j``, as a rendered face is pasted."""
        from ..runtime.compose import blend_face

        return blend_face(self.frames[j], face, self.box(j), self.track.landmarks[j])

    def keyframe(self, j: int):
        from ..runtime.inbetween import Keyframe

        return Keyframe(self.face(j), self.landmarks(j), self.box(j), j)

    def target(self, j: int):
        from ..runtime.inbetween import Target

        return Target(self.landmarks(j), self.box(j), self.frames[j], self.track.landmarks[j])


@dataclass
class Scores:
    mouth_psnr: list[float] = field(default_factory=list)
    mouth_ssim: list[float] = field(default_factory=list)
    lower_psnr: list[float] = field(default_factory=list)
    temporal_error: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def load_clip(pipeline, path: Path, seconds: float) -> Clip:
    from ..runtime.face_source import avatar_face

    avatar = pipeline.prepare(path)
    count = min(avatar.n_frames, int(seconds * 25))
    with avatar_face(avatar).frames() as reader:
        frames = [reader[k].copy() for k in range(count)]
    return Clip(path.stem, frames, avatar.track, ~np.asarray(avatar.track.missing[:count]))


def _box(points: np.ndarray, scale: float, height: int, width: int) -> tuple[int, int, int, int]:
    """A square box around ``points`` (pixels), enlarged ``scale`` times, inside the frame."""
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(x1 - x0, y1 - y0) * scale / 2
    left, top = int(max(0, round(cx - half))), int(max(0, round(cy - half)))
    right, bottom = int(min(width, round(cx + half))), int(min(height, round(cy + half)))
    return top, bottom, left, right


def _region(image: np.ndarray, box, size: int) -> np.ndarray:
    top, bottom, left, right = box
    return cv2.resize(image[top:bottom, left:right], (size, size), interpolation=cv2.INTER_AREA)


def _pixel_points(clip: Clip, j: int, indices) -> np.ndarray:
    track = clip.track
    return track.landmarks[j][list(indices), :2] * (track.width, track.height)


def score_frame(out: np.ndarray, previous_out: np.ndarray, clip: Clip, j: int, scores: Scores) -> None:
    from ..runtime.landmarks import CONTENT_INDICES

    h, w = out.shape[:2]
    truth, before = clip.frames[j], clip.frames[j - 1]
    outer_lips = CONTENT_INDICES[17:37]
    mouth = _box(_pixel_points(clip, j, outer_lips), MOUTH_SCALE, h, w)
    lower = _box(_pixel_points(clip, j, CONTENT_INDICES), LOWER_SCALE, h, w)
    ours, real = _region(out, mouth, MOUTH_SIZE), _region(truth, mouth, MOUTH_SIZE)
    scores.mouth_psnr.append(min(psnr(ours, real), 99.0))
    scores.mouth_ssim.append(ssim(cv2.cvtColor(ours, cv2.COLOR_BGR2GRAY), cv2.cvtColor(real, cv2.COLOR_BGR2GRAY)))
    scores.lower_psnr.append(min(psnr(_region(out, lower, LOWER_SIZE), _region(truth, lower, LOWER_SIZE)), 99.0))
    change_ours = ours.astype(np.float64) - _region(previous_out, mouth, MOUTH_SIZE)
    change_real = real.astype(np.float64) - _region(before, mouth, MOUTH_SIZE)
    scores.temporal_error.append(float(np.abs(change_ours - change_real).mean()))


def run_clip(clip: Clip, k: int, method: str) -> Scores:
    """Every in-between frame of ``clip`` made with ``method`` from keyframes every ``k``."""
    from ..runtime.inbetween import InbetweenMaker, Keyframe

    scores, maker = Scores(), InbetweenMaker()
    count = len(clip.frames)
    last_key = ((count - 1) // k) * k  # morph needs the next keyframe: frames after the last have none
    previous_out = clip.frames[0]
    keys: dict[int, Keyframe] = {}
    pictures: dict[int, np.ndarray] = {}  # the keyframes' pictures, as rendered ones would be shown
    for j in range(count):
        if j % k == 0:
            keys[j] = clip.keyframe(j)
            maker.bank.add(keys[j])
            previous_out = pictures[j] = clip.paste(j, keys[j].face)
            continue
        prev_key, next_key = (j // k) * k, (j // k + 1) * k
        if j > last_key or not (clip.usable[j] and clip.usable[prev_key] and clip.usable[next_key]):
            previous_out = clip.frames[j]  # not scored: no next keyframe, or no face to measure
            continue
        started = time.perf_counter()
        if method == "hold":
            out = pictures[prev_key]
        else:
            if next_key not in keys:
                keys[next_key] = clip.keyframe(next_key)
            following = keys[next_key] if method == "morph" else None
            out = maker.frame(clip.target(j), keys[prev_key], following, (j - prev_key) / k)
        scores.seconds.append(time.perf_counter() - started)
        score_frame(out, previous_out, clip, j, scores)
        previous_out = out
    return scores


def record(clip: Clip, k: int, method: str, scores: Scores) -> dict:
    mean = (lambda v: round(statistics.fmean(v), 4) if v else None)
    return {"clip": clip.name, "k": k, "method": method, "mouth_psnr": mean(scores.mouth_psnr),
            "mouth_ssim": mean(scores.mouth_ssim), "lower_psnr": mean(scores.lower_psnr),
            "temporal_error": mean(scores.temporal_error), "frames": len(scores.mouth_psnr),
            "ms_per_frame": mean([1e3 * s for s in scores.seconds])}


def markdown(records: list[dict], command: str) -> str:
    from ..provenance import cpu_info

    lines = [f"# In-between frames against real footage\n\n`{command}`\n\nMachine: {cpu_info()['cpu']}. Keyframes "
             "are the clip's real frames (an upper bound of what rendered keyframes give); in-between frames only. "
             "Removed: the share of hold's mouth error (MSE) the method removes.\n",
             "| clip | k | method | mouth PSNR dB | mouth SSIM | lower-face PSNR dB | temporal error | removed | "
             "frames | ms/frame |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        hold = next((h for h in records if h["clip"] == r["clip"] and h["k"] == r["k"] and h["method"] == "hold"),
                    None)
        removed = "-"
        if hold is not None and r["method"] != "hold" and hold["mouth_psnr"] is not None:
            removed = f"{1 - 10 ** ((hold['mouth_psnr'] - r['mouth_psnr']) / 10):.0%}"
        lines.append(f"| {r['clip']} | {r['k']} | {r['method']} | {r['mouth_psnr']:.2f} | {r['mouth_ssim']:.3f} | "
                     f"{r['lower_psnr']:.2f} | {r['temporal_error']:.2f} | {removed} | {r['frames']} | "
                     f"{r['ms_per_frame']:.2f} |")
    return "\n".join(lines) + "\n\n" + averages(records) + "\n"


def averages(records: list[dict]) -> str:
    """The mean over clips, per k and method: the issue's targets are read off this table."""
    lines = ["| k | method | mouth PSNR dB (over clips) | vs hold dB | worst clip vs hold dB | temporal error | "
             "vs hold |", "|---|---|---|---|---|---|---|"]
    for k in sorted({r["k"] for r in records}):
        hold = {r["clip"]: r for r in records if r["k"] == k and r["method"] == "hold"}
        for method in METHODS:
            rows = [r for r in records if r["k"] == k and r["method"] == method and r["mouth_psnr"] is not None]
            if not rows:
                continue
            psnr_mean = statistics.fmean(r["mouth_psnr"] for r in rows)
            temporal = statistics.fmean(r["temporal_error"] for r in rows)
            if hold and method != "hold":
                gains = [r["mouth_psnr"] - hold[r["clip"]]["mouth_psnr"] for r in rows if r["clip"] in hold]
                hold_t = statistics.fmean(hold[r["clip"]]["temporal_error"] for r in rows if r["clip"] in hold)
                extra = f"{statistics.fmean(gains):+.2f} | {min(gains):+.2f} | {temporal:.2f} | {temporal / hold_t - 1:+.0%}"
            else:
                extra = f"- | - | {temporal:.2f} | -"
            lines.append(f"| {k} | {method} | {psnr_mean:.2f} | {extra} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        ks = sorted({r["k"] for r in records if r["method"] == method})
        values = [statistics.fmean(r["mouth_psnr"] for r in records if r["k"] == k and r["method"] == method
                                   and r["mouth_psnr"] is not None) for k in ks]
        ax.plot(ks, values, marker="o", label=method)
    ax.set_xlabel("k (a keyframe every k frames)")
    ax.set_ylabel("mouth PSNR, dB (mean over clips)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_inbetween_bench(config: InbetweenBenchConfig, command: str = "", show_progress: bool = False) -> list[dict]:
    import logging

    from .. import BackendConfig, Pipeline, PipelineConfig
    from ..runtime.progress import frame_bar

    log = logging.getLogger("iplap")
    pipeline = Pipeline(config.bundle, PipelineConfig(backend=BackendConfig(threads=config.threads), refs=1))
    records = []
    for video in config.videos:
        log.info("tracking the face of %s (its first %g s)", Path(video).name, config.seconds)
        clip = load_clip(pipeline, Path(video), config.seconds)
        runs = [(k, method) for k in config.keyframe_every for method in config.methods]
        for k, method in frame_bar(runs, show_progress, f"scoring {clip.name} (k, method)", total=len(runs)):
            records.append(record(clip, k, method, run_clip(clip, k, method)))
    config.out_dir.mkdir(parents=True, exist_ok=True)
    (config.out_dir / "inbetween.json").write_text(json.dumps(records, indent=1))
    (config.out_dir / "inbetween.md").write_text(markdown(records, command))
    try:
        plot(records, config.out_dir / "inbetween.png")
    except ImportError:  # the plot needs the bench extra (matplotlib)
        pass
    return records


__all__ = ["InbetweenBenchConfig", "METHODS", "run_inbetween_bench"]
