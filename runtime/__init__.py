"""The torch-free runtime.

It imports only onnxruntime, openvino, numpy, opencv-python-headless, soundfile, numba,
PyAV and tqdm (``tests/test_boundary.py`` checks this). The pipeline's stages each have
a module: ``audio`` (decode, mel), ``face`` (detection and mesh), ``landmarks`` (the
original's bookkeeping), ``sketch``, ``backends`` (one factory per inference engine),
``warp`` (the Numba motion-field kernel), ``renderer``, and ``pipeline``.
"""
