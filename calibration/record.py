"""Calibration data: the clips, and the graph inputs recorded while the fp32 pipeline runs them.

Nothing here is random: :func:`record` runs the real fp32 :class:`~iplap.runtime.pipeline.Pipeline`
on calibration clips, with every graph model wrapped by a :class:`RecordingModel`, and keeps
the inputs each graph actually sees (spread evenly over the frames, capped per graph, written
to disk so that memory stays flat). On the held-out clips it keeps what the accuracy gate
compares against: the fp32 generated faces and landmarks, and what is needed to run the
same frames again with other graphs.

Calibration data on disk (``iplap calibrate --data DIR``)::

    DIR/
      NAME.mp4          a face video (any video the runtime decodes: .mp4 .mov .mkv .avi .webm .m4v)
      NAME.wav          its speech (optional: any audio file with the same stem, e.g. NAME.m4a;
                        without one, the video's own audio track is used)
      OTHER.mp4 ...

Face videos are taken in name order. With two or more, the last ``heldout_fraction`` of them
(at least one) is held out for the gate; a single clip is split in time instead (the speech's
last ``heldout_fraction`` is held out). Each clip contributes its first frames only (the
pipeline renders from its start), so several short clips (a few seconds, different people,
light, head poses) calibrate better than one long one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import IplapError, MediaError
from ..runtime.audio import MelConfig, MelWindows, count_windows, load_audio, mel_frame_count
from ..runtime.constants import MEL_WINDOW, SAMPLE_RATE
from ..runtime.avatar import Avatar
from ..runtime.backends import InferenceModel
from ..runtime.bundle import GRAPH_NAMES
from ..provenance import sha256_file
from ..runtime.media import IMAGE_SUFFIXES
from ..runtime.pipeline import Pipeline
from .recipe import DataBudget

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".aac", ".ogg", ".opus")
CALIBRATION, HELDOUT = "calibration", "heldout"


class CalibrationDataError(IplapError):
    """The calibration clips are missing, unusable or too short."""


@dataclass(frozen=True)
class Clip:
    """One face + speech pair, or a time segment of its speech.

    Attributes:
        face: face video (or image).
        audio: speech file (or the face video itself, for its audio track).
        role: ``"calibration"`` (inputs recorded) or ``"heldout"`` (the gate's data).
        start_s, end_s: the segment of the speech used (``end_s`` None: to its end).
        origin: where the clip came from, for the manifest.
    """

    face: Path
    audio: Path
    role: str = CALIBRATION
    start_s: float = 0.0
    end_s: float | None = None
    origin: str = "user"

    def speech(self) -> np.ndarray:
        wav = load_audio(self.audio)
        start = int(round(self.start_s * SAMPLE_RATE))
        end = None if self.end_s is None else int(round(self.end_s * SAMPLE_RATE))
        return np.ascontiguousarray(wav[start:end], np.float32)

    def identity(self) -> dict:
        """Names and sha256 of the files, and the segment: the calibration data's identity."""
        return {"role": self.role, "face": self.face.name, "face_sha256": sha256_file(self.face),
                "audio": self.audio.name, "audio_sha256": sha256_file(self.audio),
                "start_s": round(self.start_s, 3), "end_s": None if self.end_s is None else round(self.end_s, 3),
                "origin": self.origin}


def discover_clips(folder: str | Path) -> list[Clip]:
    """The face video + speech pairs in ``folder`` (layout in the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f"calibration data folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    faces = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not faces:
        images = [p.name for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        hint = (f" (found only images: {', '.join(images[:3])}; a still photo gives one reference "
                "repeated N times, which does not calibrate the flow network)") if images else ""
        raise CalibrationDataError(f"no face videos ({', '.join(VIDEO_SUFFIXES)}) in {folder}{hint}")
    audio_by_stem = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    return [Clip(face, audio_by_stem.get(face.stem, face), origin=f"user:{folder.name}") for face in faces]


def default_clips(workdir: str | Path) -> list[Clip]:
    """The shipped samples as calibration data: two head-motion clips made from the sample
    photo (different motion), the first with the first 60% of the sample speech, the
    second, held out, with the rest."""
    from ..samples import FACE_IMAGE, SPEECH_16K
    from ..samples.clip import make_head_motion_clip

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seconds = len(load_audio(SPEECH_16K)) / SAMPLE_RATE
    split = round(0.6 * seconds, 3)
    clips = []
    for seed, role, start, end in ((0, CALIBRATION, 0.0, split), (1, HELDOUT, split, None)):
        face = make_head_motion_clip(workdir / f"sample_head_motion_seed{seed}.mp4", seconds=2.0, seed=seed)
        clips.append(Clip(face, SPEECH_16K, role, start, end,
                          origin=f"iplap.samples: {FACE_IMAGE.name} with head motion (seed {seed}), {SPEECH_16K.name}"))
    return clips


def assign_roles(clips: list[Clip], heldout_fraction: float) -> list[Clip]:
    """Hold out the last clips, or the end of a single clip's speech."""
    if not clips:
        raise CalibrationDataError("no calibration clips")
    if any(c.role == HELDOUT for c in clips):
        return list(clips)  # already split (the defaults)
    for clip in clips:
        for path, what in ((clip.face, "face"), (clip.audio, "audio")):
            if not Path(path).is_file():
                raise CalibrationDataError(f"{what} file not found: {path}")
    if len(clips) == 1:
        clip = clips[0]
        seconds = len(load_audio(clip.audio)) / SAMPLE_RATE
        split = round(seconds * (1.0 - heldout_fraction), 3)
        return [replace(clip, role=CALIBRATION, end_s=split), replace(clip, role=HELDOUT, start_s=split)]
    n_heldout = max(1, math.floor(len(clips) * heldout_fraction))
    return [replace(c, role=HELDOUT if k >= len(clips) - n_heldout else CALIBRATION) for k, c in enumerate(clips)]


def speech_for_renders(wav: np.ndarray, renders: int) -> tuple[np.ndarray, int]:
    """The shortest prefix of ``wav`` that gives ``renders`` rendered frames (fewer if the
    speech is shorter), and how many it gives."""
    n_mel = MelWindows().start(renders + 1) + MEL_WINDOW  # render i needs windows up to i + 2
    wav = wav[:(n_mel - 1) * MelConfig().hop]
    return wav, count_renders(len(wav))


def count_renders(n_samples: int) -> int:
    """Rendered frames (model runs) for ``n_samples`` of speech, as the pipeline counts them."""
    return max(0, count_windows(mel_frame_count(n_samples)) - 2)


# -- recording ---------------------------------------------------------------------------------

class RecordingModel:
    """An :class:`~iplap.runtime.backends.InferenceModel` that passes each call through and
    then hands its feeds and outputs to ``on_call``."""

    def __init__(self, model: InferenceModel, on_call: Callable[[dict, dict], None]):
        self.model = model
        self.on_call = on_call
        self.input_names = model.input_names
        self.output_names = model.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.model.run(feeds)
        self.on_call(feeds, outputs)
        return outputs


class SampleStore:
    """Recorded input sets of one graph, one ``.npz`` file each: iterating loads them one
    at a time, so neither recording nor quantization holds them all in memory."""

    def __init__(self, folder: str | Path, graph: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.graph = graph
        self._paths: list[Path] = []
        self.nbytes = 0

    def add(self, feeds: dict[str, np.ndarray]) -> None:
        path = self.folder / f"{len(self._paths):05d}.npz"
        arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        np.savez(path, **arrays)
        self.nbytes += sum(a.nbytes for a in arrays.values())
        self._paths.append(path)

    def __len__(self) -> int:
        return len(self._paths)

    def __iter__(self):
        for path in self._paths:
            with np.load(path) as f:
                yield {k: f[k] for k in f.files}


@dataclass
class HeldOut:
    """A held-out clip and its fp32 results, which every candidate is compared against."""

    clip: Clip
    avatar: Avatar
    ref_images: np.ndarray  # (U, 3, 128, 128): the distinct reference crops, as encoded
    ref_sketches: np.ndarray  # (U, 3, 128, 128)
    speech: np.ndarray  # the samples that give ``renders`` frames
    renders: int
    faces: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 128, 128), np.float32))  # fp32 (R, 3, 128, 128)
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2, 57), np.float32))  # fp32 (R, 5, 2, 57)
    frames: list[np.ndarray] = field(default_factory=list)  # fp32 output frames (R, H, W, 3) uint8
    flows: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2, 128, 128), np.float32))  # (R, U, 2, 128, 128)


@dataclass
class Recording:
    """Everything :func:`record` produced."""

    stores: dict[str, SampleStore]
    heldout: list[HeldOut]
    clips: list[dict]  # each clip's identity (files' names and sha256, segment, role)
    calibration_renders: int
    refs: int

    def summary(self) -> dict:
        return {"clips": self.clips, "refs": self.refs, "calibration_frames": self.calibration_renders,
                "heldout_frames": sum(h.renders for h in self.heldout),
                "samples": {name: len(store) for name, store in self.stores.items()}}


class _Sampler:
    """Decides which calls of a graph are kept: every ``stride``-th, at most ``cap``."""

    def __init__(self, store: SampleStore, stride: int, cap: int, transform=None):
        self.store, self.stride, self.cap, self.transform = store, max(1, stride), cap, transform
        self.calls = 0
        self.active = True

    def __call__(self, feeds: dict, outputs: dict) -> None:
        keep = self.active and self.calls % self.stride == 0 and len(self.store) < self.cap
        self.calls += 1
        if keep:
            self.store.add(self.transform(feeds, len(self.store)) if self.transform else feeds)


def _rotating_rows(batch: int):
    """Keep ``batch`` rows of h2 per flow_head sample, a different set each time: every
    reference is seen, and a sample stays 12 maps + ``batch`` x 4 MiB."""

    def transform(feeds: dict, k: int) -> dict:
        h2 = feeds["h2"]
        count = h2.shape[0]
        rows = [(k * batch + j) % count for j in range(min(batch, count))]
        return {**feeds, "h2": h2[rows]}

    return transform


def record(pipeline: Pipeline, clips: list[Clip], budget: DataBudget, workdir: str | Path) -> Recording:
    """Run the fp32 ``pipeline`` on ``clips`` (roles assigned): record the calibration
    clips' graph inputs into ``workdir``, and the held-out clips' fp32 results."""
    workdir = Path(workdir)
    if not any(c.role == CALIBRATION for c in clips) or not any(c.role == HELDOUT for c in clips):
        raise CalibrationDataError("calibration needs at least one calibration and one held-out clip")
    runs = {CALIBRATION: [], HELDOUT: []}  # (clip, speech, renders), before the slow part starts
    for clip in clips:
        wav, renders = speech_for_renders(clip.speech(), budget.calibration_frames if clip.role == CALIBRATION
                                          else budget.heldout_frames)
        if renders < 1:
            raise CalibrationDataError(f"the speech of {clip.audio.name} ({clip.role}, from {clip.start_s:g} s) is "
                                       "too short for one frame")
        runs[clip.role].append((clip, wav, renders))
    total = sum(renders for _, _, renders in runs[CALIBRATION])
    stride = max(1, math.ceil(total / budget.samples_per_graph))  # spread the samples over all frames
    stores = {name: SampleStore(workdir / "samples" / name, name) for name in GRAPH_NAMES}
    per_avatar = ("reference_encoder", "landmark_ref_encoder")  # once per clip: keep every call
    samplers = {name: _Sampler(stores[name], stride if name not in per_avatar else 1, budget.samples_per_graph,
                               _rotating_rows(budget.flow_head_batch) if name == "flow_head" else None)
                for name in GRAPH_NAMES}
    recording = pipeline.with_graphs({n: RecordingModel(m, samplers[n]) for n, m in pipeline.graphs.items()})
    for clip, wav, renders in runs[CALIBRATION]:
        log.info("recording graph inputs: %s + %s (%d frames)", clip.face.name, clip.audio.name, renders)
        avatar = _prepare(recording, clip)
        for _ in recording.stream(avatar, [wav]):
            pass
    heldout = [_run_heldout(pipeline, clip, wav, renders) for clip, wav, renders in runs[HELDOUT]]
    log.info("recorded %s input sets (%.0f MiB)", ", ".join(f"{n} {len(s)}" for n, s in stores.items()),
             sum(s.nbytes for s in stores.values()) / 2**20)
    return Recording(stores, heldout, [c.identity() for c in clips], total, pipeline.config.refs)


def _prepare(pipeline: Pipeline, clip: Clip) -> Avatar:
    try:
        return pipeline.prepare(clip.face)
    except MediaError as exc:
        raise CalibrationDataError(f"calibration clip {clip.face.name}: {exc}") from None


def _run_heldout(pipeline: Pipeline, clip: Clip, wav: np.ndarray, renders: int) -> HeldOut:
    log.info("running the fp32 pipeline on held-out %s + %s (%d frames)", clip.face.name, clip.audio.name, renders)
    crops: list[tuple[np.ndarray, np.ndarray]] = []
    capturing = pipeline.with_graphs({"reference_encoder": RecordingModel(
        pipeline.graphs["reference_encoder"],
        lambda feeds, _: crops.append((feeds["ref_image"], feeds["ref_sketch"])))})
    avatar = _prepare(capturing, clip)
    held = HeldOut(clip, avatar, np.concatenate([c[0] for c in crops]), np.concatenate([c[1] for c in crops]),
                   wav, renders)
    result = run_frames(pipeline, held)
    held.faces, held.landmarks, held.frames, held.flows = result.faces, result.landmarks, result.frames, result.flows
    return held


@dataclass
class FrameResults:
    faces: np.ndarray  # (R, 3, 128, 128)
    landmarks: np.ndarray  # (R, 5, 2, 57)
    frames: list[np.ndarray]  # (H, W, 3) uint8
    flows: np.ndarray  # (R, U, 2, 128, 128) flow of each distinct reference, pixels


def run_frames(pipeline: Pipeline, held: HeldOut) -> FrameResults:
    """Render the held-out clip's frames with the pipeline's graph models (references
    encoded again with its reference encoder)."""
    references = pipeline.renderer.encode_references(held.ref_images, held.ref_sketches, held.avatar.references.index)
    avatar = replace(held.avatar, references=references)
    faces: list[np.ndarray] = []
    landmarks: list[np.ndarray] = []
    flows: list[np.ndarray] = []
    graphs = pipeline.graphs
    capturing = pipeline.with_graphs({
        "translation": RecordingModel(graphs["translation"], lambda f, o: faces.append(o["generated_face"][0])),
        "landmark_fusion": RecordingModel(graphs["landmark_fusion"], lambda f, o: landmarks.append(o["content"])),
        "flow_head": RecordingModel(graphs["flow_head"], lambda f, o: flows.append(o["flow"])),
    })
    frames = []
    for frame in capturing.stream(avatar, [held.speech]):
        if frame.index != 1 and frame.index != 2:  # the first render fills frames 0, 1, 2
            frames.append(frame.image)
    return FrameResults(np.stack(faces), np.stack(landmarks), frames, np.stack(flows))
