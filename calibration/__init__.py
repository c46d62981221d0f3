"""Calibration and quantization of model bundles (needs onnx and nncf: the calibrate extra).

``iplap calibrate`` turns an fp32 bundle into an int8 (or bf16 / fp16) bundle that passed
an accuracy gate against fp32 on held-out clips. One module per concern:

* :mod:`.recipe` - what is quantized how (dataclasses), the gate's thresholds, the data budget;
* :mod:`.record` - calibration clips, and the graph inputs recorded while the fp32 pipeline runs;
* :mod:`.quantize_ort` - onnxruntime static QDQ; :mod:`.quantize_ov` - NNCF, fp16 IR;
* :mod:`.candidates` - each graph's quantized (or fp16, or bf16-hinted) candidate for a backend;
* :mod:`.evaluate` - candidate graphs against fp32, end to end (PSNR, SSIM, landmark error);
* :mod:`.gate` - the accuracy gate on one backend, with graphs falling back to fp32;
* :mod:`.bundle` - writing the calibrated bundle; :mod:`.manifest` - what its manifest records;
* :mod:`.config` - what ``calibrate`` is asked to do; :mod:`.calibrate` - the steps together;
* :mod:`.cli` - the ``calibrate`` subcommand.
"""
