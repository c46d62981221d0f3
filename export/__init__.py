"""Export: official (or stand-in) checkpoints -> a model bundle of ONNX and OpenVINO graphs (needs torch)."""
