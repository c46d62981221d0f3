"""Shared fixtures. Test data lives in tests/data (copied from the reference goldens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _iplap_logging_as_a_library():
    """A test that runs the CLI in this process (``iplap.cli.main``) configures the ``iplap``
    logger as a command-line run does (its own handler and level, -q included); the next test
    sees it as a library's again."""
    yield
    import logging

    logger = logging.getLogger("iplap")
    logger.handlers.clear()
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"golden_{name}.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="session")
def standin_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """The seed-0 stand-in checkpoints, written once per test session (needs torch)."""
    pytest.importorskip("torch")
    from iplap.models import write_standin_checkpoints

    return write_standin_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def bundle_dir(standin_checkpoints, tmp_path_factory) -> Path:
    """An fp32 bundle with face models, exported once per session from the stand-in
    checkpoints (about a minute). The face models come from the mediapipe wheel, which is
    downloaded once into ~/.cache/iplap (or taken from IPLAP_MEDIAPIPE_WHEEL)."""
    from iplap.export.bundle_writer import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundle") / "fp32"
    config = ExportConfig(standin_checkpoints["landmark_generator"], standin_checkpoints["renderer"], out)
    return export_bundle(config).root


def light_copy(src: Path, dst: Path) -> Path:
    """Copy a bundle by hard links (fast); replace files, never write into them."""
    import os
    import shutil

    shutil.copytree(src, dst, copy_function=os.link)
    return dst


@pytest.fixture(scope="session")
def server(bundle_dir, tmp_path_factory):
    """A real ``iplap serve`` with the stand-in bundle on a loopback port: N=2, uploads up to
    5 MB, 3 frames held for a slow live client, and pings 10 minutes apart (the slow-client
    test's client reads nothing, so it cannot answer a ping, while the render may take longer
    than the default 30 s on a loaded machine)."""
    pytest.importorskip("aiohttp", reason="the serve tests need the serve extra (aiohttp)")
    from serveutil import start_server

    srv = start_server(bundle_dir, tmp_path_factory.mktemp("avatars"), "--max-upload-mb", "5",
                       "--live-pending-frames", "3", "--live-heartbeat-s", "600")
    yield srv
    srv.stop()


# -- batch: the hung-worker hook and one Ray cluster per run ---------------------------------------

#: The folder whose ``sitecustomize.py`` makes a batch worker given a file named by
#: ``IPLAP_TEST_HANG_FILE`` hang (see it): on ``PYTHONPATH`` of the batch processes that need it.
HANG_HOOK = Path(__file__).resolve().parent / "hanghook"
HANG_VARIABLE = "IPLAP_TEST_HANG_FILE"
#: The file name that makes the shared Ray cluster's workers hang.
HANG = "hang.png"


def hook_env(hang: str | None = None) -> dict[str, str]:
    """This process's environment with the hang hook on ``PYTHONPATH``: a batch worker given a
    file named ``hang`` hangs (none without it)."""
    import os

    env = dict(os.environ)
    env.pop(HANG_VARIABLE, None)
    env["PYTHONPATH"] = os.pathsep.join([str(HANG_HOOK), *filter(None, [env.get("PYTHONPATH")])])
    if hang:
        env[HANG_VARIABLE] = hang
    return env


class RayCluster:
    """The run's loopback Ray cluster: its address and authentication token."""

    def __init__(self, address: str, token: str):
        self.address, self.token = address, token


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One one-node Ray cluster on loopback for the whole run (starting and stopping one costs
    about 10 s): one CPU (fewer than this machine's cores, as the tests of the largest node
    need), token authentication on (as the tests of a refused client need), and the hang hook
    in its workers' environment for files named ``hang.png``. While it is up this process's
    environment carries the token (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN``), so every
    client started from here, and ``ray.init`` here, can use it; a test of a client without
    the token takes them out of that client's environment."""
    import os
    import secrets
    import sys

    from iplap.batch.ray_cluster import auth_env, start_loopback_cluster, stop_loopback_cluster

    token = secrets.token_hex(32)
    saved = {name: os.environ.get(name) for name in auth_env(token)}
    imported = "ray" in sys.modules
    os.environ.update(auth_env(token))  # before `import ray`: Ray reads its authentication mode then
    address = None
    try:
        pytest.importorskip("ray", reason="the Ray tests need the ray extra (pip install 'iplap[ray]')")
        if imported:  # imported before: make it read the mode and token again
            from ray._private.authentication_test_utils import reset_auth_token_state

            reset_auth_token_state()
        address = start_loopback_cluster(tmp_path_factory.mktemp("ray"), num_cpus=1, object_store_bytes=600_000_000,
                                         token=token, env=hook_env(HANG))
        yield RayCluster(address, token)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if address is not None:
            stop_loopback_cluster()
