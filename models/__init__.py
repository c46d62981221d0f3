"""PyTorch definitions of IP_LAP's two models, and loading of their checkpoints.

Only the export toolchain and calibration import this package: it needs torch.
"""

from .checkpoint import (LANDMARK_GENERATOR_FILE, RENDERER_FILE, load_landmark_generator, load_renderer,
                         read_state_dict)
from .landmark_generator import LandmarkGenerator
from .renderer import DenseFlowNetwork, Renderer, TranslationNetwork
from .standin import standin_state_dict, write_standin_checkpoints

__all__ = [
    "LANDMARK_GENERATOR_FILE", "RENDERER_FILE", "LandmarkGenerator", "Renderer", "DenseFlowNetwork",
    "TranslationNetwork", "load_landmark_generator", "load_renderer", "read_state_dict",
    "standin_state_dict", "write_standin_checkpoints",
]
