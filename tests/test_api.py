"""The public API: what ``import iplap`` gives, and the README's Python section uses only that."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import iplap

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ("Pipeline", "PipelineConfig", "BackendConfig", "Avatar", "Bundle", "StreamSession", "Frame", "RenderReport",
          "Speech", "load_speech", "IplapError", "MediaError", "NoFaceError", "BundleError", "AvatarError", "CheckpointError", "BackendError")


@pytest.mark.parametrize("name", PUBLIC)
def test_top_level_names_are_documented(name):
    obj = getattr(iplap, name)
    assert obj.__doc__ and len(obj.__doc__.strip()) > 20, name
    assert name in iplap.__all__ and name in dir(iplap)


def test_errors_are_one_family():
    for name in PUBLIC:
        obj = getattr(iplap, name)
        if name.endswith("Error"):
            assert issubclass(obj, iplap.IplapError)
    with pytest.raises(AttributeError):
        iplap.NotAThing  # noqa: B018


def test_import_iplap_is_light():
    """The names load on first use: importing iplap pulls in no inference library."""
    code = ("import sys, iplap; heavy = [m for m in ('numba', 'cv2', 'onnxruntime', 'openvino', 'av', 'torch') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_keep_their_setting_through_pickling():
    import pickle

    error = iplap.NoFaceError("no face in frames 1-2", setting="on_missing_face", suggestion="pass")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is iplap.NoFaceError and again.setting == "on_missing_face" and str(again) == str(error)


def test_readme_python_section_uses_only_the_public_names():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):readme.index("## How it works")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "import iplap" in code
    assert "from iplap" not in code and "iplap.runtime" not in code
    used = set(re.findall(r"\biplap\.(\w+)", code))
    assert used and used <= set(iplap.__all__), used - set(iplap.__all__)
