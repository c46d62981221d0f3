"""``iplap serve``: a local HTTP + WebSocket service and a web page, for kiosk and desktop front ends.

Built on the public API (``import iplap``) and aiohttp (the ``serve`` extra). Faces are
prepared once and kept by content hash (:mod:`.store`), render jobs queue in front of a
fixed number of render slots (:mod:`.jobs`), live sessions stream frames over a WebSocket
(:mod:`.live`), and the routes, errors and the page are in :mod:`.app`.
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
