"""The original IP_LAP inference procedure, restated with the torch models, for fidelity tests.

It follows ``inference_single.py`` of the original release step by step, with its data
structures (lists of (index, x, y) tuples sorted by the fixed sequence, ``torch.linspace``
for the references, the ping-pong list built as the original builds it, the original's
per-reference renderer loop, full-frame blending), and none of the runtime's shortcuts:
no split graphs, no Numba, no reference deduplication, no cropped blur. Two things come
from outside, as the tests intend: the face track (478 FaceMesh points per frame, from
the runtime's tracker, standing in for mediapipe) and the contour for the blend mask
(FaceMesh jaw and brows, standing in for the FAN model). The mel spectrogram and the
sketch drawing are the runtime's, which match their goldens exactly.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from iplap.runtime.audio import melspectrogram
from iplap.runtime.compose import CONTOUR
from iplap.runtime.landmarks import CONTENT_INDICES, ORI_SEQUENCE_IDX, POSE_INDICES
from iplap.runtime.sketch import draw_sketch

REF_N, NL, T, MEL_STEP, IMG = 25, 15, 5, 16, 128


def _boxes(landmarks: list[np.ndarray], h: int, w: int) -> list[tuple[int, int, int, int]]:
    used = set(ORI_SEQUENCE_IDX)
    boxes = []
    for lm in landmarks:
        xs = [float(lm[i, 0]) for i in range(len(lm)) if i in used]
        ys = [float(lm[i, 1]) for i in range(len(lm)) if i in used]
        x_min, x_max = max(min(xs) - 25 / w, 0), min(max(xs) + 25 / w, 1)
        y_min, y_max = max(min(ys) - 25 / h, 0), min(max(ys) + 25 / h, 1)
        boxes.append((int(y_min * h), int(y_max * h), int(x_min * w), int(x_max * w)))
    return boxes


def _split(lm: np.ndarray, box, h: int, w: int):
    y1, y2, x1, x2 = box
    pose = [(i, (w * float(lm[i, 0]) - x1) / (x2 - x1), (h * float(lm[i, 1]) - y1) / (y2 - y1)) for i in POSE_INDICES]
    content = [(i, (w * float(lm[i, 0]) - x1) / (x2 - x1), (h * float(lm[i, 1]) - y1) / (y2 - y1))
               for i in CONTENT_INDICES]
    order = ORI_SEQUENCE_IDX.index
    pose.sort(key=lambda t: order(t[0]))
    content.sort(key=lambda t: order(t[0]))
    return (torch.FloatTensor([[p[1] for p in pose], [p[2] for p in pose]]),
            torch.FloatTensor([[c[1] for c in content], [c[2] for c in content]]))


def _mask_blend(original: np.ndarray, generated: np.ndarray, lm: np.ndarray) -> np.ndarray:
    h, w = original.shape[:2]
    pts = (np.asarray(lm, np.float64)[list(CONTOUR), :2] * (w, h)).astype(np.int32)
    mask = np.zeros((h, w, 1), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255)
    mask1 = cv2.GaussianBlur(mask, (21, 21), 11) / 255
    mask1 = np.tile(np.expand_dims(mask1, axis=2), (1, 1, 3))
    return (generated * mask1 + original * (1 - mask1)).astype(np.uint8)


@torch.no_grad()
def original_procedure(frames: list[np.ndarray], landmarks: list[np.ndarray], wav: np.ndarray, landmark_generator,
                       renderer, ref_n: int = REF_N) -> list[np.ndarray]:
    """Output frames of the original procedure (25 fps frames, their 478-point tracks, 16 kHz speech)."""
    h, w = frames[0].shape[:2]
    n_video = len(frames)
    mel = melspectrogram(wav)
    mel_chunks, k = [], 0
    while int(k * 80.0 / 25) + MEL_STEP <= mel.shape[1]:
        s = int(k * 80.0 / 25)
        mel_chunks.append(mel[:, s:s + MEL_STEP])
        k += 1
    boxes = _boxes(landmarks, h, w)
    crops = [f[y1:y2, x1:x2] for f, (y1, y2, x1, x2) in zip(frames, boxes)]
    poses, contents = zip(*[_split(lm, box, h, w) for lm, box in zip(landmarks, boxes)])
    lip_dists = [(i, float(np.linalg.norm((float(lm[0, 0]) - float(lm[17, 0]), float(lm[0, 1]) - float(lm[17, 1])))))
                 for i, lm in enumerate(landmarks)]
    order = [i for i, _ in sorted(lip_dists, key=lambda x: x[1])]
    nl_idx = [order[int(i)] for i in torch.linspace(0, n_video - 1, steps=NL)]
    nl_pose = torch.stack([poses[i] for i in nl_idx])[None]
    nl_content = torch.stack([contents[i] for i in nl_idx])[None]
    ref_idx = [order[int(i)] for i in torch.linspace(0, n_video - 1, steps=ref_n)]
    ref_sketches, ref_imgs = [], []
    for i in ref_idx:
        full = torch.cat([poses[i], contents[i]], dim=1).numpy()
        ref_sketches.append(draw_sketch(full, *crops[i].shape[:2]))
        ref_imgs.append(cv2.resize(crops[i].copy(), (IMG, IMG)))
    ref_sketches = torch.FloatTensor(np.asarray(ref_sketches) / 255.0)[None].permute(0, 1, 4, 2, 3)
    ref_imgs = torch.FloatTensor(np.asarray(ref_imgs) / 255.0)[None].permute(0, 1, 4, 2, 3)

    sequence = list(range(n_video))
    repeats = len(mel_chunks) // n_video + 1
    # One period more than the original builds: its list can end one frame short of the last window.
    sequence = (sequence + list(reversed(sequence))) * ((repeats + 1) // 2 + 1)

    out = []
    for start in range(0, len(mel_chunks) - 2):
        window = [sequence[m] for m in range(start, start + T)]
        t_mels = torch.FloatTensor(np.asarray([mel_chunks[max(0, m - 2)] for m in range(start, start + T)]))
        t_mels = t_mels[:, None][None]  # (1, T, 1, 80, 16)
        t_pose = torch.stack([poses[i] for i in window])[None]
        content = landmark_generator(t_mels, t_pose, nl_pose, nl_content)
        full = torch.cat([t_pose[0], content], dim=2).numpy()
        sketches = [torch.FloatTensor(draw_sketch(full[j], *crops[window[j]].shape[:2])) / 255 for j in range(T)]
        target = torch.stack(sketches).permute(0, 3, 1, 2)[None]
        centre = window[2]
        face = torch.FloatTensor(cv2.resize(crops[centre], (IMG, IMG)) / 255).permute(2, 0, 1)[None, None]
        generated = renderer(face, target, ref_imgs, ref_sketches, t_mels[:, 2][None])[0]
        gen = (generated[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        y1, y2, x1, x2 = boxes[centre]
        pasted = frames[centre].copy()
        pasted[y1:y2, x1:x2] = cv2.resize(gen, (x2 - x1, y2 - y1))
        final = _mask_blend(frames[centre], pasted, landmarks[centre])
        out.extend([final] * (3 if start == 0 else 1))
    return out
