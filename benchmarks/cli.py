"""``iplap bench``: the subcommand and its handlers (the offline grid and ``--live``).

Nothing heavy is imported until a handler runs: ``iplap --help`` stays fast.
"""

from __future__ import annotations

import sys

from ..errors import IplapError
from ..console import quiet
from ..flags import int_list, name_list, path_arg
from ..limits import BACKENDS, DEFAULT_REFS, INFERENCE_PRECISIONS
from ..runtime.constants import FPS
from . import AVATARS, BENCH_REFS, LIVE_REFS

#: ``--ov-precision``'s name for the hint the bundle was calibrated for (``iplap run``'s).
BUNDLE_HINT = "bundle"


def register(sub) -> None:
    p = sub.add_parser("bench", help="accuracy against speed for each backend, precision, N and thread count",
                       description="Measure the machine's convolution ceiling, then every configuration on fixed "
                                   "inputs made from the shipped samples, beside the original torch renderer when "
                                   "torch is installed; score each against fp32 at the same N and against the "
                                   f"original configuration (N={DEFAULT_REFS}, fp32), and end with the setting to use. Writes "
                                   "results.json, results.md and PNG plots (needs the bench extra; the ceiling "
                                   "needs the calibrate extra).")
    _add_grid_options(p)
    _add_goal_options(p)
    _add_live_options(p.add_argument_group("live (--live)"))
    _add_inbetween_options(p.add_argument_group("in-between frames on real footage (--inbetween)"))
    p.set_defaults(handler=_cmd_bench)


def _add_grid_options(p) -> None:
    """What is measured, offline and live."""
    p.add_argument("--bundle", type=path_arg, action="append",
                   help="a model bundle; repeat for several precisions (the fp32 one is the reference)")
    p.add_argument("--out", type=path_arg, help="output folder")
    p.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated (default {','.join(BACKENDS)})")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--refs", type=int_list,
                   help=f"numbers of references (default {','.join(map(str, BENCH_REFS))}; with --live "
                        f"{','.join(map(str, LIVE_REFS))})")
    p.add_argument("--threads", type=int_list, help="thread counts (default: all cores)")
    p.add_argument("--frames", type=int, default=4, help="rendered frames timed per repeat (default 4)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after warm-up (default 3)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch baseline")
    p.add_argument("--no-ceiling", action="store_true", help="skip the convolution ceiling")
    p.add_argument("--renderer-checkpoint", type=path_arg, help="checkpoint for the torch baseline (default stand-ins)")


def _add_goal_options(p) -> None:
    """What the offline grid recommends, from a new run or a saved one."""
    goal = p.add_mutually_exclusive_group()
    goal.add_argument("--budget", type=float, metavar="SECONDS_PER_FRAME",
                      help="recommend the most accurate setting (against the original configuration) within this "
                           "time per frame; without --budget or --min-psnr: the Pareto front")
    goal.add_argument("--min-psnr", type=float, metavar="DB",
                      help="recommend the fastest setting whose face PSNR against the original configuration is at "
                           "least this")
    p.add_argument("--from", dest="from_results", type=path_arg, metavar="RESULTS_JSON",
                   help="measure nothing: make the recommendation from a saved results.json")
    p.add_argument("--quick", action="store_true", help="a fast smoke run: N=5, 2 frames, 1 repeat, a short ceiling")


def _add_live_options(live) -> None:
    live.add_argument("--live", action="store_true",
                      help="measure live streams instead: sustained frame rate, first-frame and interruption "
                           "latency, and the frame rate the ceiling allows, for a photo and a video avatar; writes "
                           "live.json and live.md, and names the setting to use live")
    live.add_argument("--avatars", default=",".join(AVATARS),
                      help=f"{' and/or '.join(AVATARS)} (default both)")
    live.add_argument("--ov-precision", default=BUNDLE_HINT,
                      help="OpenVINO inference precision hints to run, comma-separated: bundle (what the bundle "
                           f"was calibrated for, as iplap run uses it), {', '.join(INFERENCE_PRECISIONS)} (f32 is "
                           "exact; default bundle)")
    live.add_argument("--live-workers", type=int_list, default=(1,),
                      help="renders in flight in the live session, comma-separated (default 1); the backend is "
                           "built for as many at once and the threads are shared among them")
    live.add_argument("--ov-fuse-flow", default="on",
                      help="OpenVINO: run flow_modulations and flow_head as one model: on (default), off, or "
                           "on,off to compare")
    live.add_argument("--live-modes", default="warp",
                      help="what a frame between two renders shows on the clock, comma-separated: hold, warp, morph "
                           "(LiveConfig.inbetween; default warp, the session's default)")
    live.add_argument("--soak", type=float, default=0.0, metavar="SECONDS",
                      help="after the grid, run each avatar's live choice for this long as an agent would "
                           "(replies, pauses, interruptions) and report its memory and latencies (default: no soak)")
    live.add_argument("--live-seconds", type=float, default=3.0,
                      help="seconds of the turn played on the wall clock per live round (default 3)")
    live.add_argument("--live-frames", type=int, default=12,
                      help="pictures timed per live round without a clock (default 12)")


def _add_inbetween_options(group) -> None:
    group.add_argument("--inbetween", action="store_true",
                       help="score in-between frames (hold, warp, morph) against real talking-head clips: their "
                            "own frames are the keyframes and the truth; writes inbetween.json, .md and .png "
                            "(the bundle is used for its face models only)")
    group.add_argument("--video", type=path_arg, action="append", default=[], metavar="CLIP",
                       help="a real talking-head clip (repeat for several)")
    group.add_argument("--keyframe-every", type=int_list, default=(2, 3, 5, 8), metavar="K,K",
                       help="keyframe spacings to score (default 2,3,5,8)")
    group.add_argument("--seconds", type=float, default=10.0, help="the first seconds of each clip (default 10)")


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
                  args.ov_fuse_flow, "--live-workers", ",".join(map(str, args.live_workers)),
                  "--live-modes", args.live_modes]
        if args.soak:
            words += ["--soak", f"{args.soak:g}"]
    if args.quick:
        words.append("--quick")
    elif args.live:
        words += ["--refs", ",".join(map(str, args.refs or LIVE_REFS)), "--live-frames", str(args.live_frames),
                  "--live-seconds", f"{args.live_seconds:g}",
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
    from .recommend import describe

    if args.budget is not None and args.budget <= 0:
        raise IplapError(f"--budget must be positive, got {args.budget:g} s/frame")
    if args.from_results is not None:
        print("\n".join(describe(_recommend_from(args))))
        return 0
    if not args.bundle or args.out is None:
        raise IplapError("iplap bench needs --bundle and --out (or --from RESULTS_JSON)")
    from .bench import BenchConfig, run_bench

    if args.inbetween:
        return _cmd_bench_inbetween(args)
    backends = name_list(args.backends, BACKENDS, "backend")
    if args.live:
        return _cmd_bench_live(args, backends)
    from ..runtime.inbetween import MODES  # numpy and OpenCV: not for `iplap --help`

    modes = name_list(args.live_modes, MODES, "--live-modes")
    options = dict(backends=backends, device=args.device, inbetween=tuple(modes), torch_baseline=not args.no_torch,
                   renderer_checkpoint=args.renderer_checkpoint, ceiling=not args.no_ceiling, budget=args.budget,
                   min_psnr=args.min_psnr, command=_bench_command(args))
    if args.threads:
        options["threads"] = args.threads
    if args.quick:
        config = BenchConfig.quick(args.bundle, args.out, **options)
    else:
        config = BenchConfig(tuple(args.bundle), args.out, refs=args.refs or BENCH_REFS, frames=args.frames,
                             repeats=args.repeats, **options)
    report = run_bench(config, show_progress=not quiet())
    print(f"wrote {args.out / 'results.md'}, results.json and plots", file=sys.stderr)
    print("\n".join(describe(report["recommendation"])))
    return 0


def _recommend_from(args) -> dict:
    """``--from``: the recommendation made again from a saved results.json (nothing measured)."""
    import json

    from .recommend import recommend

    if args.bundle or args.out:
        raise IplapError("--from makes the recommendation from a saved run; it measures nothing, so --bundle "
                         "and --out have no effect")
    try:
        results = json.loads(args.from_results.read_text())["results"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IplapError(f"{args.from_results} is not a results.json of iplap bench ({exc})") from None
    return recommend(results, args.budget, args.min_psnr)


def _cmd_bench_live(args, backends: tuple[str, ...]) -> int:
    from .live import LiveBenchConfig, run_live_bench

    if args.budget is not None or args.min_psnr is not None:
        raise IplapError(f"--live chooses the most accurate setting that sustains {FPS} fps; --budget and "
                         "--min-psnr are for the offline grid")
    options = _live_options(args, backends)
    if args.quick:
        config = LiveBenchConfig.quick(args.bundle, args.out, **options)
    else:
        config = LiveBenchConfig(tuple(args.bundle), args.out, frames=args.live_frames, repeats=args.repeats,
                                 realtime_seconds=args.live_seconds, **options)
    report = run_live_bench(config, show_progress=not quiet())
    print(f"wrote {args.out / 'live.md'} and live.json", file=sys.stderr)
    for avatar, c in report["choice"].items():
        rate = f"sustains {FPS} fps" if c["sustains"] else f"{c['fps']:.2f} pictures/s (every {c['k']}th frame)"
        print(f"live, {avatar}: {c['label']}: {rate}")
    return 0


def _cmd_bench_inbetween(args) -> int:
    import shlex

    from .inbetween import InbetweenBenchConfig, run_inbetween_bench

    if len(args.bundle) != 1:
        raise IplapError("--inbetween takes one --bundle (for its face models)")
    if not args.video:
        raise IplapError("--inbetween needs at least one --video CLIP of real talking-head footage")
    missing = [str(v) for v in args.video if not v.is_file()]
    if missing:
        raise IplapError(f"video not found: {missing[0]}")
    if not args.keyframe_every or min(args.keyframe_every) < 2:
        raise IplapError("--keyframe-every takes spacings of 2 or more (1 has no frame in between)")
    if args.seconds <= 0:
        raise IplapError(f"--seconds must be positive, got {args.seconds:g}")
    words = ["iplap", "bench", "--inbetween", "--bundle", str(args.bundle[0]), "--out", str(args.out)]
    for video in args.video:
        words += ["--video", str(video)]
    words += ["--keyframe-every", ",".join(map(str, args.keyframe_every)), "--seconds", f"{args.seconds:g}"]
    config = InbetweenBenchConfig(args.bundle[0], tuple(args.video), args.out, keyframe_every=args.keyframe_every,
                                  seconds=args.seconds)
    run_inbetween_bench(config, command=shlex.join(words), show_progress=not quiet())
    print(f"wrote {args.out / 'inbetween.md'}, inbetween.json and inbetween.png", file=sys.stderr)
    return 0


def _live_options(args, backends: tuple[str, ...]) -> dict:
    """The ``LiveBenchConfig`` settings the flags give, checked."""
    hints = name_list(args.ov_precision, (BUNDLE_HINT, *INFERENCE_PRECISIONS), "--ov-precision")
    fusions = tuple(f.strip() for f in args.ov_fuse_flow.split(",") if f.strip())
    if not fusions or any(f not in ("on", "off") for f in fusions):
        raise IplapError(f"unknown --ov-fuse-flow {args.ov_fuse_flow!r}: choose on, off or on,off")
    if any(w < 1 for w in args.live_workers):
        raise IplapError(f"--live-workers must be 1 or more, got {','.join(map(str, args.live_workers))}")
    from ..runtime.inbetween import MODES  # numpy and OpenCV: not for `iplap --help`

    modes = name_list(args.live_modes, MODES, "--live-modes")
    options = dict(backends=backends, device=args.device, inbetween=tuple(modes),
                   avatars=tuple(a.strip() for a in args.avatars.split(",") if a.strip()),
                   ov_precisions=tuple(None if h == BUNDLE_HINT else h for h in hints),
                   fuse_flow=tuple(f == "on" for f in dict.fromkeys(fusions)),
                   workers=tuple(args.live_workers), soak_seconds=args.soak,
                   ceiling=not args.no_ceiling, command=_bench_command(args))
    if args.threads:
        options["threads"] = tuple(args.threads)
    if args.refs:
        options["refs"] = tuple(args.refs)
    return options
