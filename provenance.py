"""What a result was made with: package versions and the machine, said once for export,
calibration and the benchmarks (each records them beside what it writes)."""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Iterable
from importlib import metadata as _metadata
from pathlib import Path

#: The CPU features that change how fast (or, for bf16/int8 kernels, how exactly) the graphs run.
INSTRUCTION_SETS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
                    "amx_bf16", "amx_int8", "neon", "asimd")


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read a block at a time (how bundles, avatars and batch records name content)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions(packages: Iterable[str], missing: str | None = "not installed") -> dict[str, str | None]:
    """The installed version of each package (``missing`` where it is not installed)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = _metadata.version(package)
        except _metadata.PackageNotFoundError:
            versions[package] = missing
    return versions


def tool_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """iplap's version and each of ``packages``': what a bundle's manifest records as its tools."""
    from . import __version__

    return {"iplap": __version__, **package_versions(packages)}


def cpu_info() -> dict:
    """The CPU's model name and the instruction sets of :data:`INSTRUCTION_SETS` it has."""
    info: dict = {}
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and "cpu" not in info:
                info["cpu"] = line.split(":", 1)[1].strip()
            if (line.startswith("flags") or line.startswith("Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info.setdefault("cpu", platform.processor() or platform.machine())
    info["instruction_sets"] = [f for f in INSTRUCTION_SETS if f in flags]
    return info


def machine_info(packages: Iterable[str] = ()) -> dict:
    """The machine a measurement ran on: platform, Python, cores, CPU and instruction sets, and
    the versions of ``packages`` (None where not installed)."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "python": platform.python_version(),
            "cores": os.cpu_count(), **cpu_info()}
    if packages:
        info["packages"] = package_versions(packages, missing=None)
    return info


__all__ = ["INSTRUCTION_SETS", "sha256_file", "cpu_info", "machine_info", "package_versions", "tool_versions"]
