"""``iplap serve``: the subcommand and its handler (aiohttp is imported only when it runs).

The flags are made from :class:`~.config.ServeConfig`'s fields, where each default and its
help are written once."""

from __future__ import annotations

import sys

from ..errors import IplapError
from ..flags import add_flags, settings_from
from .config import ServeConfig


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="a local service (HTTP + WebSocket) and a web page; needs the serve extra",
        description="Serve the API and the web page: upload faces, render speech into videos (queued), or "
                    "render live over a WebSocket. Binds to 127.0.0.1 by default; any other address needs "
                    "--token. Needs: pip install 'iplap[serve]'.")
    add_flags(p, ServeConfig)
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args) -> int:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise IplapError("iplap serve needs the serve extra (aiohttp is missing): pip install 'iplap[serve]'") from None
    from .app import run_server

    config = settings_from(args, ServeConfig)
    run_server(config, announce=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
