"""Shared fixtures. Test data lives in tests/data (copied from the reference goldens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"


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
