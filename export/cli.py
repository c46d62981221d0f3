"""``iplap export``: the subcommand and its handler (torch is imported only when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import IplapError
from ..flags import path_arg
from . import OPSET


def register(sub) -> None:
    p = sub.add_parser("export", help="checkpoints -> model bundle (ONNX + OpenVINO IR); needs the export extra",
                       description="Load the IP_LAP checkpoints, split the renderer exactly, write ONNX and "
                                   "OpenVINO IR, check every graph against PyTorch, and convert MediaPipe's "
                                   "face models. Needs: pip install 'iplap[export]'.")
    p.add_argument("--checkpoint-dir", type=path_arg, help="folder with landmarkgenerator_checkpoint.pth and "
                                                           "renderer_checkpoint.pth")
    p.add_argument("--landmark-checkpoint", type=path_arg, help="the landmark generator checkpoint (overrides the dir)")
    p.add_argument("--renderer-checkpoint", type=path_arg, help="the renderer checkpoint (overrides the dir)")
    p.add_argument("--out", type=path_arg, required=True, help="bundle folder to create")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--mediapipe-wheel", type=path_arg, help="local mediapipe 0.10.21 wheel to take the face models "
                                                           "from (default: download it once into the cache)")
    p.add_argument("--no-face-models", action="store_true", help="leave out the face models (graphs only)")
    p.add_argument("--formats", choices=("onnx", "openvino", "both"), default="both",
                   help="which backends' files the bundle keeps: onnx (onnxruntime), openvino, or both (default); "
                        "every graph is checked on both either way")
    p.add_argument("--force", action="store_true", help="replace an existing bundle")
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args) -> int:
    try:
        from .bundle_writer import ExportConfig, export_bundle
    except ImportError as exc:
        raise IplapError(f"iplap export needs the export extra ({exc.name} is missing): "
                         "pip install 'iplap[export]'") from None
    from ..models import LANDMARK_GENERATOR_FILE, RENDERER_FILE

    if args.checkpoint_dir is None and (args.landmark_checkpoint is None or args.renderer_checkpoint is None):
        raise IplapError("give --checkpoint-dir, or both --landmark-checkpoint and --renderer-checkpoint")
    directory = args.checkpoint_dir or Path(".")
    config = ExportConfig(
        landmark_checkpoint=args.landmark_checkpoint or directory / LANDMARK_GENERATOR_FILE,
        renderer_checkpoint=args.renderer_checkpoint or directory / RENDERER_FILE,
        out_dir=args.out, opset=args.opset, face_models=not args.no_face_models,
        mediapipe_wheel=args.mediapipe_wheel, overwrite=args.force,
        formats=("onnx", "openvino") if args.formats == "both" else (args.formats,))
    bundle = export_bundle(config)
    print(f"bundle written to {bundle.root}", file=sys.stderr)
    return 0
