"""The Numba warp-and-fuse kernel against torch's grid_sample and the original fusion."""

from __future__ import annotations

import numpy as np
import pytest

from iplap.runtime import warp


def _inputs(n, size=16, c1=4, c2=6, seed=0, flow_scale=4.0):
    rng = np.random.default_rng(seed)
    flow = (rng.standard_normal((n, 2, size, size)) * flow_scale).astype(np.float32)
    weight = rng.uniform(0, 1, (n, 1, size, size)).astype(np.float32)
    h1 = rng.uniform(0, 1, (n, c1, size, size)).astype(np.float32)
    h2 = rng.uniform(0, 1, (n, c2, size // 2, size // 2)).astype(np.float32)
    ref = rng.uniform(0, 1, (n, 3, size, size)).astype(np.float32)
    return flow, weight, h1, h2, ref


def _kernel(flow, weight, h1, h2, ref):
    return warp.warp_and_fuse(flow, weight, warp.channels_last(h1), warp.channels_last(h2), warp.channels_last(ref))


@pytest.mark.parametrize("n", [1, 3, 25])
def test_kernel_matches_numpy_reference(n):
    inputs = _inputs(n)
    for ours, ref in zip(_kernel(*inputs), warp.warp_and_fuse_reference(*inputs)):
        assert np.abs(ours - ref).max() < 1e-5


def test_kernel_matches_torch_original():
    torch = pytest.importorskip("torch")
    from iplap.models.warp import fuse_warped

    inputs = _inputs(5, size=32, c1=32, c2=16, flow_scale=10.0)  # large flows: many samples fall outside
    with torch.no_grad():
        expected = fuse_warped(*(torch.from_numpy(x)[None] for x in (inputs[2], inputs[3], inputs[4], inputs[0],
                                                                       inputs[1])))
    for ours, ref in zip(_kernel(*inputs), expected):
        assert ours.shape == ref.shape
        assert np.abs(ours - ref.numpy()).max() < 1e-5


def test_zero_weights_give_zero_not_nan():
    flow, weight, h1, h2, ref = _inputs(2)
    outs = _kernel(flow, np.zeros_like(weight), h1, h2, ref)
    assert all(np.isfinite(o).all() and np.abs(o).max() == 0 for o in outs)


def test_single_reference_weight_cancels():
    """With one reference, fusion divides the weight out: w / (w + 1e-5) ~ 1."""
    flow, weight, h1, h2, ref = _inputs(1)
    a = _kernel(flow, weight + 1.0, h1, h2, ref)
    b = _kernel(flow, weight * 0 + 2.0, h1, h2, ref)
    for x, y in zip(a, b):
        assert np.abs(x - y).max() < 1e-4


def test_shape_checks():
    flow, weight, h1, h2, ref = _inputs(2)
    with pytest.raises(ValueError, match="h2"):
        warp.warp_and_fuse(flow, weight, warp.channels_last(h1), warp.channels_last(h1), warp.channels_last(ref))


def test_repeated_references_by_index_equal_explicit_copies():
    """A photo's N identical references: computing one and indexing it N times is exact."""
    flow, weight, h1, h2, ref = _inputs(2)
    index = np.array([1, 0, 0, 1, 0])
    by_index = warp.warp_and_fuse(flow, weight, warp.channels_last(h1), warp.channels_last(h2),
                                  warp.channels_last(ref), index)
    copies = _kernel(flow[index], weight[index], h1[index], h2[index], ref[index])
    for a, b in zip(by_index, copies):
        assert np.array_equal(a, b)


def test_bad_index_is_refused():
    flow, weight, h1, h2, ref = _inputs(2)
    with pytest.raises(ValueError, match="ref_index"):
        warp.warp_and_fuse(flow, weight, warp.channels_last(h1), warp.channels_last(h2), warp.channels_last(ref),
                           np.array([0, 2]))
