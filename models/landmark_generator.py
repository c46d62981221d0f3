"""The audio-to-landmark transformer of IP_LAP, written for inference and export.

Module and parameter names follow the official checkpoint's keys
(``models/checkpoint_keys.json``), so ``load_state_dict`` takes the official file
unchanged. The transformer encoder is spelled out with plain matmuls instead of
``nn.TransformerEncoder``: it computes the same function (post-norm, ReLU, 4 heads)
but exports to a clean ONNX graph and never takes PyTorch's fused fast path.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: Frames per landmark window (T), and the transformer's width.
T_FRAMES = 5
D_MODEL = 512


class ConvNormAct(nn.Module):
    """Conv -> BatchNorm (-> + input) -> ReLU or Tanh; 1-D or 2-D."""

    def __init__(self, cin: int, cout: int, kernel_size, stride, padding, *,
                 residual: bool = False, act: str = "relu", dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.conv_block = nn.Sequential(conv(cin, cout, kernel_size, stride, padding), norm(cout))
        self.act = nn.Tanh() if act == "tanh" else nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


def audio_encoder() -> nn.Sequential:
    """The mel encoder: (B, 1, 80, 16) -> (B, 512, 1, 1). Shared by both models."""
    c = ConvNormAct
    return nn.Sequential(
        c(1, 32, 3, 1, 1), c(32, 32, 3, 1, 1, residual=True), c(32, 32, 3, 1, 1, residual=True),
        c(32, 64, 3, (3, 1), 1), c(64, 64, 3, 1, 1, residual=True), c(64, 64, 3, 1, 1, residual=True),
        c(64, 128, 3, 3, 1), c(128, 128, 3, 1, 1, residual=True), c(128, 128, 3, 1, 1, residual=True),
        c(128, 256, 3, (3, 2), 1), c(256, 256, 3, 1, 1, residual=True),
        c(256, 512, 3, 1, 0),
    )


def _landmark_encoder(stages: list[tuple[int, int, int, int]], last_residual: bool) -> nn.Sequential:
    """A 1-D conv stack over landmark points: each stage is (cin, cout, stride, n_residual)."""
    layers: list[nn.Module] = []
    for cin, cout, stride, n_res in stages:
        layers.append(ConvNormAct(cin, cout, 3, stride, 1, dims=1))
        layers += [ConvNormAct(cout, cout, 3, 1, 1, residual=True, dims=1) for _ in range(n_res)]
    layers.append(ConvNormAct(256, 512, 3, 1, 0, dims=1))
    layers.append(ConvNormAct(512, 512, 1, 1, 0, residual=last_residual, act="tanh", dims=1))
    return nn.Sequential(*layers)


class PositionalTable(nn.Module):
    """Sinusoidal positions, stored in the checkpoint as a (1, 512, 512) buffer ``pe``."""

    def __init__(self, d_model: int = D_MODEL, max_len: int = 512):
        super().__init__()
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe[None])

    def forward(self, length: int) -> torch.Tensor:
        return self.pe[:, :length]


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter layout."""

    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.nhead = nhead
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        head = d // self.nhead
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, self.nhead, head).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * (1.0 / math.sqrt(head))) @ k.transpose(-1, -2), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (ReLU), as ``nn.TransformerEncoderLayer``."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = SelfAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class _Encoder(nn.Module):
    def __init__(self, nlayers: int, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead, dim_feedforward) for _ in range(nlayers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class FusionTransformer(nn.Module):
    """Tokens [references | audio | pose] with temporal and modality embeddings."""

    POSE, AUDIO, REFERENCE = 1, 2, 3  # rows of the modality embedding (0 is padding)

    def __init__(self, nlayers: int, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.position_v = PositionalTable(d_model)
        self.position_a = PositionalTable(d_model)
        self.modality = nn.Embedding(4, d_model, padding_idx=0)
        self.transformer_encoder = _Encoder(nlayers, d_model, nhead, dim_feedforward)

    def forward(self, ref: torch.Tensor, mel: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        t = pose.shape[1]
        modality = self.modality.weight
        pose_tokens = pose + self.position_v(t) + modality[self.POSE]
        audio_tokens = mel + self.position_a(t) + modality[self.AUDIO]
        ref_tokens = ref + modality[self.REFERENCE]
        return self.transformer_encoder(torch.cat((ref_tokens, audio_tokens, pose_tokens), dim=1))


class LandmarkGenerator(nn.Module):
    """Predicts lip and jaw landmarks for a T-frame window.

    Inputs: ``mels`` (B, T, 1, 80, 16), ``pose`` (B, T, 2, 74), ``ref_pose`` (B, Nl, 2, 74),
    ``ref_content`` (B, Nl, 2, 57). Output: (B*T, 2, 57), jaw (17) then lips (40),
    in the face crop's normalised coordinates.
    """

    def __init__(self, T: int = T_FRAMES, d_model: int = D_MODEL, nlayers: int = 4, nhead: int = 4,
                 dim_feedforward: int = 1024):
        super().__init__()
        self.T = T
        self.mel_encoder = audio_encoder()
        self.mel_encoder.append(ConvNormAct(512, 512, 1, 1, 0, act="tanh"))
        self.ref_encoder = _landmark_encoder(
            [(2, 4, 1, 0), (4, 8, 2, 2), (8, 16, 2, 2), (16, 32, 2, 2), (32, 64, 2, 2),
             (64, 128, 2, 2), (128, 256, 2, 1)], last_residual=False)
        self.pose_encoder = _landmark_encoder(
            [(2, 4, 1, 0), (4, 8, 1, 2), (8, 16, 2, 2), (16, 32, 2, 2), (32, 64, 2, 2),
             (64, 128, 2, 2), (128, 256, 2, 2)], last_residual=True)
        self.fusion_transformer = FusionTransformer(nlayers, d_model, nhead, dim_feedforward)
        self.mouse_keypoint_map = nn.Linear(d_model, 40 * 2)
        self.jaw_keypoint_map = nn.Linear(d_model, 17 * 2)
        self.Norm = nn.LayerNorm(d_model)

    # The four parts below are what the bundle's landmark graphs compute: the encoders run
    # once per frame (mel, pose) or once per avatar (references), only ``fuse`` per window.
    def encode_mels(self, mels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 80, 16) mel windows -> (B, 512) embeddings."""
        return self.Norm(self.mel_encoder(mels).flatten(1))

    def encode_poses(self, pose: torch.Tensor) -> torch.Tensor:
        """(B, 2, 74) pose landmarks -> (B, 512) embeddings."""
        return self.Norm(self.pose_encoder(pose).flatten(1))

    def encode_references(self, ref_pose: torch.Tensor, ref_content: torch.Tensor) -> torch.Tensor:
        """(B, 2, 74) and (B, 2, 57) reference landmarks -> (B, 512) embeddings."""
        return self.Norm(self.ref_encoder(torch.cat([ref_pose, ref_content], dim=2)).flatten(1))

    def fuse(self, ref_emb: torch.Tensor, mel_emb: torch.Tensor, pose_emb: torch.Tensor) -> torch.Tensor:
        """(B, Nl, 512), (B, T, 512), (B, T, 512) -> content (B*T, 2, 57)."""
        b, t = mel_emb.shape[:2]
        n_ref = ref_emb.shape[1]
        tokens = self.fusion_transformer(ref_emb, mel_emb, pose_emb)
        lips = self.mouse_keypoint_map(tokens[:, n_ref:n_ref + t])  # (B, T, 80)
        jaw = self.jaw_keypoint_map(tokens[:, n_ref + t:])  # (B, T, 34)
        content = torch.cat([jaw, lips], dim=2).reshape(b * t, -1, 2)  # (B*T, 57, 2)
        return content.permute(0, 2, 1)

    def forward(self, mels: torch.Tensor, pose: torch.Tensor, ref_pose: torch.Tensor,
                ref_content: torch.Tensor) -> torch.Tensor:
        b, t = mels.shape[:2]
        n_ref = ref_content.shape[1]
        mel_emb = self.encode_mels(mels.flatten(0, 1))  # (B*T, 512)
        pose_emb = self.encode_poses(pose.flatten(0, 1))
        ref_emb = self.encode_references(ref_pose.flatten(0, 1), ref_content.flatten(0, 1))
        return self.fuse(ref_emb.reshape(b, n_ref, -1), mel_emb.reshape(b, t, -1), pose_emb.reshape(b, t, -1))
