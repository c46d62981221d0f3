"""Where iplap keeps what it makes once and reuses: one rule for the user's cache folder.

``IPLAP_CACHE`` if set, else ``$XDG_CACHE_HOME/iplap``, else ``~/.cache/iplap``. Everything
that iplap caches (the demo's stand-in bundle, the mediapipe wheel the face models come
from, the service's prepared faces) lives in a folder of its own below it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable that moves iplap's whole cache folder.
CACHE_ENV = "IPLAP_CACHE"


def cache_dir(*parts: str) -> Path:
    """The user's iplap cache folder, or a folder below it (``cache_dir("avatars")``). Nothing
    is created here: whoever writes makes the folder."""
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "iplap"
    return root.joinpath(*parts)


__all__ = ["CACHE_ENV", "cache_dir"]
