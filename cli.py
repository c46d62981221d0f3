"""The ``iplap`` command line: ``main(argv=None) -> int``.

Each subcommand lives in a ``_cmd_*`` handler that imports what it needs, so ``iplap
--help`` stays fast and the runtime commands never import torch. Errors a user can
cause (:class:`iplap.errors.IplapError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import IplapError

log = logging.getLogger("iplap")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iplap", description="Lip-synced talking faces with IP_LAP, without PyTorch.")
    parser.add_argument("--version", action="version", version=f"iplap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(sub)
    return parser


_COMMANDS: list = []


def _command(register):
    _COMMANDS.append(register)
    return register


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args) or EXIT_OK)
    except IplapError as exc:
        print(f"iplap: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("iplap: interrupted", file=sys.stderr)
        return 130


def _path(value: str) -> Path:
    return Path(value).expanduser()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
