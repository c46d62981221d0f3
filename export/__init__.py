"""Export: official (or stand-in) checkpoints -> a model bundle of ONNX and OpenVINO graphs (needs torch).

* :mod:`.bundle_writer` - ``iplap export``: the checkpoints to a verified bundle, written atomically;
* :mod:`.graphs` - the exact split of IP_LAP into the bundle's graphs;
* :mod:`.onnx_export` - one graph to ONNX and OpenVINO IR, checked against PyTorch;
* :mod:`.facemodels` - MediaPipe's face models from the pinned wheel, converted to ONNX and IR
  (a package, one module a step: the wheel, a TFLite reader, the converter and MediaPipe's
  custom ops, the checks against mediapipe, the writing; its docstring lists them).
"""

#: The ONNX opset every exported graph (the model's and the face models') is written with.
OPSET = 17
