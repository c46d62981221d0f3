"""``iplap run`` and ``iplap prepare``: the runtime's subcommands and their handlers.

Every flag is checked, and every input file looked at, before a model is loaded: a wrong
path or setting fails in milliseconds.
"""

from __future__ import annotations

import sys
import time

from ..errors import AvatarError, IplapError
from ..flags import path_arg
from .constants import BACKENDS, DEFAULT_CRF, DEFAULT_REFS, MAX_CRF, MAX_REFS, MIN_CRF, MIN_REFS, MISSING_FACE_MODES

#: Options that only the face's preparation uses (``run --avatar`` has them in the avatar).
PREPARE_OPTIONS = {"face_mode": "--static/--track", "on_missing_face": "--on-missing-face", "smooth": "--smooth"}


def register(sub) -> None:
    _register_run(sub)
    _register_prepare(sub)


def _add_runtime_options(p) -> None:
    p.add_argument("--bundle", type=path_arg, required=True, help="model bundle folder (from iplap export)")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help="inference backend (default %(default)s)")
    p.add_argument("--device", default="CPU", help="OpenVINO device: CPU, GPU, AUTO, ... (default CPU)")
    p.add_argument("--threads", type=int, default=0, help="threads for inference (default: all cores)")
    p.add_argument("--cache-dir", type=path_arg, help="OpenVINO model cache folder")
    p.add_argument("--refs", type=int, default=DEFAULT_REFS,
                   help=f"number of reference images N, {MIN_REFS} to {MAX_REFS} (default {DEFAULT_REFS})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


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

    backend = BackendConfig(backend=args.backend, device=args.device, threads=args.threads, cache_dir=args.cache_dir)
    return PipelineConfig(backend=backend, refs=args.refs, face_mode=getattr(args, "face_mode", None) or "static",
                          on_missing_face=getattr(args, "on_missing_face", None) or "pass",
                          smoothing=bool(getattr(args, "smooth", None)))


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
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args) -> int:
    from .constants import check_crf
    from .files import check_input_file
    from .media import check_output_path
    from .pipeline import Pipeline

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
    pipeline = Pipeline(args.bundle, config)
    face = pipeline.load_avatar(args.avatar) if args.avatar else args.face
    loading = time.perf_counter() - start
    report = pipeline.render(face, args.audio, args.out, crf=args.crf, show_progress=not args.quiet)
    _print_timing(report, str(report.path), loading)
    return 0


def _register_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="do the per-face work once: an avatar file for fast runs",
                       description="Decode and track the face, choose the references and compute their "
                                   "features, and write them with the face file into one avatar file.")
    _add_runtime_options(p)
    _add_prepare_options(p)
    p.add_argument("--face", type=path_arg, required=True, help="face video or image")
    p.add_argument("--out", type=path_arg, required=True, help="avatar file to write (.avatar)")
    p.set_defaults(handler=_cmd_prepare)


def _cmd_prepare(args) -> int:
    from .files import check_input_file
    from .media import check_output_path
    from .pipeline import Pipeline

    config = _config(args)
    check_input_file(args.face, "face")
    check_output_path(args.out)
    avatar = Pipeline(args.bundle, config).prepare(args.face, show_progress=not args.quiet)
    path = avatar.save(args.out)
    print(f"wrote avatar {path}: {avatar.n_frames} frames, {avatar.references.count} references "
          f"({avatar.references.distinct} distinct)", file=sys.stderr)
    return 0
