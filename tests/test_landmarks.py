"""The landmark bookkeeping of the original, checked on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from iplap.runtime import landmarks as L


def test_used_points_and_order():
    assert (L.N_POSE, L.N_CONTENT, L.N_USED) == (74, 57, 131)
    assert len(set(L.USED_INDICES)) == 131
    assert set(L.USED_INDICES) == set(L.ORI_SEQUENCE_IDX)
    # Content is jaw (17, the oval between the cheeks) then lips (40).
    assert L.CONTENT_INDICES[:17] == L.ORI_SEQUENCE_IDX[4:21]
    assert L.CONTENT_INDICES[17:] == L.ORI_SEQUENCE_IDX[91:]
    assert L.POSE_INDICES == L.ORI_SEQUENCE_IDX[0:4] + L.ORI_SEQUENCE_IDX[21:91]
    assert L.LIP_OPENNESS_POINTS == (0, 17) and {0, 17} <= set(L.CONTENT_INDICES)


def _mesh(x_range=(0.4, 0.6), y_range=(0.3, 0.7)) -> np.ndarray:
    mesh = np.full((478, 3), 0.5, np.float32)
    used = list(L.USED_INDICES)
    mesh[used, 0] = np.linspace(*x_range, len(used))
    mesh[used, 1] = np.linspace(*y_range, len(used))[::-1]
    mesh[10] = (0.0, 0.0, 0.0)  # an unused point far away does not widen the box
    return mesh


def test_crop_box_adds_margin_and_truncates():
    y1, y2, x1, x2 = L.crop_box(_mesh(), 200, 100)
    f32 = lambda v: float(np.float32(v))  # noqa: E731  (FaceMesh gives float32 coordinates)
    assert (y1, y2) == (int((f32(0.3) - 25 / 200) * 200), int((f32(0.7) + 25 / 200) * 200)) == (35, 164)
    assert (x1, x2) == (int((f32(0.4) - 0.25) * 100), int((f32(0.6) + 0.25) * 100))


def test_crop_box_is_clipped_to_the_image():
    assert L.crop_box(_mesh((0.01, 0.99), (0.0, 1.0)), 100, 100) == (0, 100, 0, 100)


def test_normalise_to_box():
    mesh = _mesh()
    box = L.crop_box(mesh, 200, 100)
    full = L.normalise_to_box(mesh, 200, 100, box)
    assert full.shape == (2, 131) and full.dtype == np.float32
    y1, y2, x1, x2 = box
    col = L.USED_INDICES.index(0)
    assert full[0, col] == pytest.approx((100 * mesh[0, 0] - x1) / (x2 - x1), rel=1e-6)
    assert full[1, col] == pytest.approx((200 * mesh[0, 1] - y1) / (y2 - y1), rel=1e-6)
    pose, content = L.split_pose_content(full)
    assert pose.shape == (2, 74) and content.shape == (2, 57)


def test_lip_openness():
    mesh = np.zeros((478, 3))
    mesh[0, :2] = (0.5, 0.50)
    mesh[17, :2] = (0.53, 0.54)
    assert L.lip_openness(mesh) == pytest.approx(0.05)


def test_references_spread_over_sorted_openness():
    openness = np.array([0.5, 0.1, 0.4, 0.2, 0.3])
    # sorted: frames 1, 3, 4, 2, 0; linspace(0, 4, 3) = 0, 2, 4
    assert L.select_references(openness, 3).tolist() == [1, 4, 0]
    assert L.select_references(openness, 5).tolist() == [1, 3, 4, 2, 0]


def test_references_from_a_single_photo_repeat_it():
    assert L.select_references(np.array([0.2]), 25).tolist() == [0] * 25


def test_reference_ties_keep_frame_order():
    assert L.select_references(np.zeros(4), 4).tolist() == [0, 1, 2, 3]


def test_linspace_like_torch():
    torch = pytest.importorskip("torch")
    for n in (1, 2, 7, 10, 26, 100, 1001, 4093):
        for steps in (1, 5, 15, 25):
            ours = L.torch_linspace_f32(0, n - 1, steps)
            assert ours.tobytes() == torch.linspace(0, n - 1, steps=steps).numpy().tobytes(), (n, steps)


def test_pingpong():
    assert [L.pingpong_index(k, 3) for k in range(10)] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    assert L.pingpong_index(np.arange(4), 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        L.pingpong_index(0, 0)
