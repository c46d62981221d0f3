"""Multipart uploads streamed to disk, a block at a time, never held whole in memory.

Every read waits at most ``idle_s`` for the client's next bytes (a client that stops sending
mid-upload is answered 408 and its partial file removed); text fields are read a block at a
time up to their limit, never whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from ..errors import first_line
from .errors import ApiError

BLOCK = 1 << 16
#: The longest text field accepted (ids and numbers).
MAX_FIELD_BYTES = 1024
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
                    max_bytes: int, idle_s: float) -> Form:
    """Read a multipart request: the named file fields into ``folder``, the text fields into memory.

    Unknown fields, a file over ``max_bytes`` (413) and anything that is not multipart (400)
    are refused; on any error nothing stays on disk.
    """
    if not request.content_type.startswith("multipart/form-data"):
        raise ApiError(400, f"expected a multipart/form-data upload (fields: {', '.join(file_fields + text_fields)})")
    form = Form()
    try:
        reader = await request.multipart()
        while True:
            part = await _within(reader.next(), idle_s)
            if part is None:
                break
            name = part.name or ""
            if name in file_fields and name not in form.files:
                form.files[name] = await _save(part, folder, max_bytes, idle_s)
            elif name in text_fields and name not in form.fields:
                form.fields[name] = await _text(part, name, idle_s)
            else:
                raise ApiError(400, f"unexpected form field {name[:40]!r} (fields: "
                                    f"{', '.join(file_fields + text_fields)})")
    except ValueError as exc:  # aiohttp's word for a malformed multipart body
        form.discard()
        raise ApiError(400, f"a malformed multipart body ({first_line(exc)[:80]})") from None
    except BaseException:
        form.discard()
        raise
    return form


async def _within(awaitable, idle_s: float):
    """``awaitable``, or a 408 when the client sends nothing for ``idle_s``."""
    try:
        return await asyncio.wait_for(awaitable, idle_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the upload stalled: nothing came for {idle_s:g} s") from None


async def _text(part, name: str, idle_s: float) -> str:
    value = b""
    while block := await _within(part.read_chunk(MAX_FIELD_BYTES // 4), idle_s):  # small: no wait for more
        value += block
        if len(value) > MAX_FIELD_BYTES:
            raise ApiError(400, f"field {name!r} is longer than {MAX_FIELD_BYTES} bytes")
    return part.decode(value).decode("utf-8", errors="replace").strip()


async def _save(part, folder: Path, max_bytes: int, idle_s: float) -> Upload:
    fd, name = tempfile.mkstemp(prefix=".upload-", dir=folder)  # private to the server's user
    os.close(fd)
    path = Path(name)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "wb") as out:
            while True:
                block = await _within(part.read_chunk(BLOCK), idle_s)
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
