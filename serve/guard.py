"""Who may call the service: the token, the Host header and the Origin header, on every
request and on the WebSocket handshake.

* **Host.** Only the loopback names (``localhost``, ``127.0.0.0/8``, ``::1``) and the host the
  service was told to listen on are answered, so a web page that rebinds its own DNS name to
  127.0.0.1 (DNS rebinding) cannot read the answers. A service bound to every address
  (``0.0.0.0`` or ``::``, which needs a token) answers any Host name.
* **Origin.** A browser names the page that makes a request. Requests from the service's own
  page (the origin ``http://`` + the request's Host), or from a ``--allow-origin`` origin, are
  answered; any other page is refused (403), so a site the kiosk's browser visits cannot post
  forms to the service (a "simple" request needs no preflight) or open a live session. Clients
  that are not browsers send no Origin and are not affected. Allowed other origins get CORS
  headers, and their preflight requests are answered.
* **Token.** With ``--token``, every API request carries ``Authorization: Bearer TOKEN``
  (``?token=`` on the WebSocket, where browsers cannot set headers).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from .config import LOOPBACK_NAMES, ServeConfig, is_loopback
from .errors import error_response

CORS_METHODS = "GET, POST, DELETE"
CORS_HEADERS = "Authorization, Content-Type"


def host_name(host_header: str) -> str:
    """The name in a Host header, without its port: ``[::1]:8765`` -> ``::1``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The checks above, for one service's settings."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.hosts = {name.lower() for name in (*LOOPBACK_NAMES, config.host)}
        self.origins = set(config.allow_origin)

    def host_allowed(self, host_header: str | None) -> bool:
        if self.config.any_host:
            return True
        if not host_header:
            return False
        name = host_name(host_header).rstrip(".")
        return name in self.hosts or is_loopback(name)

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        return origin == f"http://{host_header.strip().lower()}" or origin in self.origins

    def token_given(self, request: web.Request) -> bool:
        token = self.config.token
        if token is None or not request.path.startswith("/api/"):
            return True
        header = request.headers.get("Authorization", "")
        given = header[len("Bearer "):].strip() if header.startswith("Bearer ") else ""
        if not given and request.path == "/api/live":
            given = request.query.get("token", "")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        host = request.headers.get("Host", "")
        if not self.host_allowed(host):
            return error_response(403, f"refused: this service does not answer to the host name "
                                       f"{host_name(host)!r}")
        origin = request.headers.get("Origin")
        cross = origin is not None and origin != f"http://{host.strip().lower()}"
        if origin is not None and not self.origin_allowed(origin, host):
            return error_response(403, f"refused: pages from {origin[:80]!r} may not call this service "
                                       "(see --allow-origin)")
        if request.method == "OPTIONS" and cross:
            response = web.Response(status=204)
        elif not self.token_given(request):
            response = error_response(401, "a valid token is needed: Authorization: Bearer TOKEN")
        else:
            response = await handler(request)
        if cross and isinstance(response, web.StreamResponse) and not response.prepared:
            response.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                                     "Access-Control-Allow-Methods": CORS_METHODS,
                                     "Access-Control-Allow-Headers": CORS_HEADERS})
        return response
