"""Face tracking: MediaPipe FaceMesh (0.10.21, refine_landmarks=True) without mediapipe.

Pre- and post-processing stages are checked alone on hand-made cases; the whole pipeline
against mediapipe's own landmarks (tests/data/golden_facemesh*.npz) on both backends; the
three MediaPipe custom ops, as written in ONNX, against loops that follow their C++
definitions. Nothing here imports mediapipe.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest

from conftest import DATA
from iplap.errors import IplapError, MediaError
from iplap.runtime.face import anchors, detector, geometry, mesh
from iplap.runtime.face.smoothing import OneEuroConfig, OneEuroFilter
from iplap.runtime.face.tracker import FaceTrackerConfig
from iplap.runtime.landmarks import USED_INDICES

pytest_plugins = ("facefixtures",)  # face_models, face_backend, face_stack

USED = list(USED_INDICES)
GOLDEN_NAMES = ("astronaut", "astronaut_small", "astronaut_rot12", "astronaut_zoom", "astronaut_flip")
#: The photo in frames of other shapes; 720x528 and 528x720 do not scale to whole pixels in
#: the detector's 128 x 128 letterbox (5.625 frame pixels a tensor pixel).
NONSQUARE_NAMES = ("640x480", "720x528", "720x528_zoom", "528x720_portrait", "1080x1920_portrait", "1280x720_zoom")
#: Every golden where mediapipe ran on the whole frame: (golden file, image name, landmarks key).
WHOLE_FRAME_GOLDENS = ([("facemesh", name, f"landmarks__{name}__refine") for name in GOLDEN_NAMES]
                       + [("facemesh_nonsquare", name, f"landmarks__{name}") for name in NONSQUARE_NAMES])
#: Distance to mediapipe's landmarks over the 131 used points, px: the crops are MediaPipe's
#: bit for bit, so what is left is the models' float arithmetic (ONNX Runtime or OpenVINO
#: against TFLite's XNNPACK), a few thousandths of a pixel.
# About ten times the error measured (max 0.005 px, mean 0.0014 px over the 131 points, any golden,
# either backend); the issue that matched MediaPipe on any frame shape asked for 0.06 / 0.02.
MAX_PX, MEAN_PX = 0.05, 0.015


def golden_faces(name: str = "facemesh") -> dict[str, np.ndarray]:
    with np.load(DATA / f"golden_{name}.npz") as f:
        return {k: f[k] for k in f.files}


def make_tracker(face_stack, **config):
    """A tracker over the session's loaded models (see facefixtures.face_stack)."""
    from iplap.runtime.face import FaceTracker

    detector, mesh_model, full_range = face_stack
    return FaceTracker.from_models(detector, mesh_model, full_range, FaceTrackerConfig(**config))


def _pixel_errors(points: np.ndarray, reference: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.linalg.norm((points[:, :2].astype(np.float64) - reference[:, :2]) * [width, height], axis=1)


# -- stages alone ------------------------------------------------------------------------------

def test_anchor_grids():
    short = anchors.ssd_anchors(detector.SHORT_RANGE.anchors)
    full = anchors.ssd_anchors(detector.FULL_RANGE.anchors)
    assert short.shape == (896, 4) and full.shape == (2304, 4)
    # stride 8: 16 x 16 cells, 2 anchors each; then stride 16 (three merged layers): 8 x 8 cells, 6 each
    np.testing.assert_allclose(short[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(short[1], short[0])
    np.testing.assert_allclose(short[511], [15.5 / 16, 15.5 / 16, 1, 1])
    np.testing.assert_allclose(short[512:518], np.tile([0.5 / 8, 0.5 / 8, 1, 1], (6, 1)))
    np.testing.assert_allclose(full[48], [0.5 / 48, 1.5 / 48, 1, 1])


def test_decode_offsets_scores_and_filters():
    spec = detector.SHORT_RANGE
    grid = anchors.ssd_anchors(spec.anchors)
    raw = np.zeros((896, 16), np.float32)
    logits = np.full(896, -10.0, np.float32)
    raw[100, :4] = (6.4, -12.8, 32.0, 64.0)  # x, y offsets and w, h, in tensor pixels
    raw[100, 4:6] = (12.8, 0.0)
    logits[100] = 2.0
    raw[200, 2] = -5.0  # a negative width is dropped even with a high score
    logits[200] = 5.0
    logits[300] = 1e6  # clipped at 100, then sigmoid
    scores, boxes, keypoints = detector.decode(raw[None], logits[None, :, None], grid, spec, 0.5)
    assert len(scores) == 2 and scores[1] == pytest.approx(1.0)
    ax, ay = grid[100, :2]
    xc, yc, w, h = ax + 0.05, ay - 0.1, 0.25, 0.5
    np.testing.assert_allclose(boxes[0], [xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [ax + 0.1, ay], atol=1e-6)
    assert scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_weighted_nms_merges_overlaps_and_keeps_best_first():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    keypoints = np.zeros((3, 6, 2), np.float32)
    keypoints[:, 0, 0] = (0.2, 0.3, 0.7)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    merged = detector.weighted_nms(scores, boxes, keypoints, 0.3)
    assert [round(s, 3) for s, _, _ in merged] == [0.9, 0.7]
    np.testing.assert_allclose(merged[0][1], (0.9 * boxes[1] + 0.6 * boxes[0]) / 1.5, atol=1e-6)
    assert merged[0][2][0, 0] == pytest.approx((0.9 * 0.3 + 0.6 * 0.2) / 1.5)
    np.testing.assert_allclose(merged[1][1], boxes[2])


def test_identity_crop_is_the_image():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    out = geometry.crop_to_tensor(image, (30.0, 20.0, 60.0, 40.0, 0.0), 60, 40, "zero")
    np.testing.assert_array_equal(out, image)


def test_quarter_turn_crop_rotates_the_image():
    image = np.random.default_rng(1).integers(0, 256, (32, 32), dtype=np.uint8)
    out = geometry.crop_to_tensor(image, (16.0, 16.0, 32.0, 32.0, math.pi / 2), 32, 32, "replicate")
    # Box corners go to tensor corners but OpenCV samples at integer pixel coordinates, so the
    # turn is about the centre of pixel (16, 16), half a pixel off the image's centre: one row
    # shifts (MediaPipe's own convention, kept on purpose).
    assert np.abs(out[1:].astype(int) - np.rot90(image, 1)[:-1].astype(int)).max() <= 1


def _reference_fixed_point_maps(matrix, width, height):
    """OpenCV 4's warpPerspective sample positions, in plain numpy: 1/32 pixel, rounded half to even."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    w = matrix[2, 0] * xs + matrix[2, 1] * ys + matrix[2, 2]
    scale = np.where(w != 0, 32.0 / np.where(w != 0, w, 1.0), 0.0)
    limits = np.iinfo(np.int32).min, np.iinfo(np.int32).max
    fixed = [np.rint(np.clip((matrix[k, 0] * xs + matrix[k, 1] * ys + matrix[k, 2]) * scale, *limits)).astype(np.int64)
             for k in (0, 1)]
    whole = np.clip(np.stack([f >> 5 for f in fixed], axis=-1), -32768, 32767).astype(np.int16)
    return whole, ((fixed[1] & 31) * 32 + (fixed[0] & 31)).astype(np.uint16)


def _reference_crop(image, box, size, border):
    """OpenCV 4's 8-bit bilinear warpPerspective (MediaPipe's ImageToTensor on CPU), in plain numpy:
    weights in 1/1024 from the 1/32-pixel fractions, the sum rounded half up."""
    whole, fraction = _reference_fixed_point_maps(geometry.tensor_to_image_matrix(box, size, size), size, size)
    x0, y0 = whole[..., 0].astype(np.int64), whole[..., 1].astype(np.int64)
    fx, fy = (fraction & 31).astype(np.int64), (fraction >> 5).astype(np.int64)
    height, width = image.shape[:2]
    if border == "zero":
        padded = np.pad(image.astype(np.int64), [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2))

        def tap(y, x):
            return padded[np.clip(y + 1, 0, height + 1), np.clip(x + 1, 0, width + 1)]
    else:
        def tap(y, x):
            return image.astype(np.int64)[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)]
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    total = ((32 - fy) * ((32 - fx) * tap(y0, x0) + fx * tap(y0, x0 + 1))
             + fy * ((32 - fx) * tap(y0 + 1, x0) + fx * tap(y0 + 1, x0 + 1)))
    return ((total + 512) >> 10).astype(np.uint8)


def test_letterbox_of_a_frame_that_does_not_scale_to_whole_pixels():
    # MediaPipe's detector input for a 720x528 frame: the ROI (360, 264, 720 x 528) padded to
    # 720 x 720 with no rounding (PadRoi), corners to the tensor's corners, so tensor pixel
    # (u, v) samples frame pixel (5.625 u, 5.625 v - 96). 5.625 = 180/32 lies on OpenCV 4's
    # 1/32-pixel grid, so neighbours are blended in exact 32nds: often 12/32 : 20/32.
    box, padding = geometry.pad_to_aspect(360.0, 264.0, 720.0, 528.0, 128, 128)
    assert box == (360.0, 264.0, 720.0, 720.0) and padding == (0.0, pytest.approx(96 / 720))
    np.testing.assert_allclose(geometry.tensor_to_image_matrix((*box, 0.0), 128, 128),
                               [[5.625, 0, 0], [0, 5.625, -96], [0, 0, 1]], atol=1e-9)
    frame = np.zeros((528, 720), np.uint8)
    frame[0] = 200
    frame[84, 5:7] = (100, 104)
    crop = geometry.crop_to_tensor(frame, (*box, 0.0), 128, 128, "zero")
    assert (crop[16] == 0).all()  # y = -6: all four taps in the zero border
    assert crop[17, 0] == 125  # y = -0.375: 12/32 of the border's 0 and 20/32 of row 0's 200
    # y = 84, x = 5.625: (12 * 100 + 20 * 104) / 32 = 102.5, a tie, which OpenCV 4's fixed point
    # rounds up (OpenCV 5's warpPerspective rounds it to even, 102: the divergence this pins)
    assert crop[32, 1] == 103
    # positions snap to the 1/32 grid: a shift of 1/100 pixel changes nothing
    shifted = geometry.crop_to_tensor(frame, (360.01, 264.01, 720.0, 720.0, 0.0), 128, 128, "zero")
    np.testing.assert_array_equal(shifted, crop)


@pytest.mark.parametrize("border", ("zero", "replicate"))
def test_crop_is_opencv4_fixed_point_bilinear(border):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (120, 170, 3), dtype=np.uint8)
    for box in ((80.3, 61.7, 97.1, 97.1, 0.37), (100.0, 50.0, 150.5, 90.25, -2.9), (160.0, 5.0, 60.0, 60.0, 1.1)):
        want = _reference_crop(image, box, 48, border)
        np.testing.assert_array_equal(geometry.crop_to_tensor(image, box, 48, 48, border), want)
        np.testing.assert_array_equal(geometry.crop_to_tensor(image[..., 1], box, 48, 48, border), want[..., 1])


def test_fixed_point_maps_match_their_numpy_reference():
    rotated = geometry.tensor_to_image_matrix((700.3, 400.9, 310.7, 310.7, 0.41), 192, 192)
    tilted = rotated.copy()
    tilted[2, :2] = (1e-4, -2e-4)  # a real perspective divide
    vanishing = np.array([[1.0, 0, 0], [0, 1, 0], [1.0, 0, -20.0]])  # w = 0 on column 20, huge near it
    for matrix in (rotated, tilted, vanishing, rotated * [[1e5], [1e5], [1]]):
        got = geometry.fixed_point_maps(matrix, 64, 40)
        want = _reference_fixed_point_maps(matrix, 64, 40)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_rect_corners_and_projection_agree():
    rect = geometry.NormRect(0.4, 0.6, 0.3, 0.2, 0.5)
    box = rect.to_pixels(200, 100)
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float64)
    np.testing.assert_allclose(geometry.subrect_to_image(unit, box, 200, 100) * [200, 100], rect.corners(200, 100))
    assert geometry.normalize_radians(3 * math.pi) == pytest.approx(-math.pi)


def test_letterbox_pads_the_short_side():
    box, padding = geometry.pad_to_aspect(320, 120, 640, 240, 128, 128)
    assert box == (320, 120, 640, 640) and padding == (0.0, pytest.approx((1 - 240 / 640) / 2))


def test_roi_from_detection_levels_the_eyes():
    keypoints = np.array([[0.4, 0.5], [0.6, 0.4]] + [[0.5, 0.5]] * 4, np.float32)
    found = detector.Detection(0.9, 0.3, 0.3, 0.4, 0.3, keypoints)
    roi = mesh.roi_from_detection(found, 200, 100)
    assert roi.rotation == pytest.approx(-math.atan2(0.1 * 100, 0.2 * 200))  # y grows downwards
    assert (roi.x_center, roi.y_center) == pytest.approx((0.5, 0.45))
    assert roi.width * 200 == pytest.approx(1.5 * 80) and roi.height * 100 == pytest.approx(1.5 * 80)


def test_refine_writes_the_refinement_heads_over_the_mesh():
    outputs = {"output_mesh_identity": np.arange(1404, dtype=np.float32).reshape(1, 1, 1, 1404),
               "output_lips": np.full((1, 1, 1, 160), 192.0, np.float32),
               "output_left_eye": np.full((1, 1, 1, 142), 96.0, np.float32),
               "output_right_eye": np.full((1, 1, 1, 142), 48.0, np.float32),
               "output_left_iris": np.full((1, 1, 1, 10), 24.0, np.float32),
               "output_right_iris": np.full((1, 1, 1, 10), 12.0, np.float32)}
    points = mesh.refine(outputs)
    assert points.shape == (478, 3)
    assert points[61, :2].tolist() == [1.0, 1.0] and points[61, 2] == pytest.approx((61 * 3 + 2) / 192)  # z kept
    assert points[33, 0] == 0.5 and points[263, 0] == 0.25 and points[470, 1] == 0.125
    assert points[1, 0] == pytest.approx(3 / 192)  # an unrefined point
    assert points[468, 2] == pytest.approx(np.mean([i * 3 + 2 for i in mesh.LEFT_IRIS_Z_FROM]) / 192)


def test_projection_rotates_and_scales_into_the_roi():
    points = np.array([[0.5, 0.5, 0.1], [1.0, 0.5, 0.0]], np.float32)
    out = mesh.project(points, geometry.NormRect(0.3, 0.4, 0.2, 0.1, math.pi / 2))
    np.testing.assert_allclose(out, [[0.3, 0.4, 0.02], [0.3, 0.4 + 0.05, 0.0]], atol=1e-7)


def test_bad_inputs_and_options_are_user_errors():
    with pytest.raises(MediaError):
        detector.as_bgr(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(MediaError):
        detector.as_bgr(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(IplapError):
        FaceTrackerConfig(mode="video")
    with pytest.raises(IplapError):
        FaceTrackerConfig(min_tracking_confidence=1.5)
    with pytest.raises(IplapError):
        OneEuroConfig(min_cutoff=0)


# -- the One-Euro filter ---------------------------------------------------------------------

def test_one_euro_removes_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    still = 100.0 + rng.normal(0, 1.0, (100, 5, 2))
    filt = OneEuroFilter(OneEuroConfig())
    out = np.stack([filt(x, 1 / 25, 100.0) for x in still])
    np.testing.assert_array_equal(out[0], still[0])
    assert np.diff(out[20:], axis=0).std() < 0.6 * np.diff(still[20:], axis=0).std()
    filt.reset()
    ramp = np.linspace(0, 200, 100)[:, None, None] * np.ones((1, 5, 2))  # 50 px/s on a 100 px face
    out = np.stack([filt(x, 1 / 25, 100.0) for x in ramp])
    assert np.abs(out[-1] - ramp[-1]).max() < 1.0  # lag under half a frame's motion (2 px)


# -- MediaPipe's custom ops, as ONNX -----------------------------------------------------------

def _reference_matrix(landmarks, left, right, subset, out_hw, scale_xy):
    """Landmarks2TransformMatrix v2 as MediaPipe's kernel computes it (float64 here)."""
    rotation = -math.atan2(landmarks[right, 1] - landmarks[left, 1], landmarks[right, 0] - landmarks[left, 0])
    c, s = math.cos(rotation), math.sin(rotation)
    pts = landmarks[subset, :2] @ np.array([[c, -s], [s, c]]).T
    lo, hi = pts.min(0), pts.max(0)
    centre = np.array([[c, s], [-s, c]]) @ ((lo + hi) / 2)

    def m4(a, b, tx, ty):
        return np.array([[a[0], a[1], 0, tx], [b[0], b[1], 0, ty], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)

    out_h, out_w = out_hw
    t = m4((1, 0), (0, 1), *centre)
    t = t @ m4((c, s), (-s, c), 0, 0)
    t = t @ m4((scale_xy[0] * (hi - lo)[0] / out_w, 0), (0, scale_xy[1] * (hi - lo)[1] / out_h), 0, 0)
    return t @ m4((1, 0), (0, 1), -out_w / 2, -out_h / 2)


def _reference_sample(features, matrix, out_hw):
    """TransformTensorBilinear v2: NHWC features, zero when the point falls outside."""
    _, height, width, channels = features.shape
    x_row, y_row = matrix[0].copy(), matrix[1].copy()
    x_row[3] += x_row[0] * 0.5 + x_row[1] * 0.5 - 0.5
    y_row[3] += y_row[0] * 0.5 + y_row[1] * 0.5 - 0.5
    out = np.zeros((1, *out_hw, channels))

    def read(h, w):
        return features[0, h, w] if 0 <= h < height and 0 <= w < width else np.zeros(channels)

    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            x = x_row[0] * ox + x_row[1] * oy + x_row[3]
            y = y_row[0] * ox + y_row[1] * oy + y_row[3]
            if x < 0 or x > width - 1 or y < 0 or y > height - 1:
                continue
            fx, fy = math.floor(x), math.floor(y)
            dx, dy = x - fx, y - fy
            top = (1 - dx) * read(fy, fx) + dx * read(fy, fx + 1)
            bottom = (1 - dx) * read(fy + 1, fx) + dx * read(fy + 1, fx + 1)
            out[0, oy, ox] = dy * bottom + (1 - dy) * top
    return out


def test_custom_ops_match_their_definitions():
    pytest.importorskip("onnx")
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from iplap.export import OPSET
    from iplap.export.facemodels.convert import Converter
    from iplap.export.facemodels.mediapipe_ops import (landmarks_to_matrix, transform_landmarks,
                                                       transform_tensor_bilinear)

    rng = np.random.default_rng(3)
    landmarks = np.concatenate([rng.uniform(8, 40, (12, 2)), rng.uniform(-1, 1, (12, 1))], axis=1).astype(np.float32)
    features = rng.normal(0, 1, (1, 48, 48, 4)).astype(np.float32)
    crop = rng.uniform(0, 16, (1, 7, 2)).astype(np.float32)
    attrs = {"left_rotation_idx": 1, "right_rotation_idx": 4, "output_height": 16, "output_width": 16,
             "scale_x": 2.5, "scale_y": 2.5, "subset_idxs": [0, 2, 3, 5, 7, 9], "target_rotation_radians": 0.0}

    cv = Converter([])
    matrix = landmarks_to_matrix(cv, "landmarks", attrs, attrs["subset_idxs"])
    nchw = cv.node("Transpose", ["features"], "nchw", perm=[0, 3, 1, 2])
    sampled = transform_tensor_bilinear(cv, nchw, matrix, (48, 48), (16, 16))
    sampled = cv.node("Transpose", [sampled], "nhwc", perm=[0, 2, 3, 1])
    moved = transform_landmarks(cv, "crop", matrix, 2)
    names = {"matrix": matrix, "sampled": sampled, "moved": moved}
    cv.nodes += [helper.make_node("Identity", [v], [k]) for k, v in names.items()]
    graph = helper.make_graph(
        cv.nodes, "custom_ops",
        [helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, [1, 12, 3]),
         helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 48, 48, 4]),
         helper.make_tensor_value_info("crop", TensorProto.FLOAT, [1, 7, 2])],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, shape) for k, shape in
         (("matrix", [1, 4, 4]), ("sampled", [1, 16, 16, 4]), ("moved", [1, 7, 2]))], cv.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"landmarks": landmarks[None], "features": features, "crop": crop}
    got = dict(zip(names, session.run(list(names), feeds), strict=True))

    want_matrix = _reference_matrix(landmarks.astype(np.float64), 1, 4, attrs["subset_idxs"], (16, 16), (2.5, 2.5))
    np.testing.assert_allclose(got["matrix"][0], want_matrix, atol=2e-5)
    want_sampled = _reference_sample(features.astype(np.float64), want_matrix, (16, 16))
    assert (want_sampled == 0).all(axis=-1).sum() > 10  # the grid reaches outside the map
    np.testing.assert_allclose(got["sampled"], want_sampled, atol=2e-4)
    want_moved = crop[0] @ want_matrix[:2, :2].T + want_matrix[:2, 3]
    np.testing.assert_allclose(got["moved"][0], want_moved, atol=1e-4)


# -- the converted models --------------------------------------------------------------------

def test_export_writes_fp32_models_with_provenance(face_models):
    import onnx

    from iplap.export import facemodels as fm

    for source in fm.SOURCES:
        model = onnx.load(str(face_models[f"{source.name}.onnx"]), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["source_sha256"] == source.sha256 and props["precision"] == "fp32"
        xml = face_models[f"openvino/{source.name}.xml"].read_text()
        assert 'element_type="f16"' not in xml and source.sha256 in xml


def test_export_refuses_an_altered_wheel(tmp_path):
    import zipfile

    from iplap.export import facemodels as fm

    wheel = tmp_path / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(fm.DETECTOR.member, b"not the model")
    with pytest.raises(fm.FaceModelExportError, match="sha256"):
        fm.read_model(wheel, fm.DETECTOR)
    with pytest.raises(fm.FaceModelExportError, match="not found"):
        fm.locate_wheel(tmp_path / "missing.whl")


# -- the whole pipeline against mediapipe ------------------------------------------------------

@pytest.mark.parametrize(("golden", "name", "key"), WHOLE_FRAME_GOLDENS, ids=[n for _, n, _ in WHOLE_FRAME_GOLDENS])
def test_landmarks_match_mediapipe(face_stack, golden, name, key):
    gold = golden_faces(golden)
    image, reference = gold[f"image__{name}"], gold[key]
    height, width = image.shape[:2]
    found = make_tracker(face_stack).process(image)
    assert found is not None and found.source == "detection" and found.points.shape == (478, 3)
    errors = _pixel_errors(found.points, reference, width, height)
    used = errors[USED]
    print(f"{name} ({width}x{height}): 131 points max {used.max():.4f} px, mean {used.mean():.4f} px")
    assert used.max() <= MAX_PX and used.mean() <= MEAN_PX, f"131 used points: max {used.max():.4f} px, " \
                                                              f"mean {used.mean():.4f} px"
    assert errors.max() < 1.0, f"478 points: {errors.max():.3f} px"
    assert np.abs(found.points[:, 2] - reference[:, 2]).max() * width < 1.0  # z, in x pixels
    assert found.crop_box() == _crop_box(reference, height, width)


def _crop_box(points, height, width):
    from iplap.runtime.landmarks import crop_box

    return crop_box(points, height, width)


def test_no_face_is_none(face_stack):
    image = golden_faces()["image__no_face"]
    tracker = make_tracker(face_stack)
    assert tracker.detect(image) == [] and tracker.process(image) is None


def test_gray_bgra_and_4k_inputs(face_stack):
    photo = golden_faces()["image__astronaut"]
    tracker = make_tracker(face_stack)
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(tracker.process(gray).points,
                                  tracker.process(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)).points)
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    bgra[..., 3] = 7
    np.testing.assert_array_equal(tracker.process(bgra).points, tracker.process(photo).points)
    big = cv2.resize(photo, (2048, 2048), interpolation=cv2.INTER_CUBIC)
    canvas = np.zeros((2160, 3840, 3), np.uint8)
    canvas[56:2104, 896:2944] = big
    found = tracker.process(canvas)
    assert found is not None
    back = (found.pixels() - [896, 56]) / 4.0  # in the 512 px photo's pixels
    assert np.linalg.norm(back[USED] - tracker.process(photo).pixels()[USED], axis=1).max() < 1.5


def test_several_faces_take_the_best_and_log_it(face_stack, caplog):
    photo = golden_faces()["image__astronaut"]
    face = photo[20:276, 90:346]
    pair = np.hstack([face, cv2.resize(face[16:240, 16:240], (256, 256))])
    tracker = make_tracker(face_stack)
    found = tracker.detect(pair)
    assert len(found) == 2 and found[0].score >= found[1].score
    with caplog.at_level(logging.INFO, logger="iplap.runtime.face.tracker"):
        result = tracker.process(pair)
    best = found[0]
    assert (result.detection.score, result.detection.xmin, result.detection.ymin) == (best.score, best.xmin, best.ymin)
    assert any("2 faces" in r.getMessage() for r in caplog.records)


# -- tracking ----------------------------------------------------------------------------------

def _clip(n=8, noise=0.0):
    from iplap.samples.clip import head_motion

    return head_motion(n / 25, image=golden_faces()["image__astronaut"], noise=noise)[0]


def test_tracking_follows_the_face_close_to_static(face_stack):
    clip = _clip()
    static, track = make_tracker(face_stack), make_tracker(face_stack, mode="track")
    results = list(track.process_video(clip))
    assert [r.source for r in results] == ["detection"] + ["tracking"] * (len(clip) - 1)
    diffs = [np.linalg.norm(r.pixels()[USED] - static.process(f).pixels()[USED], axis=1)
             for r, f in zip(results, clip, strict=True)]
    assert np.mean(diffs) < 1.5 and np.max(diffs) < 5.0  # px, on a 512 px photo with a 100 px face
    np.testing.assert_array_equal(results[0].points, static.process(clip[0]).points)


def test_lost_track_detects_again(face_stack):
    gold = golden_faces()
    face, empty = gold["image__astronaut"], cv2.resize(gold["image__no_face"], (512, 512))
    tracker = make_tracker(face_stack, mode="track")
    sources = [r.source if r else None for r in tracker.process_video([face, face, empty, face])]
    assert sources == ["detection", "tracking", None, "detection"]
    # the face jumps away: the old ROI holds no face; detect again on the same frame, or report none
    crop = face[20:276, 90:346]
    left, right = np.zeros((256, 512, 3), np.uint8), np.zeros((256, 512, 3), np.uint8)
    left[:, :256], right[:, 256:] = crop, crop
    assert [r.source for r in tracker.process_video([left, right])] == ["detection", "detection"]
    strict = make_tracker(face_stack, mode="track", redetect_on_loss=False)
    assert [r.source if r else None for r in strict.process_video([left, right, right])] == [
        "detection", None, "detection"]


def test_smoothing_reduces_jitter(face_stack):
    clip = _clip(n=25, noise=3.0)

    def frame_motion(tracker):
        points = np.stack([r.pixels()[USED] for r in tracker.process_video(clip)])
        return np.linalg.norm(np.diff(points, axis=0), axis=2).mean()

    raw = frame_motion(make_tracker(face_stack, mode="track"))
    smooth = frame_motion(make_tracker(face_stack, mode="track", smoothing=OneEuroConfig()))
    print(f"mean frame-to-frame motion of the 131 points: raw {raw:.3f} px, One-Euro {smooth:.3f} px")
    assert smooth < 0.9 * raw


# -- small faces (issue 9) ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ("1280x720_face140px", "1920x1080_face200px", "3840x2160_face420px"))
def test_small_faces_are_found_close_to_mediapipe(face_stack, name):
    gold = golden_faces("facemesh_small_faces")
    image, reference = gold[f"image__{name}"], gold[f"landmarks__{name}"]
    height, width = image.shape[:2]
    assert make_tracker(face_stack, small_faces=False).process(image) is None  # as mediapipe
    found = make_tracker(face_stack).process(image)
    assert found is not None and found.source == "small_face"
    face_width = (reference[USED, 0].max() - reference[USED, 0].min()) * width
    errors = _pixel_errors(found.points, reference, width, height)[USED] / face_width
    print(f"{name}: max {errors.max():.2%}, mean {errors.mean():.2%} of the face's width")
    assert errors.max() <= 0.02 and errors.mean() <= 0.01
