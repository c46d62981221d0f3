"""The runtime's dependency boundary: no torch, onnx or nncf."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("torch", "onnx", "onnxscript", "nncf")

_PROBE = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # any import of it raises ImportError
import iplap.runtime
import pkgutil, importlib
for mod in pkgutil.walk_packages(iplap.runtime.__path__, "iplap.runtime."):
    importlib.import_module(mod.name)
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r} and sys.modules[m] is not None))
print("iplap", sorted(m for m in sys.modules if m.startswith({project!r})))
"""
#: iplap's own packages the runtime must not import: they need torch/onnx/nncf, or build on the runtime.
PROJECT_BLOCKED = ("iplap.models", "iplap.export", "iplap.calibration", "iplap.benchmarks")


def test_runtime_imports_with_torch_onnx_nncf_blocked():
    """Every runtime module imports with torch, onnx and nncf blocked, and none of them pulls in
    iplap.models, iplap.export, iplap.calibration or iplap.benchmarks."""
    out = subprocess.run([sys.executable, "-c", _PROBE.format(blocked=BLOCKED, project=PROJECT_BLOCKED)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "ok []"
    assert lines[1] == "iplap []", lines[1]


def test_runtime_dependencies_exclude_export_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
             for dep in project["dependencies"]}
    assert names.isdisjoint(BLOCKED)
    assert "torch==2.13.0" in project["optional-dependencies"]["export"]


def test_runtime_sources_do_not_import_export_packages():
    offenders = []
    for path in (ROOT / "runtime").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in BLOCKED:
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert offenders == []


def test_installed_package_has_every_data_file():
    """A non-editable install (as in CI) must carry the data files the code reads: every
    non-Python file in the package's folders is installed beside the modules."""
    import iplap

    installed = Path(iplap.__file__).resolve().parent
    folders = ("runtime", "export", "calibration", "models", "benchmarks", "samples", "serve", "batch")
    data = [p.relative_to(ROOT) for folder in folders for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert data  # the goldens' inputs, the checkpoint key list, the samples
    missing = [str(rel) for rel in data if not (installed / rel).is_file()]
    assert not missing, f"not installed (add them to package-data in pyproject.toml): {missing}"
