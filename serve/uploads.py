"""Multipart uploads streamed to disk, a block at a time, never held whole in memory."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .errors import ApiError

BLOCK = 1 << 16
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


@dataclass
class Upload:
    """A file a client sent: where it lies now (a temporary name of ours), its size and hash,
    and the name the client gave it (for display only: it never names a path here)."""

    path: Path
    size: int
    sha256: str
    filename: str

    @property
    def suffix(self) -> str:
        suffix = Path(self.filename).suffix.lower()
        return suffix if _SAFE_SUFFIX.match(suffix) else ""

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@dataclass
class Form:
    """A multipart form: its files (streamed to disk) and its short text fields."""

    files: dict[str, Upload] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        for upload in self.files.values():
            upload.discard()


async def read_form(request: web.Request, folder: Path, file_fields: tuple[str, ...], text_fields: tuple[str, ...],
                    max_bytes: int) -> Form:
    """Read a multipart request: the named file fields into ``folder``, the text fields into memory.

    Unknown fields, a file over ``max_bytes`` (413) and anything that is not multipart (400)
    are refused; on any error nothing stays on disk.
    """
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, f"expected a multipart/form-data upload (fields: {', '.join(file_fields + text_fields)})")
    form = Form()
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            name = part.name or ""
            if name in file_fields and name not in form.files:
                form.files[name] = await _save(part, folder, max_bytes)
            elif name in text_fields and name not in form.fields:
                value = await part.read(decode=True)
                if len(value) > 1024:
                    raise ApiError(400, f"field {name!r} is too long")
                form.fields[name] = value.decode("utf-8", errors="replace").strip()
            else:
                raise ApiError(400, f"unexpected form field {name!r} (fields: {', '.join(file_fields + text_fields)})")
    except BaseException:
        form.discard()
        raise
    return form


async def _save(part, folder: Path, max_bytes: int) -> Upload:
    fd, name = tempfile.mkstemp(prefix=".upload-", dir=folder)  # private to the server's user
    os.close(fd)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as out:
            while True:
                block = await part.read_chunk(BLOCK)
                if not block:
                    break
                size += len(block)
                if size > max_bytes:
                    raise ApiError(413, f"the upload is larger than the limit of {max_bytes / 2**20:g} MB")
                digest.update(block)
                out.write(block)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(422, f"the uploaded file {part.filename or part.name!r} is empty")
    return Upload(path, size, digest.hexdigest(), Path(part.filename or "upload").name)
