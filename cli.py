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


@_command
def _register_export(sub) -> None:
    p = sub.add_parser("export", help="checkpoints -> model bundle (ONNX + OpenVINO IR); needs the export extra",
                       description="Load the IP_LAP checkpoints, split the renderer exactly, write ONNX and "
                                   "OpenVINO IR, check every graph against PyTorch, and convert MediaPipe's "
                                   "face models. Needs: pip install 'iplap[export]'.")
    p.add_argument("--checkpoint-dir", type=_path, help="folder with landmarkgenerator_checkpoint.pth and "
                                                           "renderer_checkpoint.pth")
    p.add_argument("--landmark-checkpoint", type=_path, help="the landmark generator checkpoint (overrides the dir)")
    p.add_argument("--renderer-checkpoint", type=_path, help="the renderer checkpoint (overrides the dir)")
    p.add_argument("--out", type=_path, required=True, help="bundle folder to create")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--mediapipe-wheel", type=_path, help="local mediapipe 0.10.21 wheel to take the face models "
                                                           "from (default: download it once into the cache)")
    p.add_argument("--no-face-models", action="store_true", help="leave out the face models (graphs only)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args) -> int:
    try:
        from .export.bundle_writer import ExportConfig, export_bundle
    except ImportError as exc:
        raise IplapError(f"iplap export needs the export extra ({exc.name} is missing): "
                         "pip install 'iplap[export]'") from None
    from .models import LANDMARK_GENERATOR_FILE, RENDERER_FILE

    if args.checkpoint_dir is None and (args.landmark_checkpoint is None or args.renderer_checkpoint is None):
        raise IplapError("give --checkpoint-dir, or both --landmark-checkpoint and --renderer-checkpoint")
    directory = args.checkpoint_dir or Path(".")
    config = ExportConfig(
        landmark_checkpoint=args.landmark_checkpoint or directory / LANDMARK_GENERATOR_FILE,
        renderer_checkpoint=args.renderer_checkpoint or directory / RENDERER_FILE,
        out=args.out, opset=args.opset, face_models=not args.no_face_models,
        mediapipe_wheel=args.mediapipe_wheel, overwrite=args.force)
    bundle = export_bundle(config)
    print(f"bundle written to {bundle.root}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
