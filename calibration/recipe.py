"""What ``iplap calibrate`` does, as validated dataclasses: the recipe, the gate, the data budget.

The default recipe (:func:`default_recipe`) was settled by measuring the end-to-end error
that quantizing each graph, and each layer group inside a graph, adds (``iplap calibrate
--sensitivity`` measures the per-graph figures again on the user's data and writes them
into the manifest). Node patterns are Python regular expressions matched with
``re.match`` against the ONNX node names; the OpenVINO IR keeps those names (a Conv with a
bias becomes ``<name>/WithoutBiases``), so one pattern selects the same layer in both.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ..errors import IplapError
from ..limits import INFERENCE_PRECISIONS

#: The calibration gate's default: a quantized bundle is kept only if its faces' mean PSNR
#: against the exact (fp32) bundle reaches this many dB.
MIN_GATE_PSNR_DB = 35.0
#: An int8 bundle's float work (normalisation, modulation, activations, the layers kept in
#: float) may run in bf16 on OpenVINO where the CPU has it (AMX-BF16 or AVX512-BF16): kept
#: only if the whole bundle, run so, passes the gate and loses at most this much face PSNR
#: against the f32 hint's measurement.
MAX_FLOAT_HINT_LOSS_DB = 0.5

PRECISIONS = ("int8", "bf16", "fp16")
ORT_METHODS = ("minmax", "percentile", "entropy")
NNCF_PRESETS = ("performance", "mixed")
OVERFLOW_FIXES = ("disable", "first_layer", "enable")

#: OpenVINO's inference precision hints, by name (f32 is exact).
F32_HINT, BF16_HINT, F16_HINT = INFERENCE_PRECISIONS
#: The OpenVINO inference precision hint each bundle precision is meant to run with (the
#: manifest's ``openvino_inference_precision``). int8 asks for f32 so that the layers kept
#: in float run as the gate measured them, also on CPUs whose default is bf16.
OPENVINO_HINT = {"int8": F32_HINT, "bf16": BF16_HINT, "fp16": F16_HINT}


class RecipeError(IplapError):
    """A calibration recipe, gate or data option is invalid."""


@dataclass(frozen=True)
class GraphRecipe:
    """How one graph is treated.

    Attributes:
        quantize: quantize this graph at all (False keeps it fp32 on both backends).
        exclude: regular expressions (``re.match``) over node names whose layers stay fp32.
        reason: why, in a sentence (written into the manifest).
        transformer: the graph is a transformer (NNCF ``ModelType.TRANSFORMER``).
    """

    quantize: bool = True
    exclude: tuple[str, ...] = ()
    reason: str = ""
    transformer: bool = False

    def __post_init__(self):
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise RecipeError(f"bad node pattern {pattern!r}: {exc}") from None

    def excluded(self, names) -> list[str]:
        """The names among ``names`` that an exclude pattern matches."""
        return [n for n in names if any(re.match(p, n) for p in self.exclude)]


@dataclass(frozen=True)
class OrtOptions:
    """onnxruntime static QDQ quantization (``quantize_static``).

    Attributes:
        method: activation calibration: ``minmax`` (default: never clips a range seen in
            calibration, and reduces each tensor inside the graph, so memory stays flat),
            ``percentile`` or ``entropy`` (both keep every intermediate tensor of every
            sample in memory: only for small data).
        percentile: the percentile of the ``percentile`` method.
        moving_average: ``minmax`` with a moving average of each sample's range.
        per_channel: per-output-channel weight scales.
        reduce_range: 7-bit weights. onnxruntime's x86 kernels without VNNI (AVX2) add
            u8 x s8 products in pairs into int16, which saturates with 8-bit weights; with 7
            bits it cannot, so the bundle computes the same numbers on every CPU.
        op_types: the op types to quantize: the ones that do the multiply-adds. Element-wise
            ops between them stay float, so no extra requantization error is added there.
        shuffle_in_int8: run DepthToSpace (the pixel shuffle) on the 8-bit output of the
            quantized convolution before it rather than on its float copy: exact (a
            permutation commutes with per-tensor dequantization) and a quarter of the bytes.
        rewrites: exact graph rewrites applied before quantizing (:mod:`.rewrite`): by
            default the narrow float convolutions are blocked and SPADE's residual is
            folded, which onnxruntime runs faster (measured per operator; see docs/benchmarks.md).
    """

    method: str = "minmax"
    percentile: float = 99.999
    moving_average: bool = False
    per_channel: bool = True
    reduce_range: bool = True
    op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul")
    shuffle_in_int8: bool = True
    rewrites: tuple[str, ...] = ("block_narrow_convs", "fold_spade_residual")

    def __post_init__(self):
        _check_rewrites(self.rewrites)
        if self.method not in ORT_METHODS:
            raise RecipeError(f"unknown onnxruntime calibration method {self.method!r}: choose "
                              f"{', '.join(ORT_METHODS)}")
        if not 90.0 < self.percentile <= 100.0:
            raise RecipeError(f"percentile must be in (90, 100], got {self.percentile}")


@dataclass(frozen=True)
class NncfOptions:
    """NNCF post-training quantization of the OpenVINO IR (``nncf.quantize``).

    Attributes:
        preset: ``mixed`` (asymmetric activations: the SPADE and LeakyReLU activations are
            not centred on zero) or ``performance`` (symmetric).
        fast_bias_correction: correct the bias shift that weight quantization causes.
        overflow_fix: 7-bit weights, so that x86 CPUs without VNNI do not saturate their
            int16 pair sums: ``enable`` (all layers; default, so the bundle computes the same
            numbers on every CPU), ``first_layer`` (NNCF's default) or ``disable``.
        float_types: op types whose inputs NNCF leaves in float. By default the SPADE and
            AdaIN modulation (instance norm, ``x * gamma + beta``): NNCF would otherwise
            quantize both operands of every Multiply and Add there.
        rewrites: exact graph rewrites applied to the ONNX graph before it is converted and
            quantized (:mod:`.rewrite`). By default only the narrow float convolutions are
            blocked: OpenVINO fuses SPADE's original arithmetic better than the folded form.
    """

    preset: str = "mixed"
    fast_bias_correction: bool = True
    overflow_fix: str = "enable"
    float_types: tuple[str, ...] = ("Add", "Multiply", "MVN")
    rewrites: tuple[str, ...] = ("block_narrow_convs",)

    def __post_init__(self):
        _check_rewrites(self.rewrites)
        if self.preset not in NNCF_PRESETS:
            raise RecipeError(f"unknown NNCF preset {self.preset!r}: choose {', '.join(NNCF_PRESETS)}")
        if self.overflow_fix not in OVERFLOW_FIXES:
            raise RecipeError(f"unknown overflow fix {self.overflow_fix!r}: choose {', '.join(OVERFLOW_FIXES)}")


def _check_rewrites(names: tuple[str, ...]) -> None:
    from .rewrite import REWRITES  # numpy and the rewrites: not for `iplap --help`

    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise RecipeError(f"unknown graph rewrite {unknown[0]!r}: choose from {', '.join(REWRITES)}")


# The convolutions that predict geometry or the logits of a [0, 1] output: an int8 step
# there moves every warped pixel or shifts every output colour, and they are cheap (7x7
# convolutions to 1-3 channels). The sigmoids after them are never quantized: only
# multiply-add ops are (onnxruntime ``op_types``; NNCF leaves Sigmoid in float).
FLOW_HEAD_EXCLUDE = (r"/conv_4/", r"/conv_5/conv_5\.2/")
TRANSLATION_EXCLUDE = (r"/translation/conv1/", r"/translation/conv_last/")


_LANDMARK_FP32 = ("kept fp32: the landmark generator is ~1% of a rendered frame's multiply-adds, and its error "
                  "moves every sketch line (the landmark gate is 0.5 px)")


def default_graphs() -> dict[str, GraphRecipe]:
    """The default per-graph recipe (the measured figures are in the final report and
    ``--sensitivity`` measures them again on the user's data)."""
    return {
        **{name: GraphRecipe(quantize=False, reason=_LANDMARK_FP32) for name in
           ("landmark_mel_encoder", "landmark_pose_encoder", "landmark_ref_encoder")},
        "landmark_fusion": GraphRecipe(quantize=False, transformer=True, reason=_LANDMARK_FP32),
        "reference_encoder": GraphRecipe(
            quantize=False,
            reason="kept fp32: runs once per video (<0.1% of the time), and its h1/h2 feed every frame's warp"),
        "flow_modulations": GraphRecipe(
            reason="int8: 3x3 convolutions that predict the SPADE gamma/beta maps"),
        "flow_head": GraphRecipe(
            exclude=FLOW_HEAD_EXCLUDE,
            reason="int8 except the flow convolution conv_4 and the fusion-weight logits conv_5.2 (before the "
                   "sigmoid): they set where every reference pixel lands and how references mix"),
        "translation": GraphRecipe(
            exclude=TRANSLATION_EXCLUDE,
            reason="int8 except the first convolution (on the face and sketches) and the last one, the logits "
                   "of the output colours (together 1.3% of its multiply-adds)"),
    }


@dataclass(frozen=True)
class Recipe:
    """A complete quantization recipe.

    Attributes:
        precision: ``int8`` (ONNX QDQ + NNCF IR), ``bf16`` (IR unchanged, OpenVINO runs it
            with the bf16 inference precision hint) or ``fp16`` (IR weights compressed to
            fp16, for Intel GPUs). The ONNX files stay fp32 for bf16 and fp16.
        graphs: per-graph treatment (int8 only).
        ort: onnxruntime quantizer options.
        nncf: NNCF options.
    """

    precision: str = "int8"
    graphs: dict[str, GraphRecipe] = field(default_factory=default_graphs)
    ort: OrtOptions = field(default_factory=OrtOptions)
    nncf: NncfOptions = field(default_factory=NncfOptions)

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise RecipeError(f"unknown precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        # Imported here, not above: ``iplap --help`` reads this module, and the runtime is heavy.
        from ..runtime.bundle import GRAPH_BY_NAME

        unknown = set(self.graphs) - set(GRAPH_BY_NAME)
        if unknown:
            raise RecipeError(f"the recipe names unknown graphs: {', '.join(sorted(unknown))}")
        missing = set(GRAPH_BY_NAME) - set(self.graphs)
        if missing:
            raise RecipeError(f"the recipe does not say how to treat: {', '.join(sorted(missing))}")

    def graph(self, name: str) -> GraphRecipe:
        return self.graphs[name]

    @property
    def quantized_graphs(self) -> list[str]:
        from ..runtime.bundle import GRAPH_NAMES

        return [name for name in GRAPH_NAMES if self.graphs[name].quantize]

    def with_graphs(self, **changes: GraphRecipe) -> Recipe:
        return dataclasses.replace(self, graphs={**self.graphs, **changes})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Gate:
    """The accuracy a calibrated bundle must reach on the held-out data, against fp32.

    Attributes:
        min_psnr: mean PSNR (dB) of the generated 128x128 faces.
        max_landmark_mean_px: mean landmark error, pixels of a 128 px crop.
        min_ssim: mean SSIM of the faces (None: reported, not gated).
        max_landmark_max_px: largest landmark error (None: reported, not gated).
    """

    min_psnr: float = MIN_GATE_PSNR_DB
    max_landmark_mean_px: float = 0.5
    min_ssim: float | None = None
    max_landmark_max_px: float | None = None

    def failures(self, metrics: dict) -> list[str]:
        """What ``metrics`` (see :class:`iplap.calibration.evaluate.Metrics`) misses, in words."""
        failed = []
        if metrics["face_psnr_db"] < self.min_psnr:
            failed.append(f"face PSNR {metrics['face_psnr_db']:.2f} dB < {self.min_psnr:g}")
        if metrics["landmark_mean_px"] > self.max_landmark_mean_px:
            failed.append(f"mean landmark error {metrics['landmark_mean_px']:.3f} px > {self.max_landmark_mean_px:g}")
        if self.min_ssim is not None and metrics["face_ssim"] < self.min_ssim:
            failed.append(f"face SSIM {metrics['face_ssim']:.4f} < {self.min_ssim:g}")
        if self.max_landmark_max_px is not None and metrics["landmark_max_px"] > self.max_landmark_max_px:
            failed.append(f"max landmark error {metrics['landmark_max_px']:.3f} px > {self.max_landmark_max_px:g}")
        return failed

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class DataBudget:
    """How much of the calibration clips is run and kept (bounds time, memory and disk).

    Attributes:
        calibration_frames: rendered frames per calibration clip, at most.
        heldout_frames: rendered frames per held-out clip, at most (the gate's data).
        samples_per_graph: recorded input sets per graph, at most, spread evenly over the frames.
        flow_head_batch: references kept per recorded flow_head input (its h2 is
            N x 256 x 64 x 64 floats per frame; the references rotate from frame to frame).
        heldout_fraction: the share of the clips held out when there are several (at
            least one clip); a single clip is split in time instead.
    """

    calibration_frames: int = 24
    heldout_frames: int = 12
    samples_per_graph: int = 16
    flow_head_batch: int = 8
    heldout_fraction: float = 0.25

    def __post_init__(self):
        for name in ("calibration_frames", "heldout_frames", "samples_per_graph", "flow_head_batch"):
            if getattr(self, name) < 1:
                raise RecipeError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise RecipeError(f"heldout fraction must be in (0, 1), got {self.heldout_fraction}")
