"""``iplap serve``: the subcommand and its handler (aiohttp is imported only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import IplapError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="a local service (HTTP + WebSocket) and a web page; needs the serve extra",
        description="Serve the API and the web page: upload faces, render speech into videos (queued), or "
                    "render live over a WebSocket. Binds to 127.0.0.1 by default; any other address needs "
                    "--token. Needs: pip install 'iplap[serve]'.")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free port)")
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every API request "
                                   "(needed when --host is not a loopback address)")
    p.add_argument("--max-sessions", type=int, default=2, metavar="K",
                   help="renders (jobs, live sessions, face preparations) at once (default 2)")
    p.add_argument("--max-queue", type=int, default=16, help="jobs that may wait; one more gets 429 (default 16)")
    p.add_argument("--avatar-dir", type=Path, help="where prepared faces are kept (default ~/.cache/iplap/avatars)")
    p.add_argument("--max-upload-mb", type=float, default=200.0, help="largest upload, MB (default 200)")
    p.add_argument("--refs", type=int, default=25, help="default number of reference images N (default 25)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="inference threads per render (default: the cores shared out between the sessions)")
    p.add_argument("--max-live-seconds", type=float, default=600.0, help="most speech per live session (default 600)")
    p.add_argument("--live-pending-frames", type=int, default=8, metavar="K",
                   help="frames a live session holds for a client that reads slowly; older pictures are then "
                        "dropped, their audio kept (default 8)")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args) -> int:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise IplapError("iplap serve needs the serve extra (aiohttp is missing): pip install 'iplap[serve]'") from None
    from .app import run_server
    from .config import ServeConfig

    config = ServeConfig(args.bundle, args.host, args.port, args.token, args.max_sessions, args.max_queue,
                         args.avatar_dir, args.max_upload_mb, args.refs, args.backend, args.device, args.threads,
                         args.max_live_seconds, args.live_pending_frames)
    run_server(config, announce=lambda line: print(line, file=sys.stderr, flush=True))
    return 0
