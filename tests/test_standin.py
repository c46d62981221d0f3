"""The project's stand-in checkpoints follow the reference recipe."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from iplap.models.standin import checkpoint_specs, standin_state_dict

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
#: Per tensor: sha256 prefix, dtype and shape of the reference script's seed-0 state dicts
#: (../shared/reference/make_checkpoints.py), so that CI checks bit-identity without it.
HASHES = Path(__file__).resolve().parent / "data" / "standin_hashes.json"


def _fingerprints(state: dict) -> dict[str, str]:
    return {k: f"{hashlib.sha256(v.tobytes()).hexdigest()[:16]}:{v.dtype}:{'x'.join(map(str, v.shape))}"
            for k, v in state.items()}


@pytest.mark.parametrize("model", ["landmark_generator", "renderer"])
def test_bit_identical_to_the_recorded_reference_hashes(model):
    """Runs everywhere (CI has no ../shared): our seed-0 tensors have the reference's hashes."""
    expected = json.loads(HASHES.read_text())[model]
    ours = _fingerprints(standin_state_dict(model))
    assert ours.keys() == expected.keys()
    assert [k for k in ours if ours[k] != expected[k]] == []


@pytest.mark.parametrize("model", ["landmark_generator", "renderer"])
def test_standin_has_every_official_key_and_shape(model):
    state = standin_state_dict(model)
    for key, shape, dtype in checkpoint_specs()[model]:
        assert state[key].dtype == np.dtype(dtype), key
        assert state[key].shape == shape, key


def test_standin_is_deterministic_and_seeded():
    a, b = standin_state_dict("landmark_generator", 0), standin_state_dict("landmark_generator", 0)
    c = standin_state_dict("landmark_generator", 1)
    key = "mel_encoder.0.conv_block.0.weight"
    assert np.array_equal(a[key], b[key]) and not np.array_equal(a[key], c[key])
    assert np.all(a["fusion_transformer.modality.weight"][0] == 0)  # padding row


@pytest.mark.skipif(not (REFERENCE / "make_checkpoints.py").exists(), reason="../shared/reference not present")
@pytest.mark.parametrize("model", ["landmark_generator", "renderer"])
def test_bit_identical_to_reference_script(model, monkeypatch):
    monkeypatch.syspath_prepend(str(REFERENCE))
    import make_checkpoints

    ours, theirs = standin_state_dict(model), make_checkpoints.make_state_dict(model, 0)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and ours[key].tobytes() == theirs[key].tobytes(), key
    assert _fingerprints(theirs) == json.loads(HASHES.read_text())[model]  # the recorded hashes are current
    sys.modules.pop("make_checkpoints", None)
