"""Writing the face models: each ``.tflite`` from the wheel, converted, checked and saved as
``NAME.onnx`` and ``openvino/NAME.xml`` (fp32), with its provenance in the metadata."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ... import __version__
from ...limits import BACKENDS, Backend
from .. import OPSET
from .check import check_detector, check_mesh
from .convert import tflite_to_onnx
from .wheel import MEDIAPIPE_VERSION, MESH, SOURCES, FaceModelSource, locate_wheel, read_model

log = logging.getLogger(__name__)


def _metadata(source: FaceModelSource) -> dict[str, str]:
    return {"producer": f"iplap {__version__}", "source": f"mediapipe {MEDIAPIPE_VERSION} {source.member}",
            "source_sha256": source.sha256, "precision": "fp32", "opset": str(OPSET),
            "converter": "iplap.export.facemodels (TFLite -> ONNX, MediaPipe custom ops as standard ops)"}


def _write_openvino(onnx_path: Path, xml_path: Path, metadata: dict[str, str]) -> list[Path]:
    from ...telemetry import import_openvino

    ov = import_openvino()
    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(str(value), ["iplap", key])
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    # compress_to_fp16 defaults to True: these graphs must keep their fp32 weights.
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return [xml_path, xml_path.with_suffix(".bin")]


def export_face_models(out_dir: Path, wheel: Path | None = None, *, check: bool = True,
                       openvino_ir: bool = True) -> dict[str, Path]:
    """Extract, convert, check and write MediaPipe's face models.

    Writes ``NAME.onnx`` for the short-range detector, the attention mesh and the
    full-range detector, and (``openvino_ir``) ``openvino/NAME.xml`` + ``.bin``.
    Returns ``{path relative to out_dir: path}`` of every file written.
    """
    import onnx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = locate_wheel(wheel)
    log.info("face models from %s", wheel.name)
    written: dict[str, Path] = {}
    for source in SOURCES:
        start = time.perf_counter()
        data = read_model(wheel, source)
        metadata = _metadata(source)
        model = tflite_to_onnx(data, source.name, metadata)
        onnx_path = out_dir / f"{source.name}.onnx"
        onnx.save(model, str(onnx_path))
        written[onnx_path.name] = onnx_path
        if check and source is not MESH:
            worst = check_detector(data, onnx_path, source.name)
            log.info("%s matches the .tflite run by OpenVINO (max abs diff %.2g)", source.name, worst)
        if openvino_ir:
            for path in _write_openvino(onnx_path, out_dir / "openvino" / f"{source.name}.xml", metadata):
                written[str(path.relative_to(out_dir))] = path
        log.info("wrote %s (%.1f MB) in %.1f s", onnx_path.name, onnx_path.stat().st_size / 1e6,
                 time.perf_counter() - start)
    if check:
        for backend in BACKENDS if openvino_ir else (Backend.ONNXRUNTIME,):
            error = check_mesh(written, backend)
            log.info("face pipeline (%s) is within %.3f px of MediaPipe on the sample photo", backend, error)
    return written
