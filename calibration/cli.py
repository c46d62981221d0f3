"""``iplap calibrate``: the subcommand (registered by :func:`register`) and its handler.

``iplap --help`` imports this module, so it imports only the recipe's plain dataclasses;
the runtime, onnx, onnxruntime.quantization and nncf are imported inside the handler (and
the graph names inside the ``--graphs`` check).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import IplapError
from ..limits import DEFAULT_REFS
from .recipe import (MAX_FLOAT_HINT_LOSS_DB, MIN_GATE_PSNR_DB, NNCF_PRESETS, ORT_METHODS, PRECISIONS, DataBudget,
                     Gate, NncfOptions, OrtOptions, Recipe)

_DESCRIPTION = """\
Make an int8 (or bf16 / fp16) bundle from an fp32 bundle, and keep it only if it passes an
accuracy gate. The fp32 pipeline runs on calibration clips and records the inputs every graph
really sees; the graphs are quantized from them (onnxruntime: static QDQ, per-channel weights;
OpenVINO: NNCF); then held-out clips are rendered end to end with the quantized graphs and
compared with fp32: PSNR/SSIM of the generated faces and the landmark error in pixels of a
128 px crop. Graphs that break the gate fall back to fp32, the most sensitive first. A bundle
that still fails is not written (exit code 2).

Calibration data: by default the shipped samples (two head-motion clips made from the sample
photo, with the sample speech; the second is held out). --data DIR takes every face video in
DIR with the audio file of the same name (NAME.mp4 + NAME.wav, or the video's own audio
track); the last quarter of the clips (at least one) is held out, or the end of the speech
when there is one clip. Or give pairs: --face F --audio A [--face F2 --audio A2 ...].
Needs the calibrate extra: pip install 'iplap[calibrate]'."""


def _path(value: str) -> Path:
    return Path(value).expanduser()


def _graph_list(value: str) -> tuple[str, ...]:
    # Imported here, not above: the runtime is too heavy for ``iplap --help``.
    from ..runtime.bundle import GRAPH_NAMES

    names = tuple(v.strip() for v in value.split(",") if v.strip())
    if names == ("all",):
        return GRAPH_NAMES
    unknown = [n for n in names if n not in GRAPH_NAMES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown graph {unknown[0]!r}: choose from {', '.join(GRAPH_NAMES)} or 'all'")
    return names


def register(subparsers) -> None:
    """Add the ``calibrate`` subcommand to ``iplap``'s subparsers."""
    p = subparsers.add_parser("calibrate", help="int8 / bf16 / fp16 bundles, kept only if they pass an accuracy gate",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=_path, required=True, help="the fp32 bundle (from iplap export)")
    p.add_argument("--out", type=_path, required=True, help="the calibrated bundle folder to create")
    p.add_argument("--precision", choices=PRECISIONS, default=Recipe.precision,
                   help="int8 (default; both backends), bf16 (OpenVINO CPU inference hint; the IR stays fp32) or "
                        "fp16 (OpenVINO IR with fp16 weights, for Intel GPUs)")
    _add_data_arguments(p.add_argument_group("calibration data"))
    _add_gate_arguments(p.add_argument_group("accuracy gate (held-out data, against fp32)"))
    _add_recipe_arguments(p.add_argument_group("recipe"))
    _add_running_arguments(p.add_argument_group("running"))
    p.set_defaults(handler=run_calibrate)


def _add_data_arguments(data) -> None:
    data.add_argument("--data", type=_path, metavar="DIR", help="folder of face videos with their speech (see above)")
    data.add_argument("--face", type=_path, action="append", help="a face video (repeat, with --audio)")
    data.add_argument("--audio", type=_path, action="append", help="its speech (one per --face)")
    data.add_argument("--calibration-frames", type=int, metavar="N", default=DataBudget.calibration_frames,
                      help=f"rendered frames per calibration clip, at most (default {DataBudget.calibration_frames})")
    data.add_argument("--heldout-frames", type=int, metavar="N", default=DataBudget.heldout_frames,
                      help=f"rendered frames per held-out clip, at most (default {DataBudget.heldout_frames})")
    data.add_argument("--samples", type=int, metavar="N", default=DataBudget.samples_per_graph,
                      help=f"recorded input sets per graph, at most (default {DataBudget.samples_per_graph})")
    data.add_argument("--flow-head-batch", type=int, metavar="N", default=DataBudget.flow_head_batch,
                      help=f"references kept per recorded flow_head input (default {DataBudget.flow_head_batch})")


def _add_gate_arguments(gate) -> None:
    gate.add_argument("--min-psnr", type=float, metavar="DB", default=MIN_GATE_PSNR_DB,
                      help=f"mean PSNR of the generated faces, dB (default {MIN_GATE_PSNR_DB:g})")
    gate.add_argument("--max-landmark-error", type=float, metavar="PX", default=Gate.max_landmark_mean_px,
                      help=f"mean landmark error, pixels of a 128 px crop (default {Gate.max_landmark_mean_px:g})")
    gate.add_argument("--min-ssim", type=float, metavar="SSIM", help="mean SSIM of the generated faces (default: not gated)")
    gate.add_argument("--max-landmark-error-peak", type=float, metavar="PX",
                      help="largest landmark error, pixels (default: not gated)")
    gate.add_argument("--no-fallback", action="store_true",
                      help="use the recipe as given: no graph falls back to fp32 when the gate fails")
    gate.add_argument("--sensitivity", action="store_true",
                      help="measure every graph quantized alone and record it in the manifest (slower)")


def _add_recipe_arguments(recipe) -> None:
    recipe.add_argument("--graphs", type=_graph_list, metavar="LIST",
                        help="graphs to quantize, comma-separated or 'all' (default: flow_modulations,flow_head,"
                             "translation)")
    recipe.add_argument("--no-exclude", action="store_true",
                        help="quantize every layer of those graphs (default: the flow, fusion-weight and output "
                             "layers stay fp32)")
    recipe.add_argument("--ort-method", choices=ORT_METHODS, default=OrtOptions.method,
                        help=f"onnxruntime activation calibration (default {OrtOptions.method})")
    recipe.add_argument("--no-reduce-range", action="store_true",
                        help="8-bit onnxruntime weights (default 7-bit: no int16 saturation on CPUs without VNNI)")
    recipe.add_argument("--nncf-preset", choices=NNCF_PRESETS, default=NncfOptions.preset)
    recipe.add_argument("--no-bias-correction", action="store_true", help="no NNCF fast bias correction")
    recipe.add_argument("--no-bf16-float", action="store_true",
                        help="int8: keep OpenVINO's float work (normalisation, modulation, layers kept in float) "
                             "in f32 (default: try bf16 where the CPU has it, and keep it if the gate passes and "
                             f"the face PSNR loses at most {MAX_FLOAT_HINT_LOSS_DB:g} dB)")


def _add_running_arguments(run) -> None:
    run.add_argument("--refs", type=int, metavar="N", default=DEFAULT_REFS,
                     help=f"number of reference images N (default {DEFAULT_REFS})")
    run.add_argument("--threads", type=int, metavar="N", default=0, help="inference threads (default: all cores)")
    run.add_argument("--device", default="CPU", help="OpenVINO device the openvino graphs are gated on (default CPU)")
    run.add_argument("--allow-unverified", action="store_true",
                     help="write a bf16/fp16 bundle even where this device cannot run that precision")
    run.add_argument("--workdir", type=_path, metavar="DIR", help="folder for temporary files (recorded inputs: up to a few GB)")
    run.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    run.add_argument("--formats", choices=("onnx", "openvino", "both"), default="both",
                     help="which backends to calibrate and keep in the new bundle: onnx (onnxruntime), openvino, "
                          "or both (default: both, where the source bundle holds them)")


def _clips(args):
    from .record import Clip, discover_clips

    faces, audios = args.face or [], args.audio or []
    if args.data is not None and (faces or audios):
        raise IplapError("give either --data or --face/--audio pairs, not both")
    if args.data is not None:
        return tuple(discover_clips(args.data))
    if len(faces) != len(audios):
        raise IplapError(f"give one --audio per --face ({len(faces)} faces, {len(audios)} audio files)")
    for path in [*faces, *audios]:
        if not path.is_file():
            raise IplapError(f"calibration file not found: {path}")
    return tuple(Clip(f, a) for f, a in zip(faces, audios))


def _check_extra() -> None:
    """The calibrate extra is installed (the error names it); nncf is asked about telemetry first."""
    from ..telemetry import decline_unless_chosen

    decline_unless_chosen()  # before nncf's first import: it asks for telemetry consent then
    try:
        import nncf  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as exc:
        raise IplapError(f"iplap calibrate needs the calibrate extra ({exc.name} is missing): "
                         "pip install 'iplap[calibrate]'") from None


def _recipe(args):
    import dataclasses

    from .recipe import default_graphs

    graphs = default_graphs()
    if args.graphs is not None:
        graphs = {n: dataclasses.replace(g, quantize=n in args.graphs) for n, g in graphs.items()}
    if args.no_exclude:
        graphs = {n: dataclasses.replace(g, exclude=()) for n, g in graphs.items()}
    return Recipe(precision=args.precision, graphs=graphs,
                  ort=OrtOptions(method=args.ort_method, reduce_range=not args.no_reduce_range),
                  nncf=NncfOptions(preset=args.nncf_preset, fast_bias_correction=not args.no_bias_correction))


def _config(args):
    from .config import CalibrateConfig

    recipe = _recipe(args)
    config = CalibrateConfig(
        bundle=args.bundle, out_dir=args.out, clips=_clips(args), recipe=recipe,
        gate=Gate(args.min_psnr, args.max_landmark_error, args.min_ssim, args.max_landmark_error_peak),
        budget=DataBudget(args.calibration_frames, args.heldout_frames, args.samples, args.flow_head_batch),
        refs=args.refs, threads=args.threads, device=args.device, sensitivity=args.sensitivity,
        fallback=not args.no_fallback, allow_unverified=args.allow_unverified, overwrite=args.force,
        workdir=args.workdir, float_hint=None if args.no_bf16_float else CalibrateConfig.float_hint,
        formats=None if args.formats == "both" else (args.formats,))
    return config


def _report(args, result) -> None:
    """What each backend kept, and the bundle written, on stderr."""
    for backend, r in result.backends.items():
        if r.metrics is None:
            print(f"  {backend}: unchanged (fp32)", file=sys.stderr)
            continue
        quantized = ", ".join(r.variants) or "none"
        print(f"  {backend} ({args.precision}: {quantized}; runs {r.executed_precision}): {r.metrics}",
              file=sys.stderr)
        for step in r.fallback:
            print(f"    {step['graph']} kept fp32 ({step['because']})", file=sys.stderr)
        if r.float_hint:
            verdict = "kept" if r.float_hint["kept"] else "not kept"
            print(f"    {r.float_hint['tried']} for the float work: {verdict} ({r.float_hint['because']})",
                  file=sys.stderr)
    print(f"wrote {args.precision} bundle {result.bundle.root} in {result.seconds:.0f} s; it passed the gate "
          f"(face PSNR >= {args.min_psnr:g} dB, mean landmark error <= {args.max_landmark_error:g} px)",
          file=sys.stderr)


def run_calibrate(args) -> int:
    """The handler of ``iplap calibrate``."""
    _check_extra()
    from .calibrate import calibrate

    result = calibrate(_config(args))
    _report(args, result)
    return 0
