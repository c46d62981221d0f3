"""The IP_LAP renderer: a dense flow network and a translation network.

Parameter names follow the official checkpoint (``flow_module.*``, ``translation.*``).
Besides the original forward pass, the flow network exposes the three pieces of the
exact split that the runtime uses (see ``../shared/reference`` and ``iplap.export``):

* :meth:`DenseFlowNetwork.encode_reference` - h1, h2 of a reference: per video;
* :meth:`DenseFlowNetwork.modulations` - every SPADE gamma/beta of the driving
  sketches: per frame, shared by all references;
* :meth:`DenseFlowNetwork.predict_flow` - flow and fusion weight: per frame and reference.

Warping and fusion are in :mod:`iplap.models.warp` (torch) and in the runtime's Numba
kernel; both follow the original: ``grid_sample`` (bilinear, zeros, align_corners=False)
and the weighted sum over references divided by the sum of weights + 1e-5.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .landmark_generator import ConvNormAct, audio_encoder
from .warp import fuse_warped

Modulations = tuple[torch.Tensor, ...]


class SPADELayer(nn.Module):
    """Instance norm modulated by gamma/beta maps predicted from a conditioning image.

    ``conv1`` has no activation in the original. ``instance_norm`` has no parameters.
    """

    def __init__(self, channels: int, modulation_channels: int, hidden: int = 256):
        super().__init__()
        self.instance_norm = nn.InstanceNorm2d(channels)
        self.conv1 = nn.Conv2d(modulation_channels, hidden, 3, 1, 1)
        self.gamma = nn.Conv2d(hidden, channels, 3, 1, 1)
        self.beta = nn.Conv2d(hidden, channels, 3, 1, 1)

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.conv1(cond)
        return self.gamma(hidden), self.beta(hidden)

    def modulate(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        norm = self.instance_norm(x)
        return norm + norm * gamma + beta

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.modulate(x, *self.modulation(cond))


class SPADE(nn.Module):
    """SPADE -> LeakyReLU -> conv, twice."""

    def __init__(self, channels: int, modulation_channels: int, hidden: int = 256):
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.spade_layer_1 = SPADELayer(channels, modulation_channels, hidden)
        self.spade_layer_2 = SPADELayer(channels, modulation_channels, hidden)

    def modulations(self, cond: torch.Tensor) -> Modulations:
        return (*self.spade_layer_1.modulation(cond), *self.spade_layer_2.modulation(cond))

    def modulated(self, x: torch.Tensor, mods: Modulations) -> torch.Tensor:
        g1, b1, g2, b2 = mods
        x = self.conv_1(F.leaky_relu(self.spade_layer_1.modulate(x, g1, b1), 0.2))
        return self.conv_2(F.leaky_relu(self.spade_layer_2.modulate(x, g2, b2), 0.2))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.modulated(x, self.modulations(cond))


class AdaINLayer(nn.Module):
    """Instance norm modulated by per-channel gamma/beta from a vector (the audio)."""

    def __init__(self, channels: int, modulation_dim: int, hidden: int = 128):
        super().__init__()
        self.InstanceNorm2d = nn.InstanceNorm2d(channels)
        self.mlp_shared = nn.Sequential(nn.Linear(modulation_dim, hidden), nn.ReLU())
        self.mlp_gamma = nn.Linear(hidden, channels)
        self.mlp_beta = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        actv = self.mlp_shared(code.flatten(1))
        gamma = self.mlp_gamma(actv)[:, :, None, None]
        beta = self.mlp_beta(actv)[:, :, None, None]
        return self.InstanceNorm2d(x) * (1 + gamma) + beta


class AdaIN(nn.Module):
    """AdaIN -> LeakyReLU -> conv, twice."""

    def __init__(self, channels: int, modulation_dim: int):
        super().__init__()
        self.conv_1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv_2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.adain_layer_1 = AdaINLayer(channels, modulation_dim)
        self.adain_layer_2 = AdaINLayer(channels, modulation_dim)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(F.leaky_relu(self.adain_layer_1(x, code), 0.2))
        return self.conv_2(F.leaky_relu(self.adain_layer_2(x, code), 0.2))


class DenseFlowNetwork(nn.Module):
    """Predicts, for each reference, a flow field and a fusion weight towards the driving sketches."""

    def __init__(self, num_channel: int = 6, num_channel_modulation: int = 3 * 5, hidden_size: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(num_channel, 32, 7, 1, 3)
        self.conv1_bn = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 256, 3, 2, 1)
        self.conv2_bn = nn.BatchNorm2d(256)
        self.spade_layer_1 = SPADE(256, num_channel_modulation, hidden_size)
        self.spade_layer_2 = SPADE(256, num_channel_modulation, hidden_size)
        self.spade_layer_4 = SPADE(64, num_channel_modulation, hidden_size)
        self.conv_4 = nn.Conv2d(64, 2, 7, 1, 3)
        self.conv_5 = nn.Sequential(nn.Conv2d(64, 32, 7, 1, 3), nn.ReLU(), nn.Conv2d(32, 1, 7, 1, 3), nn.Sigmoid())

    # -- the exact split -------------------------------------------------------------------
    def encode_reference(self, ref_img: torch.Tensor, ref_sketch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, 128, 128) x2 -> h1 (N, 32, 128, 128), h2 (N, 256, 64, 64)."""
        h1 = F.relu(self.conv1_bn(self.conv1(torch.cat((ref_img, ref_sketch), dim=1))))
        h2 = F.relu(self.conv2_bn(self.conv2(h1)))
        return h1, h2

    def modulations(self, driving: torch.Tensor) -> Modulations:
        """Driving sketches (B, 15, 128, 128) -> 12 maps: gamma, beta of every SPADE layer."""
        driving_64 = F.interpolate(driving, size=(64, 64), mode="nearest")
        return (*self.spade_layer_1.modulations(driving_64), *self.spade_layer_2.modulations(driving_64),
                *self.spade_layer_4.modulations(driving))

    def predict_flow(self, h2: torch.Tensor, mods: Modulations) -> tuple[torch.Tensor, torch.Tensor]:
        """h2 (N, 256, 64, 64) and the frame's modulations (batch 1, broadcast over N)
        -> flow (N, 2, 128, 128) in pixels, fusion weight (N, 1, 128, 128) in (0, 1)."""
        x = self.spade_layer_1.modulated(h2, mods[0:4])
        x = self.spade_layer_2.modulated(x, mods[4:8])
        x = F.pixel_shuffle(x, 2)
        x = self.spade_layer_4.modulated(x, mods[8:12])
        return self.conv_4(x), self.conv_5(x)

    # -- the original forward pass ---------------------------------------------------------
    def forward(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor, driving_sketches: torch.Tensor):
        """Original per-reference loop. ``ref_imgs``/``ref_sketches`` (B, N, 3, H, W),
        ``driving_sketches`` (B, 5, 3, H, W) -> fused (h1, h2, reference image)."""
        driving = driving_sketches.flatten(1, 2)
        flows, weights, h1s, h2s = [], [], [], []
        for n in range(ref_imgs.shape[1]):
            h1, h2 = self.encode_reference(ref_imgs[:, n], ref_sketches[:, n])
            flow, weight = self.predict_flow(h2, self.modulations(driving))
            flows.append(flow), weights.append(weight), h1s.append(h1), h2s.append(h2)
        return fuse_warped(torch.stack(h1s, 1), torch.stack(h2s, 1), ref_imgs,
                           torch.stack(flows, 1), torch.stack(weights, 1))


class TranslationNetwork(nn.Module):
    """Renders the face from the masked target, its sketches, the warped references and the audio."""

    def __init__(self):
        super().__init__()
        self.audio_encoder = audio_encoder()
        self.audio_encoder.append(ConvNormAct(512, 512, 1, 1, 0))
        self.conv1 = nn.Conv2d(3 + 3 * 5, 32, 7, 1, 3, bias=False)
        self.conv1_bn = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 256, 3, 2, 1, bias=False)
        self.conv2_bn = nn.BatchNorm2d(256)
        self.spade_1 = SPADE(256, 256)
        self.adain_1 = AdaIN(256, 512)
        self.spade_2 = SPADE(64, 32)
        self.adain_2 = AdaIN(64, 512)
        self.spade_4 = SPADE(64, 3)
        self.conv_last = nn.Conv2d(64, 3, 7, 1, 3, bias=False)

    def forward(self, translation_input: torch.Tensor, wrapped_ref: torch.Tensor, wrapped_h1: torch.Tensor,
                wrapped_h2: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        """(B, 18, 128, 128), (B, 3, 128, 128), (B, 32, 128, 128), (B, 256, 64, 64),
        mel (B, 1, 80, 16) -> face (B, 3, 128, 128) in [0, 1]."""
        x = F.relu(self.conv1_bn(self.conv1(translation_input)))
        x = F.relu(self.conv2_bn(self.conv2(x)))
        audio = self.audio_encoder(mel).flatten(1)  # (B, 512)
        x = self.adain_1(self.spade_1(x, wrapped_h2), audio)
        x = F.pixel_shuffle(x, 2)
        x = self.adain_2(self.spade_2(x, wrapped_h1), audio)
        x = self.spade_4(x, wrapped_ref)
        return torch.sigmoid(self.conv_last(F.leaky_relu(x, 0.01)))


def mask_lower_half(face: torch.Tensor) -> torch.Tensor:
    """Zero the lower half of the target face (rows h//2 and below), as the original does.

    Written as a concatenation rather than an in-place assignment, so that it exports as
    a plain Concat instead of ScatterND.
    """
    half = face.shape[2] // 2
    return torch.cat([face[:, :, :half], torch.zeros_like(face[:, :, half:])], dim=2)


class Renderer(nn.Module):
    """Flow network + translation network, with the original's inputs and outputs.

    The training-only VGG19 (``perceptual.*`` in the checkpoint) is not part of it.
    """

    def __init__(self):
        super().__init__()
        self.flow_module = DenseFlowNetwork()
        self.translation = TranslationNetwork()

    def forward(self, face_frame_img: torch.Tensor, target_sketches: torch.Tensor, ref_imgs: torch.Tensor,
                ref_sketches: torch.Tensor, audio_mels: torch.Tensor):
        """(B, 1, 3, H, W), (B, 5, 3, H, W), (B, N, 3, H, W) x2, (B, 1, 1, 80, 16)
        -> generated face (B, 3, H, W) and the fused warps (h1, h2, reference)."""
        wrapped_h1, wrapped_h2, wrapped_ref = self.flow_module(ref_imgs, ref_sketches, target_sketches)
        translation_input = torch.cat([mask_lower_half(face_frame_img[:, 0]), target_sketches.flatten(1, 2)], 1)
        face = self.translation(translation_input, wrapped_ref, wrapped_h1, wrapped_h2, audio_mels[:, 0])
        return face, wrapped_h1, wrapped_h2, wrapped_ref
