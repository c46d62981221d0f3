"""Calibration and quantization of model bundles (needs onnx and nncf)."""
