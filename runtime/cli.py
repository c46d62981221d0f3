"""``iplap run`` and ``iplap prepare``: the runtime's subcommands and their handlers.

Every flag is checked, and every input file looked at, before a model is loaded: a wrong
path or setting fails in milliseconds.
"""

from __future__ import annotations

import json
import sys
import time

from ..errors import AvatarError, IplapError
from ..console import checkpoint, quiet, say
from ..flags import path_arg
from .constants import (BACKENDS, DEFAULT_CRF, DEFAULT_REFS, MAX_CRF, MAX_KEYFRAME_EVERY, MAX_REFS, MIN_CRF,
                        MIN_REFS, MISSING_FACE_MODES, Backend)

#: Options that only the face's preparation uses (``run --avatar`` has them in the avatar).
PREPARE_OPTIONS = {"face_mode": "--static/--track", "on_missing_face": "--on-missing-face", "smooth": "--smooth"}


def register(sub) -> None:
    _register_run(sub)
    _register_prepare(sub)
    _register_warmup(sub)
    _register_bundle(sub)


def _add_runtime_options(p) -> None:
    p.add_argument("--bundle", type=path_arg, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help="inference backend (default %(default)s)")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.add_argument("--cache-dir", type=path_arg,
                   help="OpenVINO's model cache folder (default: openvino in iplap's cache folder, $IPLAP_CACHE or "
                        "~/.cache/iplap)")
    p.add_argument("--no-model-cache", dest="model_cache", action="store_false",
                   help="compile OpenVINO's models anew at every start (no model cache)")
    p.add_argument("--refs", type=int, default=DEFAULT_REFS,
                   help=f"number of reference images N, {MIN_REFS} to {MAX_REFS} (default {DEFAULT_REFS})")


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


def _config(args):
    """The pipeline's settings from the flags, checked (before any model loads)."""
    from .backends import BackendConfig
    from .config import PipelineConfig

    backend = BackendConfig(backend=args.backend, device=args.device, threads=args.threads, cache_dir=args.cache_dir,
                            model_cache=args.model_cache)
    return PipelineConfig(backend=backend, refs=args.refs, face_mode=getattr(args, "face_mode", None) or "static",
                          on_missing_face=getattr(args, "on_missing_face", None) or "pass",
                          smoothing=bool(getattr(args, "smooth", None)),
                          keyframe_every=getattr(args, "keyframe_every", 1))


def _load(args, config):
    """The pipeline, each slow step said as it starts (Numba's one-off compile, OpenVINO's)."""
    from . import jit, kernels
    from .pipeline import Pipeline

    if not kernels.compiled():
        say(f"compiling the runtime's kernels once (tens of seconds on a small machine; kept in {jit.cache_location()})")
    compiling = ", compiling its graphs (kept in OpenVINO's model cache: seconds next time)" \
        if config.backend.backend == Backend.OPENVINO else ""
    say(f"loading the model bundle {args.bundle} for {config.backend.backend}{compiling}")
    return Pipeline(args.bundle, config)


def _stop_between_frames(done: int, total) -> None:
    """``on_progress``: a Ctrl-C or SIGTERM that a C callback swallowed stops the command here."""
    checkpoint()


def _print_timing(report, what: str, loading: float) -> None:
    """The render's wall time and its stages (which add up to it), then the model loading before it."""
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(report.seconds.items(), key=lambda kv: -kv[1]))
    print(f"wrote {what}: {report.frames} frames in {report.wall_seconds:.2f} s "
          f"({report.seconds_per_frame:.2f} s/frame; {stages}); models loaded in {loading:.2f} s", file=sys.stderr)


def _register_run(sub) -> None:
    p = sub.add_parser("run", help="face video or photo + speech -> lip-synced mp4",
                       description="Render a face (video or photo, or a prepared avatar) speaking the given "
                                   "audio, into an H.264 mp4 with the audio muxed in.")
    _add_runtime_options(p)
    _add_prepare_options(p)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--face", type=path_arg, help="face video or image")
    source.add_argument("--avatar", type=path_arg, help="avatar file from iplap prepare")
    p.add_argument("--audio", type=path_arg, required=True,
                   help="speech: any audio file (wav, flac, mp3, m4a, ogg, opus, ...), or a video's audio track")
    p.add_argument("--out", type=path_arg, required=True, help="output mp4")
    p.add_argument("--crf", type=int, default=DEFAULT_CRF,
                   help=f"H.264 quality, {MIN_CRF} to {MAX_CRF}, lower is better (default {DEFAULT_CRF}); 0 = "
                        "lossless, written as RGB H.264, which browsers and most players do not play")
    p.add_argument("--keyframe-every", type=int, default=1, metavar="K",
                   help=f"draw every K-th frame with the renderer and make the frames between from the keyframes "
                        f"on either side, moved to each frame's own predicted lips and jaw: about 1/K of the "
                        f"renderer's time; 1 to {MAX_KEYFRAME_EVERY} (default 1: every frame rendered, as the original)")
    p.add_argument("--json", action="store_true", help="print the render's report as JSON on stdout")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args) -> int:
    from .constants import check_crf
    from .files import check_input_file
    from .media import check_output_path

    if args.avatar is not None:
        given = [flag for name, flag in PREPARE_OPTIONS.items() if getattr(args, name, None) is not None]
        if given:
            raise IplapError(f"{', '.join(given)} only change how a face is prepared; an avatar was prepared "
                             "already (give them to iplap prepare, or use --face)")
    config = _config(args)
    check_crf(args.crf)
    check_input_file(args.audio, "audio")
    if args.avatar is not None:
        check_input_file(args.avatar, "avatar", error=AvatarError)
    else:
        check_input_file(args.face, "face")
    check_output_path(args.out)
    start = time.perf_counter()
    pipeline = _load(args, config)
    face = pipeline.load_avatar(args.avatar) if args.avatar else args.face
    loading = time.perf_counter() - start
    report = pipeline.render(face, args.audio, args.out, crf=args.crf, show_progress=not quiet(),
                             on_progress=_stop_between_frames)
    _print_timing(report, str(report.path), loading)
    if args.json:
        print(json.dumps({"out": str(report.path), "frames": report.frames, "seconds": round(report.wall_seconds, 3),
                          "seconds_per_frame": round(report.seconds_per_frame, 4),
                          "first_frame_seconds": round(report.first_frame_seconds, 3),
                          "load_seconds": round(loading, 3),
                          "stages": {k: round(v, 4) for k, v in report.seconds.items()}}))
    return 0


def _register_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="do the per-face work once: an avatar file for fast runs",
                       description="Decode and track the face, choose the references and compute their "
                                   "features, and write them with the face file into one avatar file.")
    _add_runtime_options(p)
    _add_prepare_options(p)
    p.add_argument("--face", type=path_arg, required=True, help="face video or image")
    p.add_argument("--out", type=path_arg, required=True, help="avatar file to write (.avatar)")
    p.add_argument("--json", action="store_true", help="print what was prepared as JSON on stdout")
    p.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from .files import check_input_file
    from .media import check_output_path

    config = _config(args)
    check_input_file(args.face, "face")
    check_output_path(args.out)
    avatar = _load(args, config).prepare(args.face, show_progress=not quiet(), on_progress=_stop_between_frames)
    path = avatar.save(args.out)
    print(f"wrote avatar {path}: {avatar.n_frames} frames, {avatar.references.count} references "
          f"({avatar.references.distinct} distinct)", file=sys.stderr)
    if args.json:
        print(json.dumps({"avatar": str(path), "frames": avatar.n_frames, "references": avatar.references.count,
                          "distinct_references": avatar.references.distinct}))
    return 0


def _register_warmup(sub) -> None:
    p = sub.add_parser("warmup", help="compile and cache everything once (a kiosk image's build step)",
                       description="Compile the runtime's Numba kernels into their cache and, with --bundle, "
                                   "load every graph on each backend (OpenVINO compiles them into its model cache), "
                                   "the face models, and the renderer's flow for a photo's one reference and for "
                                   "N: later starts then skip those compiles.")
    p.add_argument("--bundle", type=path_arg, help="model bundle folder to warm up too")
    p.add_argument("--backend", choices=(*BACKENDS, "all"), default="all",
                   help="which backend's graphs to load (default: all the bundle holds)")
    p.add_argument("--refs", type=int, default=DEFAULT_REFS,
                   help=f"the number of references N the renderer's flow is compiled for besides 1 "
                        f"(default {DEFAULT_REFS})")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.add_argument("--json", action="store_true", help="print each step's seconds as JSON on stdout")
    p.set_defaults(handler=_cmd_warmup)


def _cmd_warmup(args) -> int:
    from . import jit, kernels
    from .backends import BackendConfig
    from .config import PipelineConfig

    steps: dict[str, float] = {}
    config = PipelineConfig(refs=args.refs)  # checks --refs before anything is compiled
    started = time.perf_counter()
    say(f"compiling the runtime's kernels (kept in {jit.cache_location()})" if not kernels.compiled()
        else f"the runtime's kernels are compiled already (in {jit.cache_location()})")
    kernels.warm_up()
    steps["kernels"] = time.perf_counter() - started
    if args.bundle is not None:
        from .bundle import Bundle
        from .pipeline import Pipeline
        from .renderer import FLOW_CHUNK

        bundle = Bundle.load(args.bundle)
        backends = bundle.backends if args.backend == "all" else (args.backend,)
        for backend in backends:
            started = time.perf_counter()
            say(f"loading {args.bundle} for {backend}" + (" (compiling into OpenVINO's model cache)"
                                                           if backend == Backend.OPENVINO else ""))
            pipeline = Pipeline(bundle, PipelineConfig(backend=BackendConfig(backend, threads=args.threads),
                                                       refs=config.refs))
            pipeline.new_tracker()
            renderer = pipeline.renderer
            for distinct in sorted({1, min(config.refs, FLOW_CHUNK)}):  # a photo's one, a video's up to N
                if renderer.fused_for(distinct):
                    renderer.flow.compiled_for(distinct)
            steps[str(backend)] = time.perf_counter() - started
    for step, seconds in steps.items():
        say(f"{step}: {seconds:.1f} s")
    say("warm: later starts skip these compiles")
    if args.json:
        print(json.dumps({step: round(seconds, 3) for step, seconds in steps.items()}))
    return 0


def _register_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="look into a model bundle", description="Look into a model bundle.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="what a bundle holds: backends, graphs and sizes, precision, gate",
                              description="What a bundle holds: its format and precision, the backends it runs on, "
                                          "each graph's size and precision per backend, the face models, what made "
                                          "it, and a calibrated bundle's accuracy gate. Every file is verified.")
    info.add_argument("bundle", type=path_arg, help="the bundle folder")
    info.add_argument("--json", action="store_true", help="print it as JSON on stdout")
    info.set_defaults(handler=_cmd_bundle_info)


def _cmd_bundle_info(args) -> int:
    from .bundle import Bundle
    from .bundle_info import describe, lines

    info = describe(Bundle.load(args.bundle))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(lines(info)))
    return 0
