"""The ``iplap`` command line: ``main(argv=None) -> int``.

Each subcommand lives in a ``_cmd_*`` handler that imports what it needs, so ``iplap
--help`` stays fast and the runtime commands never import torch. Errors a user can
cause (:class:`iplap.errors.IplapError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .benchmarks import BENCH_REFS, LIVE_REFS
from .errors import IplapError
from .runtime.constants import BACKENDS, DEFAULT_REFS, MAX_REFS, MIN_REFS, MISSING_FACE_MODES

log = logging.getLogger("iplap")

EXIT_OK, EXIT_USAGE = 0, 2

#: How the CLI spells the settings that errors suggest (``IplapError.setting``).
SETTING_FLAGS = {"refs": "--refs", "on_missing_face": "--on-missing-face", "backend": "--backend",
                 "overwrite": "--force", "face_mode": "--static/--track", "token": "--token"}


def _verbose_option() -> argparse.ArgumentParser:
    """-v, accepted before the subcommand and after it (a parent parser of each)."""
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's parser must not reset a -v given before the subcommand.
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages to stderr")
    return parent


def _build_parser() -> argparse.ArgumentParser:
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
    for register in _COMMANDS:
        register(sub)
    return parser


def error_line(exc: IplapError) -> str:
    """The one line the CLI prints for a user error, with advice in the CLI's own words."""
    flag = SETTING_FLAGS.get(exc.setting or "")
    if flag is None:
        return str(exc)
    if isinstance(exc.suggestion, bool) or exc.suggestion is None:
        return f"{exc.message} (use {flag})"
    return f"{exc.message} (use {flag} {exc.suggestion})"


_COMMANDS: list = []


def _command(register):
    _COMMANDS.append(register)
    return register


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args) or EXIT_OK)
    except IplapError as exc:
        print(f"iplap: error: {error_line(exc)}", file=sys.stderr)
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
        out_dir=args.out, opset=args.opset, face_models=not args.no_face_models,
        mediapipe_wheel=args.mediapipe_wheel, overwrite=args.force)
    bundle = export_bundle(config)
    print(f"bundle written to {bundle.root}", file=sys.stderr)
    return EXIT_OK


def _add_runtime_options(p) -> None:
    p.add_argument("--bundle", type=_path, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0])
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.add_argument("--cache-dir", type=_path, help="OpenVINO model cache folder")
    p.add_argument("--refs", type=int, default=DEFAULT_REFS,
                   help=f"number of reference images N, {MIN_REFS} to {MAX_REFS} (default {DEFAULT_REFS})")


#: Options that only the face's preparation uses (``run --avatar`` has them in the avatar).
PREPARE_OPTIONS = {"face_mode": "--static/--track", "on_missing_face": "--on-missing-face", "smooth": "--smooth"}


def _add_prepare_options(p) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--static", dest="face_mode", action="store_const", const="static",
                      help="detect the face on every frame, as the original (the default)")
    mode.add_argument("--track", dest="face_mode", action="store_const", const="track",
                      help="follow the face from the previous frame's landmarks (faster)")
    p.add_argument("--on-missing-face", choices=MISSING_FACE_MODES, default=None,
                   help="frames of the face video without a face (fades, cut-aways): pass = leave them as they "
                        "are (default), fill = render the nearest frame's face onto them, error = refuse the video")
    p.add_argument("--smooth", action="store_true", default=None,
                   help="smooth tracked landmarks against jitter (One-Euro)")


def _check_refs(args) -> None:
    if not MIN_REFS <= args.refs <= MAX_REFS:
        raise IplapError(f"--refs must be between {MIN_REFS} and {MAX_REFS}, got {args.refs}")
    if args.threads < 0:
        raise IplapError(f"--threads must be 0 (all cores) or more, got {args.threads}")


def _pipeline(args):
    from .runtime.backends import BackendConfig
    from .runtime.pipeline import Pipeline, PipelineConfig

    _check_refs(args)
    backend = BackendConfig(backend=args.backend, device=args.device, threads=args.threads, cache_dir=args.cache_dir)
    config = PipelineConfig(backend=backend, refs=args.refs, face_mode=getattr(args, "face_mode", None) or "static",
                            on_missing_face=getattr(args, "on_missing_face", None) or "pass",
                            smoothing=bool(getattr(args, "smooth", None)))
    return Pipeline(args.bundle, config)


def _print_timing(report, what: str, loading: float) -> None:
    """The render's wall time and its stages (which add up to it), then the model loading before it."""
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(report.seconds.items(), key=lambda kv: -kv[1]))
    print(f"wrote {what}: {report.frames} frames in {report.wall_seconds:.2f} s "
          f"({report.seconds_per_frame:.2f} s/frame; {stages}); models loaded in {loading:.2f} s", file=sys.stderr)


@_command
def _register_run(sub) -> None:
    p = sub.add_parser("run", help="face video or photo + speech -> lip-synced mp4",
                       description="Render a face (video or photo, or a prepared avatar) speaking the given "
                                   "audio, into an H.264 mp4 with the audio muxed in.")
    _add_runtime_options(p)
    _add_prepare_options(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--face", type=_path, help="face video or image")
    source.add_argument("--avatar", type=_path, help="avatar file from iplap prepare")
    p.add_argument("--audio", type=_path, required=True,
                   help="speech: any audio file (wav, flac, mp3, m4a, ogg, opus, ...), or a video's audio track")
    p.add_argument("--out", type=_path, required=True, help="output mp4")
    p.add_argument("--crf", type=int, default=18,
                   help="H.264 quality (lower is better); 0 = lossless, written as RGB H.264, which browsers "
                        "and most players do not play")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args) -> int:
    from .runtime.media import check_output_path

    if args.avatar is not None:
        given = [flag for name, flag in PREPARE_OPTIONS.items() if getattr(args, name, None) is not None]
        if given:
            raise IplapError(f"{', '.join(given)} only change how a face is prepared; an avatar was prepared "
                             "already (give them to iplap prepare, or use --face)")
    check_output_path(args.out)
    if not 0 <= args.crf <= 51:
        raise IplapError(f"--crf must be between 0 and 51, got {args.crf}")
    start = time.perf_counter()
    pipeline = _pipeline(args)
    face = pipeline.load_avatar(args.avatar) if args.avatar else args.face
    loading = time.perf_counter() - start
    report = pipeline.render(face, args.audio, args.out, crf=args.crf, show_progress=not args.quiet)
    _print_timing(report, str(report.path), loading)
    return EXIT_OK


@_command
def _register_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="do the per-face work once: an avatar file for fast runs",
                       description="Decode and track the face, choose the references and compute their "
                                   "features, and write them with the face file into one avatar file.")
    _add_runtime_options(p)
    _add_prepare_options(p)
    p.add_argument("--face", type=_path, required=True, help="face video or image")
    p.add_argument("--out", type=_path, required=True, help="avatar file to write (.avatar)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from .runtime.media import check_output_path

    check_output_path(args.out)
    avatar = _pipeline(args).prepare(args.face, show_progress=not args.quiet)
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
def _register_serve(sub) -> None:
    from .serve.cli import register  # imports nothing heavy; aiohttp only when the command runs

    register(sub)


@_command
def _register_batch(sub) -> None:
    from .batch.cli import register

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
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(args.out, cache_dir=args.cache_dir, checkpoint_dir=args.checkpoint_dir, backend=args.backend,
             threads=args.threads, show_progress=not args.quiet)
    return EXIT_OK


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


@_command
def _register_bench(sub) -> None:
    p = sub.add_parser("bench", help="accuracy against speed for each backend, precision, N and thread count",
                       description="Measure the machine's convolution ceiling, then every configuration on fixed "
                                   "inputs made from the shipped samples, beside the original torch renderer when "
                                   "torch is installed; score each against fp32 at the same N and against the "
                                   f"original configuration (N={DEFAULT_REFS}, fp32), and end with the setting to use. Writes "
                                   "results.json, results.md and PNG plots (needs the bench extra; the ceiling "
                                   "needs the calibrate extra).")
    p.add_argument("--bundle", type=_path, action="append",
                   help="a model bundle; repeat for several precisions (the fp32 one is the reference)")
    p.add_argument("--out", type=_path, help="output folder")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated (default {','.join(BACKENDS)})")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--refs", type=_int_list,
                   help=f"numbers of references (default {','.join(map(str, BENCH_REFS))}; with --live "
                        f"{','.join(map(str, LIVE_REFS))})")
    p.add_argument("--threads", type=_int_list, help="thread counts (default: all cores)")
    p.add_argument("--frames", type=int, default=4, help="rendered frames timed per repeat (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    p.add_argument("--no-ceiling", action="store_true", help="skip the convolution ceiling")
    p.add_argument("--renderer-checkpoint", type=_path, help="checkpoint for the torch baseline (default stand-ins)")
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--budget", type=float, metavar="SECONDS_PER_FRAME",
                      help="recommend the most accurate setting (against the original configuration) within this "
                           "time per frame; without --budget or --min-psnr: the Pareto front")
    goal.add_argument("--min-psnr", type=float, metavar="DB",
                      help="recommend the fastest setting whose face PSNR against the original configuration is at "
                           "least this")
    p.add_argument("--from", dest="from_results", type=_path, metavar="RESULTS_JSON",
                   help="measure nothing: make the recommendation from a saved results.json")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: N=5, 2 frames, 1 repeat, a short ceiling")
    live = p.add_argument_group("live (--live)")
    live.add_argument("--live", action="store_true",
                      help="measure live streams instead: sustained frame rate, first-frame and interruption "
                           "latency, and the frame rate the ceiling allows, for a photo and a video avatar; writes "
                           "live.json and live.md, and names the setting to use live")
    live.add_argument("--avatars", default="photo,video", help="photo and/or video (default both)")
    live.add_argument("--ov-precision", default="bundle",
                      help="OpenVINO inference precision hints to run, comma-separated: bundle (what the bundle "
                           "was calibrated for, as iplap run uses it), f32 (exact), bf16, f16 (default bundle)")
    live.add_argument("--live-workers", type=_int_list, default=(1,),
                      help="renders in flight in the live session, comma-separated (default 1); the backend is "
                           "built for as many at once and the threads are shared among them")
    live.add_argument("--ov-fuse-flow", default="on",
                      help="OpenVINO: run flow_modulations and flow_head as one model: on (default), off, or "
                           "on,off to compare")
    live.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                      help="after the grid, run each avatar's live choice for this long as an agent would "
                           "(replies, pauses, interruptions) and report its memory and latencies (default: no soak)")
    live.add_argument("--live-frames", type=int, default=12,
                      help="pictures timed per live round without a clock (default 12)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_cmd_bench)


def _bench_command(args) -> str:
    """The command line of this bench run, spelled out with every setting that shapes it."""
    import shlex

    words = ["iplap", "bench"]
    for bundle in args.bundle:
        words += ["--bundle", str(bundle)]
    words += ["--out", str(args.out), "--backends", args.backends]
    if args.device != "CPU":
        words += ["--device", args.device]
    if args.live:
        words += ["--live", "--avatars", args.avatars, "--ov-precision", args.ov_precision, "--ov-fuse-flow",
                  args.ov_fuse_flow, "--live-workers", ",".join(map(str, args.live_workers))]
        if args.soak:
            words += ["--soak", f"{args.soak:g}"]
    if args.quick:
        words.append("--quick")
    elif args.live:
        words += ["--refs", ",".join(map(str, args.refs or LIVE_REFS)), "--live-frames", str(args.live_frames),
                  "--repeats", str(args.repeats)]
    else:
        words += ["--refs", ",".join(map(str, args.refs or BENCH_REFS)), "--frames", str(args.frames), "--repeats",
                  str(args.repeats)]
    if args.threads:
        words += ["--threads", ",".join(map(str, args.threads))]
    for flag, value in (("--budget", args.budget), ("--min-psnr", args.min_psnr),
                        ("--renderer-checkpoint", args.renderer_checkpoint)):
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    words += [flag for flag, on in (("--no-torch", args.no_torch), ("--no-ceiling", args.no_ceiling)) if on]
    return shlex.join(words)


def _cmd_bench(args) -> int:
    import json
    import os

    from .benchmarks.recommend import describe, recommend

    if args.budget is not None and args.budget <= 0:
        raise IplapError(f"--budget must be positive, got {args.budget:g} s/frame")
    if args.from_results is not None:
        if args.bundle or args.out:
            raise IplapError("--from makes the recommendation from a saved run; it measures nothing, so --bundle "
                             "and --out have no effect")
        try:
            results = json.loads(args.from_results.read_text())["results"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IplapError(f"{args.from_results} is not a results.json of iplap bench ({exc})") from None
        print("\n".join(describe(recommend(results, args.budget, args.min_psnr))))
        return EXIT_OK
    if not args.bundle or args.out is None:
        raise IplapError("iplap bench needs --bundle and --out (or --from RESULTS_JSON)")
    from .benchmarks.bench import BenchConfig, run_bench

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise IplapError(f"unknown backend {unknown[0]!r}: choose {' and/or '.join(BACKENDS)}")
    if args.live:
        return _cmd_bench_live(args, backends)
    options = dict(backends=backends, device=args.device, torch_baseline=not args.no_torch,
                   renderer_checkpoint=args.renderer_checkpoint, threads=args.threads or (os.cpu_count() or 1,),
                   ceiling=not args.no_ceiling, budget=args.budget, min_psnr=args.min_psnr,
                   command=_bench_command(args))
    if args.quick:
        config = BenchConfig.quick(args.bundle, args.out, **options)
    else:
        config = BenchConfig(tuple(args.bundle), args.out, refs=args.refs or BENCH_REFS, frames=args.frames,
                             repeats=args.repeats, **options)
    report = run_bench(config, show_progress=not args.quiet)
    print(f"wrote {args.out / 'results.md'}, results.json and plots", file=sys.stderr)
    print("\n".join(describe(report["recommendation"])))
    return EXIT_OK


def _cmd_bench_live(args, backends: tuple[str, ...]) -> int:
    import os

    from .benchmarks.live import LiveBenchConfig, run_live_bench

    if args.budget is not None or args.min_psnr is not None:
        raise IplapError("--live chooses the most accurate setting that sustains 25 fps; --budget and --min-psnr "
                         "are for the offline grid")
    hints = tuple(h.strip() for h in args.ov_precision.split(",") if h.strip())
    bad = [h for h in hints if h not in ("bundle", "f32", "bf16", "f16")]
    if bad or not hints:
        raise IplapError(f"unknown --ov-precision {bad[0] if bad else args.ov_precision!r}: choose bundle, f32, "
                         "bf16, f16")
    fusions = tuple(f.strip() for f in args.ov_fuse_flow.split(",") if f.strip())
    if not fusions or any(f not in ("on", "off") for f in fusions):
        raise IplapError(f"unknown --ov-fuse-flow {args.ov_fuse_flow!r}: choose on, off or on,off")
    if any(w < 1 for w in args.live_workers):
        raise IplapError(f"--live-workers must be 1 or more, got {','.join(map(str, args.live_workers))}")
    options = dict(backends=backends, device=args.device, threads=tuple(args.threads or (os.cpu_count() or 1,)),
                   avatars=tuple(a.strip() for a in args.avatars.split(",") if a.strip()),
                   ov_precisions=tuple(None if h == "bundle" else h for h in hints),
                   fuse_flow=tuple(f == "on" for f in dict.fromkeys(fusions)),
                   workers=tuple(args.live_workers), soak_seconds=args.soak,
                   ceiling=not args.no_ceiling, command=_bench_command(args))
    if args.refs:
        options["refs"] = tuple(args.refs)
    if args.quick:
        config = LiveBenchConfig.quick(args.bundle, args.out, **options)
    else:
        config = LiveBenchConfig(tuple(args.bundle), args.out, frames=args.live_frames, repeats=args.repeats,
                                 **options)
    report = run_live_bench(config, show_progress=not args.quiet)
    print(f"wrote {args.out / 'live.md'} and live.json", file=sys.stderr)
    for avatar, c in report["choice"].items():
        rate = "sustains 25 fps" if c["sustains"] else f"{c['fps']:.2f} pictures/s (every {c['k']}th frame)"
        print(f"live, {avatar}: {c['label']}: {rate}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
