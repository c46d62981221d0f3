"""MediaPipe's face models, taken from the pinned mediapipe wheel and converted to ONNX and OpenVINO IR.

IP_LAP's landmarks are MediaPipe FaceMesh points (0.10.21, ``refine_landmarks=True``). The
runtime needs the same numbers without mediapipe or TensorFlow, so this package, one
module a step:

1. :mod:`.wheel` finds the mediapipe 0.10.21 wheel (an explicit path,
   ``$IPLAP_MEDIAPIPE_WHEEL``, or a ``pip download`` into the ``wheels`` folder of the
   user's cache, :func:`iplap.cache.cache_dir`), reads the ``.tflite`` files out of the zip
   and checks each one's sha256 against the pinned hash;
2. :mod:`.tflite_reader` reads a ``.tflite`` flatbuffer into a small graph model;
3. :mod:`.convert` converts each graph to ONNX with the same signature (NHWC input, the
   TFLite input and output names and shapes; NCHW inside). The attention mesh model uses
   three MediaPipe custom ops, which :mod:`.mediapipe_ops` writes out with standard ONNX
   ops. ``PRELU`` becomes ``relu(x) + alpha * min(x, 0)`` (bit-identical, and twice as
   fast in onnxruntime); fp16 weights are widened to fp32 (exactly) and sparse ones
   densified;
4. :mod:`.check` checks each detector against OpenVINO running the ``.tflite`` itself, and
   the mesh through the whole runtime pipeline (both backends) against landmarks mediapipe
   gave on the sample photo;
5. :mod:`.write` (:func:`export_face_models`) runs the steps and writes ``NAME.onnx`` and
   ``openvino/NAME.xml`` (fp32, ``compress_to_fp16=False``), each with its provenance
   (wheel version, tflite sha256) in the metadata.

The file stems are the runtime's (:data:`iplap.runtime.face.files.MODEL_STEMS`), so what is
written here is what the tracker loads. Needs ``onnx``, ``openvino`` and ``tflite`` (the
flatbuffer schema) at export time only.
"""

from .convert import tflite_to_onnx
from .wheel import (DETECTOR, FULL_RANGE_DETECTOR, MEDIAPIPE_VERSION, MESH, SOURCES, WHEEL_ENV, FaceModelExportError,
                    FaceModelSource, locate_wheel, read_model)
from .write import export_face_models

__all__ = ["DETECTOR", "FULL_RANGE_DETECTOR", "MEDIAPIPE_VERSION", "MESH", "SOURCES", "WHEEL_ENV",
           "FaceModelExportError", "FaceModelSource", "export_face_models", "locate_wheel", "read_model",
           "tflite_to_onnx"]
