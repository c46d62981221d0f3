"""The accuracy gate's measurements: candidate graphs against fp32 on the held-out clips.

A candidate is a set of graph models (some quantized) put into the same pipeline that
made the fp32 results; the held-out frames are rendered again end to end, so an error in
the landmarks reaches the sketches and the renderer as it would in use. Measured against
fp32: PSNR and SSIM of the generated 128x128 faces and PSNR of the final frames, and the
landmark error in pixels of a 128 px crop (all 57 predicted points of every frame of
every 5-frame window).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np

from ..metrics import landmark_error_px, psnr, ssim
from ..runtime.backends import InferenceModel
from ..runtime.pipeline import Pipeline
from .record import FrameResults, HeldOut, run_frames

log = logging.getLogger(__name__)

#: PSNR of identical images is infinite; JSON has no infinity, so it is capped here.
PSNR_CAP_DB = 100.0


@dataclass(frozen=True)
class Metrics:
    """Candidate against fp32 on the held-out frames."""

    face_psnr_db: float  # mean over frames of the 128x128 face's PSNR
    face_psnr_min_db: float  # the worst frame
    face_ssim: float  # mean over frames
    frame_psnr_db: float  # mean over frames of the final (pasted, blended) frame's PSNR
    landmark_mean_px: float  # pixels of a 128 px crop
    landmark_max_px: float
    flow_mean_px: float  # the flow head's deformation, pixels of the 128 px face (a diagnostic)
    flow_max_px: float
    frames: int

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items()}

    def __str__(self) -> str:
        return (f"face PSNR {self.face_psnr_db:.2f} dB (worst frame {self.face_psnr_min_db:.2f}), "
                f"SSIM {self.face_ssim:.4f}, landmarks mean {self.landmark_mean_px:.3f} px / "
                f"max {self.landmark_max_px:.3f} px, flow mean {self.flow_mean_px:.3f} px / max "
                f"{self.flow_max_px:.3f} px, {self.frames} frames")


def _capped(value: float) -> float:
    return min(PSNR_CAP_DB, value)


def compare(heldout: list[HeldOut], results: list[FrameResults]) -> Metrics:
    face_psnr, face_ssim, frame_psnr, landmark_max, landmark_sum, points = [], [], [], [], 0.0, 0
    flow_max, flow_sum, flow_points = 0.0, 0.0, 0
    for held, result in zip(heldout, results):
        if result.faces.shape != held.faces.shape:
            raise RuntimeError(f"{held.clip.face.name}: {len(result.faces)} frames rendered, "
                               f"fp32 gave {len(held.faces)}")
        for ours, ref in zip(result.faces, held.faces):
            face_psnr.append(_capped(psnr(ours, ref, peak=1.0)))
            face_ssim.append(ssim(ours.transpose(1, 2, 0), ref.transpose(1, 2, 0), peak=1.0))
        for ours, ref in zip(result.frames, held.frames):
            frame_psnr.append(_capped(psnr(ours, ref)))
        worst, mean = landmark_error_px(result.landmarks, held.landmarks)
        count = held.landmarks[..., 0, :].size
        landmark_max.append(worst)
        landmark_sum, points = landmark_sum + mean * count, points + count
        # Flow errors per pixel: the length of the difference of the two displacement vectors.
        diff = np.hypot(*np.moveaxis(result.flows - held.flows, -3, 0))
        flow_max = max(flow_max, float(diff.max()))
        flow_sum, flow_points = flow_sum + float(diff.sum(dtype=np.float64)), flow_points + diff.size
    return Metrics(float(np.mean(face_psnr)), float(np.min(face_psnr)), float(np.mean(face_ssim)),
                   float(np.mean(frame_psnr)), landmark_sum / points, float(max(landmark_max)),
                   flow_sum / flow_points, flow_max, len(face_psnr))


class Evaluator:
    """Renders the held-out clips with candidate graph models in one pipeline.

    ``pipeline`` holds the fp32 models of one backend; a candidate replaces some of them
    in a pipeline of its own (``Pipeline.with_graphs``), so ``pipeline`` never changes.
    """

    def __init__(self, pipeline: Pipeline, heldout: list[HeldOut]):
        self.pipeline = pipeline
        self.heldout = heldout

    def evaluate(self, models: dict[str, InferenceModel]) -> Metrics:
        candidate = self.pipeline.with_graphs(models)
        return compare(self.heldout, [run_frames(candidate, held) for held in self.heldout])
