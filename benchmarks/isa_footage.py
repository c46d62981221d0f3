"""Where real footage could diverge between CPUs: the stages that turn rounding into pixels.

Floating-point results differ between instruction sets by a few ulps (see
:mod:`.isa_spread`). Most stages pass that on as it is; the ones that can amplify it are
those that round to integers: the face crop box (``int()`` of landmarks, as the original),
the sketches' line pixels, and the mask contour. This takes a face video and speech and, for
every 25 fps frame and every landmark window, measures in this process:

* the face track of each backend (onnxruntime, OpenVINO): the landmarks' difference in
  pixels and the frames whose crop box differs (a box one pixel off shifts the whole face);
* the landmark generator of PyTorch (the original) and of each backend on the same inputs,
  and the sketches drawn from each: the pixels that differ.

Run it natively and under QEMU with another CPU model to compare CPUs (``qemu-x86_64 -cpu
EPYC-Milan python -m iplap.benchmarks.isa_footage ...`` emulates a Zen 3: AVX2, no AVX-512;
QEMU computes PyTorch's AVX2 kernels wrongly, so use ``--no-torch`` there) and ``--dump``
to save the tracks for a comparison between runs (``--compare A.npz B.npz``).

::

    python -m iplap.benchmarks.isa_footage --bundle B --checkpoints DIR --face 129.mp4 --audio speech.wav
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..limits import BACKENDS


def _tracks(bundle: Path, face: Path) -> dict:
    from .. import BackendConfig, Pipeline, PipelineConfig

    return {b: Pipeline(bundle, PipelineConfig(backend=BackendConfig(b, threads=2), refs=5)).prepare(face)
            for b in BACKENDS}


def track_report(avatars: dict) -> dict:
    first, second = (avatars[b].track for b in BACKENDS)
    px = np.abs((first.landmarks[:, :, :2] - second.landmarks[:, :, :2]) * (first.width, first.height))
    boxes = (first.boxes != second.boxes).any(axis=1)
    return {"frames": len(first.boxes), "landmark_px_max": float(px.max()), "landmark_px_mean": float(px.mean()),
            "crop_boxes_differing": int(boxes.sum()), "frames_with_other_boxes": np.flatnonzero(boxes)[:20].tolist()}


def sketch_report(bundle: Path, avatar, audio: Path, checkpoints: Path | None) -> dict:
    """Landmarks of every window from each engine, and the sketch pixels they draw differently."""
    from ..runtime.audio import load_speech
    from ..runtime.backends import BackendConfig
    from ..runtime.bundle import Bundle
    from ..runtime.renderer import LandmarkGenerator
    from ..runtime.session import StreamSession, StreamSetup
    from ..runtime.sketch import draw_sketches

    source = Bundle.load(bundle)
    engines = {b: LandmarkGenerator(source, BackendConfig(b, threads=2)).predict for b in BACKENDS}
    if checkpoints is not None:
        engines = {"torch": _torch_predict(checkpoints), **engines}
    models = __import__("iplap").Pipeline(source).models
    session = StreamSession(StreamSetup(models, avatar))
    session.accept(load_speech(audio).for_model())
    session.finish()
    reference, found = next(iter(engines)), {}
    stats = {name: {"windows": 0, "windows_with_flips": 0, "pixels": 0, "max_landmark_diff": 0.0}
             for name in engines if name != reference}
    track = avatar.track
    while (plan := session.plan_next()) is not None:
        pose_ref, content_ref = session.landmark_references
        found = {name: predict(plan.mels, plan.pose, pose_ref, content_ref) for name, predict in engines.items()}
        hw = np.array([track.crop_hw(k) for k in plan.seq])
        drawn = {name: draw_sketches(np.concatenate([plan.pose[0], content], axis=2), hw)
                 for name, content in found.items()}
        for name, entry in stats.items():
            flips = int((drawn[name] != drawn[reference]).any(axis=1).sum())
            entry["windows"] += 1
            entry["windows_with_flips"] += flips > 0
            entry["pixels"] += flips
            entry["max_landmark_diff"] = max(entry["max_landmark_diff"],
                                             float(np.abs(found[name] - found[reference]).max()))
    return {"against": reference, **stats}


def _torch_predict(checkpoints: Path):
    import torch

    from ..export.reference import original_landmark_generator

    model = original_landmark_generator(checkpoints)

    def predict(mels, pose, ref_pose, ref_content):
        with torch.no_grad():
            return model(*(torch.from_numpy(np.ascontiguousarray(x, np.float32))
                           for x in (mels, pose, ref_pose, ref_content))).numpy()

    return predict


def compare_dumps(first: Path, second: Path) -> dict:
    a, b = np.load(first), np.load(second)
    frames = np.abs(a["frames"].astype(int) - b["frames"].astype(int))
    px = np.abs(a["landmarks"][:, :, :2] - b["landmarks"][:, :, :2]) * a["frames"].shape[2]
    return {"frames_differing": int((frames.reshape(len(frames), -1).max(axis=1) > 0).sum()),
            "landmark_px_max": float(px.max()), "crop_boxes_differing": int((a["boxes"] != b["boxes"]).any(axis=1).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iplap.benchmarks.isa_footage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--face", type=Path, help="a face video (real footage)")
    parser.add_argument("--audio", type=Path, help="speech for the landmark windows")
    parser.add_argument("--checkpoints", type=Path, help="the checkpoints the bundle was exported from (PyTorch)")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out (under QEMU)")
    parser.add_argument("--dump", type=Path, help="save the decoded frames and the onnxruntime track (.npz)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="NPZ", help="compare two --dump files and exit")
    args = parser.parse_args(argv)
    if args.compare:
        print(json.dumps(compare_dumps(*args.compare), indent=1))
        return 0
    if not (args.bundle and args.face and args.audio):
        parser.error("--bundle, --face and --audio are needed (or --compare)")
    avatars = _tracks(args.bundle, args.face)
    report = {"tracks": track_report(avatars),
              "sketches": sketch_report(args.bundle, avatars[BACKENDS[0]], args.audio,
                                        None if args.no_torch else args.checkpoints)}
    if args.dump is not None:
        from ..runtime.face_source import avatar_face

        avatar = avatars[BACKENDS[0]]
        with avatar_face(avatar).frames() as reader:
            frames = np.stack([reader[k].copy() for k in range(avatar.n_frames)])
        np.savez(args.dump, frames=frames, landmarks=avatar.track.landmarks, boxes=avatar.track.boxes)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
