"""Loading the official IP_LAP checkpoints.

The files are ``torch.save`` dicts ``{"state_dict", "optimizer", "global_step",
"global_epoch"}``; keys may carry one ``module.`` prefix (DataParallel). Loading is safe
(``weights_only=True``: a pickle that would run code is refused) and strict: every key
but the renderer's training-only ``perceptual.*`` must be present with its shape.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, first_line
from .landmark_generator import LandmarkGenerator
from .renderer import Renderer

#: Official file names, as published by the original project.
LANDMARK_GENERATOR_FILE = "landmarkgenerator_checkpoint.pth"
RENDERER_FILE = "renderer_checkpoint.pth"

#: Keys present in official renderer checkpoints that inference does not use.
RENDERER_IGNORED_PREFIXES = ("perceptual.",)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's state_dict, with one leading ``module.`` stripped from each key."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the checkpoint file is empty")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know: such a file runs code to load.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"{path}: refused: loading it would run code ({found.group(1)}); "
                                  "only plain tensor checkpoints are accepted") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file (unreadable pickle)") from None
    except PermissionError:
        raise CheckpointError(f"{path}: cannot be read (permission denied)") from None
    except Exception as exc:  # noqa: BLE001
        # torch.load reports a file that is not a checkpoint with whatever its unpickler or
        # zip reader tripped on (KeyError for a text file, RuntimeError, EOFError, ...):
        # every one of them means "not a checkpoint", said on one line.
        raise CheckpointError(f"{path}: not a PyTorch checkpoint file ({type(exc).__name__}: "
                              f"{first_line(exc)[:120]})") from None
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state = checkpoint["state_dict"]
    else:
        raise CheckpointError(f"{path}: not an IP_LAP checkpoint: no 'state_dict' entry")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not an IP_LAP checkpoint: 'state_dict' is not a dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def load_into(model: nn.Module, path: str | Path, ignore_prefixes: tuple[str, ...] = ()) -> nn.Module:
    """Load a checkpoint into ``model`` strictly, then return it in eval mode.

    Missing keys, unexpected keys and shape mismatches are errors naming the first key.
    """
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(ignore_prefixes)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing key '{missing[0]}'{more}: is this the right checkpoint?")
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{path}: unexpected key '{extra[0]}'{more}: is this the right checkpoint?")
    for key, value in expected.items():
        # torch itself accepts a 1-element vector for a 0-d buffer (num_batches_tracked);
        # the stand-in checkpoints store them that way.
        legacy_scalar = value.dim() == 0 and tuple(state[key].shape) == (1,)
        if tuple(state[key].shape) != tuple(value.shape) and not legacy_scalar:
            raise CheckpointError(f"{path}: key '{key}' has shape {tuple(state[key].shape)}, "
                                  f"expected {tuple(value.shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_landmark_generator(path: str | Path) -> LandmarkGenerator:
    return load_into(LandmarkGenerator(), path)


def load_renderer(path: str | Path) -> Renderer:
    return load_into(Renderer(), path, ignore_prefixes=RENDERER_IGNORED_PREFIXES)
