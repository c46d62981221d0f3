"""The runtime's Numba kernels: where their compiled code is cached, one rule for all of them.

Numba caches a compiled kernel beside its source (``__pycache__``) or in the user's cache
folder, and compiling the warp kernel takes seconds (tens on a busy small machine), so the
cache matters. A read-only install with a read-only home (a kiosk's read-only root, a
service user without a home) has neither, and Numba then refuses to define the kernel at
all ("cannot cache function: no locator available"). :func:`njit` chooses once, at the
first kernel, the first place that works:

1. ``NUMBA_CACHE_DIR`` where the user set it (Numba's own setting);
2. beside the sources, where the install is writable (Numba's default);
3. ``numba`` in iplap's cache folder (:func:`iplap.cache.cache_dir`);
4. a folder of this user's in the system's temporary folder;
5. nowhere: each process compiles the kernels again, and one log line says so.

``iplap warmup`` compiles every kernel into that cache once (a kiosk image's build step):
:mod:`.kernels` lists them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import numba

from ..cache import cache_dir

log = logging.getLogger(__name__)

_SOURCES = Path(__file__).resolve().parent
_LOCK = threading.Lock()
_choice: tuple[bool, Path | None] | None = None  # (cache at all, the folder: None = beside the sources)


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _choose() -> tuple[bool, Path | None]:
    if numba.config.CACHE_DIR:  # NUMBA_CACHE_DIR: the user's choice, as Numba honours it
        return True, Path(numba.config.CACHE_DIR)
    if _writable(_SOURCES / "__pycache__") and _writable(_SOURCES / "face" / "__pycache__"):
        return True, None
    candidates = []
    try:
        candidates.append(cache_dir("numba"))
    except RuntimeError:  # no home folder to find
        pass
    user = os.getuid() if hasattr(os, "getuid") else 0
    temporary = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")] + ["/tmp", "/var/tmp"]
    candidates += [Path(folder) / f"iplap-numba-{user}" for folder in dict.fromkeys(t for t in temporary if t)]
    for folder in candidates:
        if _writable(folder):
            numba.config.CACHE_DIR = str(folder)
            log.debug("Numba's cache: %s (the install is read-only)", folder)
            return True, folder
    log.warning("no writable folder for Numba's cache (the install, %s and the temporary folder are read-only): "
                "iplap's kernels are compiled at every start; set NUMBA_CACHE_DIR to a writable folder",
                candidates[0])
    return False, None


def caching() -> tuple[bool, Path | None]:
    """Whether kernels are cached, and where (None: beside the sources). Chosen once."""
    global _choice
    with _LOCK:
        if _choice is None:
            _choice = _choose()
        return _choice


def njit(**options):
    """``numba.njit`` with the runtime's cache rule (``cache=`` is decided here)."""
    cached, _ = caching()
    return numba.njit(cache=cached, **options)


def cache_location() -> str:
    """Where compiled kernels go, in words (for messages)."""
    cached, folder = caching()
    if not cached:
        return "not cached"
    return str(folder) if folder is not None else str(_SOURCES / "__pycache__")


__all__ = ["cache_location", "caching", "njit"]
