"""The Numba warp-and-fuse kernel against torch's grid_sample and the original fusion."""

from __future__ import annotations

import numpy as np
import pytest

from iplap.runtime import warp

# About ten times the max error measured (1.2e-7 against numpy, 4.9e-7 against torch).
NUMPY_TOL, TORCH_TOL = 1.5e-6, 5e-6

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
        assert np.abs(ours - ref).max() < NUMPY_TOL


def test_kernel_matches_torch_original():
    torch = pytest.importorskip("torch")
    from iplap.models.warp import fuse_warped

    inputs = _inputs(5, size=32, c1=32, c2=16, flow_scale=10.0)  # large flows: many samples fall outside
    with torch.no_grad():
        expected = fuse_warped(*(torch.from_numpy(x)[None] for x in (inputs[2], inputs[3], inputs[4], inputs[0],
                                                                       inputs[1])))
    for ours, ref in zip(_kernel(*inputs), expected):
        assert ours.shape == ref.shape
        assert np.abs(ours - ref.numpy()).max() < TORCH_TOL


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


# -- threads --------------------------------------------------------------------------------------

def test_threading_layer_allows_concurrent_callers():
    """Here the layer is tbb (openvino's oneTBB) or omp: both take concurrent launches."""
    assert warp.threading_layer() in ("tbb", "omp")


def test_threads_are_set_on_the_calling_thread():
    """Numba's thread count is per thread: a launch on another thread still uses ``threads``."""
    import threading

    import numba

    seen = []

    def worker():
        warp.warp_and_fuse(*_inputs(2)[:2], *(warp.channels_last(x) for x in _inputs(2)[2:]), threads=1)
        seen.append(numba.get_num_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [1]


_CONCURRENT = """
import sys, threading
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_warp import _inputs, _kernel
from iplap.runtime import warp
inputs = [_inputs(4, size=64, c1=8, c2=8, seed=k) for k in range(6)]
expected = [_kernel(*x) for x in inputs]
results = [None] * 6
def worker(k):
    for _ in range(20):
        results[k] = _kernel(*inputs[k])
threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
[t.start() for t in threads]
[t.join() for t in threads]
assert all(all(np.array_equal(a, b) for a, b in zip(r, e)) for r, e in zip(results, expected))
print(warp.threading_layer())
"""


@pytest.mark.parametrize("layer", ["default", "workqueue"])
def test_concurrent_launches_give_sequential_results(layer):
    """Six threads launching the kernel at once get the sequential results, on the layer iplap
    chooses and on workqueue (where Numba aborts on concurrent launches unless they are
    serialized, as iplap then does)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    if layer != "default":
        env["NUMBA_THREADING_LAYER"] = layer
    out = subprocess.run([sys.executable, "-c", _CONCURRENT, str(Path(__file__).parent)], capture_output=True,
                         text=True, env=env, check=False, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-1] == (layer if layer != "default" else warp.threading_layer())
