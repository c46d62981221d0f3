"""The ``iplap`` command line: ``main(argv=None) -> int``.

This module only assembles the subcommands: each package registers its own (``register``
in ``runtime/cli.py``: run and prepare; ``export/cli.py``; ``calibration/cli.py``;
``benchmarks/cli.py``; ``serve/cli.py``; ``batch/cli.py``; ``demo.py``), and imports what
it needs inside its handler, so ``iplap --help`` stays fast and the runtime commands never
import torch. Errors a user can cause (:class:`iplap.errors.IplapError`) print one line and
exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .console import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, Terminated, configure_logging, handling_signals
from .errors import IplapError

log = logging.getLogger("iplap")

EXIT_OK = 0

#: How the CLI spells the settings that errors suggest (``IplapError.setting``).
SETTING_FLAGS = {"refs": "--refs", "crf": "--crf", "on_missing_face": "--on-missing-face", "backend": "--backend",
                 "overwrite": "--force", "face_mode": "--static/--track", "token": "--token",
                 "keyframe_every": "--keyframe-every"}

#: The modules that register subcommands, in the order ``iplap --help`` lists them.
COMMAND_MODULES = ("iplap.export.cli", "iplap.runtime.cli", "iplap.calibration.cli", "iplap.serve.cli",
                   "iplap.batch.cli", "iplap.demo", "iplap.benchmarks.cli")


def _verbose_option() -> argparse.ArgumentParser:
    """-v and -q, accepted before the subcommand and after it (a parent parser of each)."""
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's parser must not reset a -v given before the subcommand.
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages to stderr")
    parent.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors on stderr: no stage messages, no progress bars")
    return parent


def build_parser() -> argparse.ArgumentParser:
    verbose = _verbose_option()
    parser = argparse.ArgumentParser(prog="iplap", description="Lip-synced talking faces with IP_LAP, without PyTorch.",
                                     parents=[verbose])
    parser.add_argument("--version", action="version", version=f"iplap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    original = sub.add_parser

    def add_parser(name, **kwargs):
        kwargs.setdefault("parents", [verbose])
        return original(name, **kwargs)

    sub.add_parser = add_parser
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def error_line(exc: IplapError) -> str:
    """The one line the CLI prints for a user error, with advice in the CLI's own words."""
    flag = SETTING_FLAGS.get(exc.setting or "")
    if flag is None:
        return str(exc)
    if isinstance(exc.suggestion, bool) or exc.suggestion is None:
        return f"{exc.message} (use {flag})"
    return f"{exc.message} (use {flag} {exc.suggestion})"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=getattr(args, "verbose", False), quiet=getattr(args, "quiet", False))
    try:
        with handling_signals():
            return int(args.handler(args) or EXIT_OK)
    except IplapError as exc:
        print(f"iplap: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("iplap: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("iplap: terminated", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
