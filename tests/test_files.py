"""Outputs appear whole or not at all, with the umask's permissions, without process-wide changes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from iplap.runtime import files
from iplap.runtime.bundle import FORMAT_VERSION, MANIFEST, Bundle, write_bundle_atomically

ROOT = Path(__file__).resolve().parents[1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_temporary_files_and_folders_get_the_umask_mode_without_setting_it(tmp_path, monkeypatch):
    mask = _umask()

    def forbidden(_):
        raise AssertionError("os.umask changes process-wide state; other threads may be creating files")

    monkeypatch.setattr(os, "umask", forbidden)
    path = files.create_temp_file(tmp_path, ".out.", ".mp4")
    folder = files.create_temp_dir(tmp_path, ".bundle.")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert folder.stat().st_mode & 0o777 == 0o777 & ~mask
    files.move_into_place(path, tmp_path / "out.mp4")
    assert (tmp_path / "out.mp4").stat().st_mode & 0o777 == 0o666 & ~mask


def _fill(tag):
    def fill(work: Path) -> dict:
        (work / "weights.bin").write_text(tag)
        return {"format": "iplap-bundle", "format_version": FORMAT_VERSION, "tag": tag}
    return fill


@pytest.mark.parametrize("swap", ["exchange", "rename_aside"])
def test_overwriting_a_bundle_swaps_it_whole(tmp_path, monkeypatch, swap):
    """The old bundle is swapped out, never removed before the new one is in; where the system
    cannot swap atomically, the old one is renamed aside first (and removed after)."""
    if swap == "rename_aside":
        monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    out = tmp_path / "bundle"
    write_bundle_atomically(out, _fill("old"))
    write_bundle_atomically(out, _fill("new"))
    assert json.loads((out / MANIFEST).read_text())["tag"] == "new"
    assert Bundle.load(out).manifest["tag"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no leftovers


def test_a_crash_after_the_swap_leaves_the_new_bundle_whole(tmp_path, monkeypatch):
    """A crash while removing the old contents (after the swap) cannot lose the bundle."""
    out = tmp_path / "bundle"
    write_bundle_atomically(out, _fill("old"))

    def crash(path, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        files.replace_dir(_prepared(tmp_path, "new"), out)
    assert (out / "weights.bin").read_text() == "new"


def _prepared(tmp_path, tag):
    folder = files.create_temp_dir(tmp_path, ".new.")
    (folder / "weights.bin").write_text(tag)
    return folder


def test_a_failed_fill_keeps_the_old_bundle(tmp_path):
    out = tmp_path / "bundle"
    write_bundle_atomically(out, _fill("old"))

    def broken(work):
        (work / "half.bin").write_text("x")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        write_bundle_atomically(out, broken)
    assert Bundle.load(out).manifest["tag"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_runtime_errors_name_no_command_line_flags():
    """Library errors name settings (refs, on_missing_face), not the CLI's flags (--refs). The
    runtime's subcommands (``runtime/cli.py``) are the CLI's own: their errors name its flags."""
    offenders = []
    pattern = re.compile(r"(?:Error|Exception)\((?:[^()]|\([^()]*\))*?['\"][^'\"]*\s--[a-z]")
    for path in sorted(p for p in (ROOT / "runtime").rglob("*.py") if p.name != "cli.py"):
        text = path.read_text()
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)[:80]}" for m in pattern.finditer(text)]
    assert offenders == []
