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


def _add_runtime_options(p) -> None:
    p.add_argument("--bundle", type=_path, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.add_argument("--cache-dir", type=_path, help="OpenVINO model cache folder")
    p.add_argument("--refs", type=int, default=25, help="number of reference images N (default 25)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--static", dest="face_mode", action="store_const", const="static",
                      help="detect the face on every frame, as the original (default)")
    mode.add_argument("--track", dest="face_mode", action="store_const", const="track",
                      help="follow the face from the previous frame's landmarks (faster)")
    p.set_defaults(face_mode="static")
    p.add_argument("--fill-gaps", type=int, default=0, metavar="N",
                   help="carry the last face track over at most N frames without a face (default 0: error)")
    p.add_argument("--smooth", action="store_true", help="smooth tracked landmarks against jitter (One-Euro)")


def _pipeline(args):
    from .runtime.backends import BackendConfig
    from .runtime.pipeline import Pipeline, PipelineConfig

    backend = BackendConfig(backend=args.backend, device=args.device, threads=args.threads, cache_dir=args.cache_dir)
    config = PipelineConfig(backend=backend, refs=args.refs, face_mode=args.face_mode, fill_gaps=args.fill_gaps,
                            smoothing=args.smooth)
    return Pipeline(args.bundle, config)


@_command
def _register_run(sub) -> None:
    p = sub.add_parser("run", help="face video or photo + speech -> lip-synced mp4",
                       description="Render a face (video or photo, or a prepared avatar) speaking the given "
                                   "audio, into an H.264 mp4 with the audio muxed in.")
    _add_runtime_options(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--face", type=_path, help="face video or image")
    source.add_argument("--avatar", type=_path, help="avatar file from iplap prepare")
    p.add_argument("--audio", type=_path, required=True, help="speech: any audio file, or a video's audio track")
    p.add_argument("--out", type=_path, required=True, help="output mp4")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 = lossless (default 18)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args) -> int:
    from .runtime.media import check_output_path

    check_output_path(args.out)
    if not 0 <= args.crf <= 51:
        raise IplapError(f"--crf must be between 0 and 51, got {args.crf}")
    pipeline = _pipeline(args)
    face = pipeline.load_avatar(args.avatar) if args.avatar else args.face
    report = pipeline.render(face, args.audio, args.out, crf=args.crf, progress=not args.quiet)
    stages = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(report.seconds.items(), key=lambda kv: -kv[1]))
    print(f"wrote {report.path}: {report.frames} frames in {report.wall_seconds:.1f} s "
          f"({report.seconds_per_frame:.2f} s/frame; {stages})", file=sys.stderr)
    return EXIT_OK


@_command
def _register_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="do the per-face work once: an avatar file for fast runs",
                       description="Decode and track the face, choose the references and compute their "
                                   "features, and write them with the face file into one avatar file.")
    _add_runtime_options(p)
    p.add_argument("--face", type=_path, required=True, help="face video or image")
    p.add_argument("--out", type=_path, required=True, help="avatar file to write (.avatar)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from .runtime.media import check_output_path

    check_output_path(args.out)
    avatar = _pipeline(args).prepare(args.face, progress=not args.quiet)
    path = avatar.save(args.out)
    print(f"wrote avatar {path}: {avatar.n_frames} frames, {avatar.references.count} references "
          f"({avatar.references.distinct} distinct)", file=sys.stderr)
    return EXIT_OK


@_command
def _register_calibrate(sub) -> None:
    # The command's options and handler live with calibration; it imports nothing heavy here.
    from .calibration.cli import register

    register(sub)


@_command
def _register_demo(sub) -> None:
    p = sub.add_parser("demo", help="render the sample photo speaking the sample speech (stand-in weights)",
                       description="Write the stand-in checkpoints, export a bundle into the cache folder (once), "
                                   "and render the sample photo with the sample speech. Needs the export extra. "
                                   "Stand-in weights are random: the face region is noise, the pipeline is real.")
    p.add_argument("--out", type=_path, default=Path("demo.mp4"), help="output mp4 (default demo.mp4)")
    p.add_argument("--cache-dir", type=_path, help="where the stand-in bundle is kept (default ~/.cache/iplap)")
    p.add_argument("--checkpoint-dir", type=_path, help="use these (official) checkpoints instead of stand-ins")
    p.add_argument("--backend", choices=("onnxruntime", "openvino"), default="onnxruntime")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, cache_dir=args.cache_dir, checkpoint_dir=args.checkpoint_dir, backend=args.backend,
             threads=args.threads, progress=not args.quiet)
    return EXIT_OK


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


@_command
def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="accuracy against speed for each backend, precision, N and thread count",
                       description="Measure every configuration on fixed inputs made from the shipped samples, "
                                   "beside the original torch renderer when torch is installed. Writes "
                                   "results.json, results.md and PNG plots (needs the bench extra).")
    p.add_argument("--bundle", type=_path, action="append", required=True,
                   help="a model bundle; repeat for several precisions (the fp32 one is the reference)")
    p.add_argument("--out", type=_path, required=True, help="output folder")
    p.add_argument("--backends", default="onnxruntime,openvino", help="comma-separated (default both)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--refs", type=_int_list, default=(5, 10, 25), help="numbers of references (default 5,10,25)")
    p.add_argument("--threads", type=_int_list, help="thread counts (default: all cores)")
    p.add_argument("--frames", type=int, default=4, help="rendered frames timed per repeat (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    p.add_argument("--renderer-checkpoint", type=_path, help="checkpoint for the torch baseline (default stand-ins)")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: N=5, 2 frames, 1 repeat")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args) -> int:
    import os

    from .benchmarks.bench import BenchConfig, run_bench

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in ("onnxruntime", "openvino")]
    if unknown:
        raise IplapError(f"unknown backend {unknown[0]!r}: choose onnxruntime and/or openvino")
    options = dict(backends=backends, device=args.device, torch_baseline=not args.no_torch,
                   renderer_checkpoint=args.renderer_checkpoint, threads=args.threads or (os.cpu_count() or 1,))
    if args.quick:
        config = BenchConfig.quick(args.bundle, args.out, **options)
    else:
        config = BenchConfig(tuple(args.bundle), args.out, refs=args.refs, frames=args.frames, repeats=args.repeats,
                             **options)
    run_bench(config, progress=not args.quiet)
    print(f"wrote {args.out / 'results.md'}, results.json and plots", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
