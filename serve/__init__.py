"""``iplap serve``: a local HTTP + WebSocket service and a web page, for kiosk and desktop front ends.

Built on the public API (``import iplap``) and aiohttp (the ``serve`` extra). Where things live:

* :mod:`.app`: the routes (thin: parse, call, answer), the application and the server;
* :mod:`.config`: :class:`ServeConfig`, every setting with its default and help (the flags
  of ``iplap serve`` are made from it, :mod:`.cli`);
* :mod:`.guard`: who may call (token, Host, Origin); :mod:`.errors`: one-line JSON answers;
* :mod:`.slots`: the render slots and the one bounded queue in front of them;
* :mod:`.jobs`: render jobs; :mod:`.store`: prepared faces, kept by content hash;
* :mod:`.uploads`: multipart streamed to disk; :mod:`.media_checks`: caps on faces and speech;
* the live WebSocket: :mod:`.protocol` (its messages), :mod:`.live_audio` (the bounded
  inbox, the client's audio per frame), :mod:`.outbox` (frames waiting for a slow client),
  :mod:`.live` (the session and its lifecycle).
"""

from .config import ServeConfig

__all__ = ["ServeConfig"]
