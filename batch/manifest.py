"""The batch manifest: a CSV (with a header line) or JSON Lines file, one job a line.

Fields: ``face`` and ``audio`` (paths, relative ones resolved against the manifest's
folder), optional ``out`` (a file name inside the output folder; default: the audio's stem
+ ``.mp4``), and per-job options ``refs``, ``crf``, ``backend`` (defaults from the command
line). The whole manifest is checked before anything runs: every problem is reported with
its line number, and nothing starts while there is one.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..limits import (BACKENDS, DEFAULT_CRF, DEFAULT_REFS, MAX_CRF, MAX_KEYFRAME_EVERY, MAX_REFS, MIN_CRF, MIN_REFS,
                      check_backend, check_crf, check_keyframe_every, check_refs)
from ..errors import IplapError

FIELDS = ("face", "audio", "out", "refs", "crf", "backend", "keyframe_every")
#: The H.264 quality (crf) range that x264 accepts.
_NAME = re.compile(r"^[^/\\\x00]+$")


class ManifestError(IplapError):
    """The manifest has problems (each named with its line); nothing was run."""


@dataclass(frozen=True)
class JobOptions:
    """How one job renders (the defaults come from the command line, whose flags are made
    from these fields: ``metadata["help"]``)."""

    refs: int = field(default=DEFAULT_REFS, metadata={
        "help": f"number of reference images N ({MIN_REFS}-{MAX_REFS}), where a job does not say", "metavar": "N"})
    crf: int = field(default=DEFAULT_CRF, metadata={
        "help": f"H.264 quality ({MIN_CRF}-{MAX_CRF}), where a job does not say", "metavar": "Q"})
    backend: str = field(default=BACKENDS[0], metadata={
        "help": "inference backend, where a job does not say", "choices": BACKENDS})
    keyframe_every: int = field(default=1, metadata={
        "help": f"draw every K-th frame with the renderer, the frames between made from the keyframes "
                f"(1-{MAX_KEYFRAME_EVERY}; 1, the default: every frame), where a job does not say", "metavar": "K"})

    def __post_init__(self):
        check_refs(self.refs)
        check_crf(self.crf)
        check_keyframe_every(self.keyframe_every)
        object.__setattr__(self, "backend", check_backend(self.backend).value)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BatchJob:
    line: int  # in the manifest (the header is line 1 of a CSV)
    face: Path
    audio: Path
    out: str  # file name inside the output folder
    options: JobOptions


def read_manifest(path: Path, defaults: JobOptions) -> list[BatchJob]:
    """Every job of the manifest, checked; :class:`ManifestError` lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the manifest {path}: {exc}") from None
    rows = _json_lines(text) if path.suffix.lower() in (".jsonl", ".ndjson") else _csv(text)
    base = path.resolve().parent
    problems: list[str] = []
    jobs: list[BatchJob] = []
    for line, row in rows:
        if isinstance(row, str):
            problems.append(f"line {line}: {row}")
            continue
        job, errors = _job(line, row, base, defaults)
        problems += [f"line {line}: {e}" for e in errors]
        if job is not None:
            jobs.append(job)
    seen: dict[str, int] = {}
    for job in jobs:
        key = job.out.lower()  # one file on case-insensitive file systems too
        if key in seen:
            problems.append(f"line {job.line}: output {job.out} is also the output of line {seen[key]}")
        else:
            seen[key] = job.line
    if not rows:
        problems.append("no jobs in it")
    if problems:
        shown = problems[:20] + ([f"and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise ManifestError(f"{path.name}: " + "; ".join(shown))
    return jobs


def _json_lines(text: str) -> list[tuple[int, dict | str]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            rows.append((number, f"not JSON ({exc.msg})"))
            continue
        rows.append((number, row if isinstance(row, dict) else "not a JSON object"))
    return rows


def _csv(text: str) -> list[tuple[int, dict | str]]:
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        return []
    reader = csv.reader(lines)
    header = [h.strip().lower() for h in next(reader)]
    unknown = [h for h in header if h not in FIELDS]
    if unknown or "face" not in header or "audio" not in header:
        detail = f"unknown column {unknown[0]!r}" if unknown else "the header must name the columns face and audio"
        return [(1, f"{detail} (columns: {', '.join(FIELDS)})")]
    rows = []
    for number, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(header):
            rows.append((number, f"{len(values)} values for {len(header)} columns"))
            continue
        rows.append((number, {k: v.strip() for k, v in zip(header, values) if v.strip() != ""}))
    return rows


def _job(line: int, row: dict, base: Path, defaults: JobOptions) -> tuple[BatchJob | None, list[str]]:
    errors = []
    unknown = [k for k in row if k not in FIELDS]
    if unknown:
        errors.append(f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
    files = {}
    for name in ("face", "audio"):
        value = row.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"no {name}")
            continue
        file = Path(value).expanduser()
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            errors.append(f"{name} file not found: {value}")
        files[name] = file
    options, option_errors = _options(row, defaults)
    errors += option_errors
    out = row.get("out")
    if out is None and "audio" in files:
        out = files["audio"].stem + ".mp4"
    if out is not None:
        out = str(out).strip()
        if not _NAME.match(out) or out in (".", "..") or out.startswith(".") or Path(out).name != out:
            errors.append(f"out must be a plain file name inside the output folder, not {out!r}")
        elif not out.lower().endswith(".mp4"):
            errors.append(f"out must end in .mp4, not {out!r}")
    if errors:
        return None, errors
    return BatchJob(line, files["face"].resolve(), files["audio"].resolve(), out, options), []


def _options(row: dict, defaults: JobOptions) -> tuple[JobOptions, list[str]]:
    """The job's options (its own where it gives them), and what is wrong with them, in the
    words of the checks every front end uses (:mod:`iplap.limits`)."""
    errors, changes = [], {}
    for name, check in (("refs", check_refs), ("crf", check_crf), ("keyframe_every", check_keyframe_every)):
        if name in row:
            try:
                changes[name] = check(_whole(row[name]))
            except IplapError as exc:
                errors.append(exc.message)
    if "backend" in row:
        try:
            changes["backend"] = check_backend(row["backend"]).value
        except IplapError as exc:
            errors.append(exc.message)
    return (replace(defaults, **changes) if not errors else defaults), errors


def _whole(value):
    """A manifest's number as an int where it is one ("5", 5), else the value as it was given."""
    try:
        return int(str(value).strip())
    except ValueError:
        return value
