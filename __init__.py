"""iplap: IP_LAP talking-face inference without PyTorch.

The runtime lives in :mod:`iplap.runtime`; the export toolchain (torch) in
:mod:`iplap.export`, calibration and quantization in :mod:`iplap.calibration`.
"""

__version__ = "0.1.0"
