"""iplap batch --ray against addresses it cannot use: nothing listening there (a wrong port
fails at once, not after Ray's quarter hour of retries), and a real loopback cluster with
token authentication that the client has no token for, then has."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from iplap import IplapError
from iplap.batch.ray_runner import _refused_token, cluster_endpoint
from test_batch import _records
from test_batch_faults import _error_line


@pytest.mark.parametrize("address,endpoint", [
    ("127.0.0.1:6379", ("127.0.0.1", 6379)), ("ray://head.example:10001", ("head.example", 10001)),
    ("[::1]:6379", ("::1", 6379)), ("auto", None), ("head", None), ("head:port", None), (None, None),
])
def test_the_cluster_endpoint_is_read_from_explicit_addresses_only(address, endpoint):
    assert cluster_endpoint(address) == endpoint


def test_a_port_out_of_range_is_refused_not_wrapped():
    with pytest.raises(IplapError, match="99999 is not a port"):
        cluster_endpoint("127.0.0.1:99999")


def test_a_refused_token_is_found_among_the_causes_of_rays_connection_error():
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: ... RPC error: InvalidAuthToken: "
                               "Authentication token is missing or incorrect")
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as exc:
        assert _refused_token(exc)
    assert not _refused_token(ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"))


@pytest.fixture(scope="module")
def wall_job(tmp_path_factory) -> Path:
    """A manifest of one job whose face has no face (its task fails fast, but on the cluster)."""
    folder = tmp_path_factory.mktemp("ray_connect")
    cv2.imwrite(str(folder / "wall.png"), np.full((96, 96, 3), 90, np.uint8))
    soundfile.write(folder / "speech.wav", np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    (folder / "jobs.csv").write_text(f"face,audio,out\n{folder / 'wall.png'},{folder / 'speech.wav'},wall.mp4\n")
    return folder / "jobs.csv"


def _batch(manifest: Path, bundle_dir: Path, out: Path, address: str, env: dict[str, str]):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | env
    return subprocess.run([sys.executable, "-m", "iplap", "batch", str(manifest), "--bundle", str(bundle_dir), "--out",
                           str(out), "--ray", address, "--threads", "1", "--quiet"],
                          capture_output=True, text=True, timeout=240, env=env)


def test_nothing_at_the_address_is_a_one_line_error(wall_job, bundle_dir, tmp_path):
    pytest.importorskip("ray", reason="needs the ray extra")
    from iplap.batch.ray_cluster import free_port

    address = f"127.0.0.1:{free_port()}"
    result = _batch(wall_job, bundle_dir, tmp_path / "out", address, {})
    assert result.returncode == 2, result.stderr
    line = _error_line(result.stderr)
    assert f"nothing answers at '{address}'" in line and "ray start --head" in line, line


@pytest.fixture
def token_ray(ray_cluster) -> tuple[str, str]:
    """The run's loopback cluster (conftest.ray_cluster), token authentication on: (address, token)."""
    return ray_cluster.address, ray_cluster.token


def test_a_cluster_with_token_authentication_refuses_a_client_without_the_token_in_one_line(
        wall_job, bundle_dir, token_ray, tmp_path):
    address, _ = token_ray
    # Ray tries 20 times, a second apart, before it gives up; 2 tries show the same refusal.
    result = _batch(wall_job, bundle_dir, tmp_path / "out", address, {"RAY_NUM_REDIS_GET_RETRIES": "2"})
    assert result.returncode == 2, result.stderr
    line = _error_line(result.stderr)
    assert f"the Ray cluster at '{address}' refused this client's authentication token" in line, line
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line, line
    assert not (tmp_path / "out" / "wall.mp4").exists()


def test_with_the_token_the_same_client_runs_its_job_on_that_cluster(wall_job, bundle_dir, token_ray, tmp_path):
    from iplap.batch.ray_cluster import auth_env

    address, token = token_ray
    out = tmp_path / "out"
    result = _batch(wall_job, bundle_dir, out, address, auth_env(token))
    assert result.returncode == 2, result.stderr  # the job ran, and failed as it should: no face in it
    assert _records(out)[-1]["error"] == "no face found in wall.png"
