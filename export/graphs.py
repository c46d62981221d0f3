"""The graphs of a model bundle: the exact split of IP_LAP into what each part depends on.

======================  =====================  ========================================
graph                   runs                   computes
======================  =====================  ========================================
landmark_mel_encoder    per frame              a mel window's embedding
landmark_pose_encoder   per face frame         a pose's embedding
landmark_ref_encoder    per avatar, batch 15   the reference landmarks' embeddings
landmark_fusion         per frame window       lip and jaw landmarks (the transformer)
reference_encoder       per video, batch N     h1, h2 of each reference (BatchNorm folded)
flow_modulations        per frame              every SPADE gamma/beta of the flow network
flow_head               per frame, batch N     flow and fusion weight of each reference
translation             per frame              the 128x128 face
======================  =====================  ========================================

Warping and fusion of the references run outside any graph (the runtime's Numba kernel).
Each wrapper below is an ``nn.Module`` with flat tensor inputs and outputs, named as in
:data:`iplap.runtime.bundle.GRAPH_SPECS`, so the ONNX graph and the runtime agree by name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..models.landmark_generator import LandmarkGenerator
from ..models.renderer import Renderer, mask_lower_half
from ..runtime.bundle import GRAPH_SPECS, GraphSpec


class LandmarkMelEncoderGraph(nn.Module):
    def __init__(self, model: LandmarkGenerator):
        super().__init__()
        self.model = model

    def forward(self, mels):
        return self.model.encode_mels(mels)


class LandmarkPoseEncoderGraph(LandmarkMelEncoderGraph):
    def forward(self, pose):
        return self.model.encode_poses(pose)


class LandmarkRefEncoderGraph(LandmarkMelEncoderGraph):
    def forward(self, ref_pose, ref_content):
        return self.model.encode_references(ref_pose, ref_content)


class LandmarkFusionGraph(LandmarkMelEncoderGraph):
    def forward(self, ref_embedding, mel_embedding, pose_embedding):
        return self.model.fuse(ref_embedding, mel_embedding, pose_embedding)


class ReferenceEncoderGraph(nn.Module):
    """conv1/conv2 of the flow network with their BatchNorms folded into the convolutions."""

    def __init__(self, renderer: Renderer):
        super().__init__()
        flow = renderer.flow_module
        self.conv1 = fuse_conv_bn_eval(copy.deepcopy(flow.conv1), flow.conv1_bn)
        self.conv2 = fuse_conv_bn_eval(copy.deepcopy(flow.conv2), flow.conv2_bn)

    def forward(self, ref_image, ref_sketch):
        h1 = torch.relu(self.conv1(torch.cat((ref_image, ref_sketch), dim=1)))
        return h1, torch.relu(self.conv2(h1))


class FlowModulationsGraph(nn.Module):
    def __init__(self, renderer: Renderer):
        super().__init__()
        self.flow = renderer.flow_module

    def forward(self, driving_sketches):
        return self.flow.modulations(driving_sketches)


class FlowHeadGraph(nn.Module):
    def __init__(self, renderer: Renderer):
        super().__init__()
        self.flow = renderer.flow_module

    def forward(self, h2, *modulations):
        return self.flow.predict_flow(h2, modulations)


class TranslationGraph(nn.Module):
    """Masks the target face's lower half, then runs the translation network."""

    def __init__(self, renderer: Renderer):
        super().__init__()
        self.translation = renderer.translation

    def forward(self, face, target_sketches, wrapped_ref, wrapped_h1, wrapped_h2, mel):
        translation_input = torch.cat([mask_lower_half(face), target_sketches], dim=1)
        return self.translation(translation_input, wrapped_ref, wrapped_h1, wrapped_h2, mel)


@dataclass
class ExportableGraph:
    spec: GraphSpec
    module: nn.Module


def build_graphs(landmark_generator: LandmarkGenerator, renderer: Renderer) -> list[ExportableGraph]:
    """The graphs of a bundle, in eval mode, ready to export."""
    modules = {
        "landmark_mel_encoder": LandmarkMelEncoderGraph(landmark_generator),
        "landmark_pose_encoder": LandmarkPoseEncoderGraph(landmark_generator),
        "landmark_ref_encoder": LandmarkRefEncoderGraph(landmark_generator),
        "landmark_fusion": LandmarkFusionGraph(landmark_generator),
        "reference_encoder": ReferenceEncoderGraph(renderer),
        "flow_modulations": FlowModulationsGraph(renderer),
        "flow_head": FlowHeadGraph(renderer),
        "translation": TranslationGraph(renderer),
    }
    return [ExportableGraph(spec, modules[spec.name].eval()) for spec in GRAPH_SPECS]


def example_inputs(spec: GraphSpec, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Random inputs in each input's natural range, with ``batch`` on the dynamic axis."""
    tensors = []
    for tensor in spec.inputs:
        shape = tuple(batch if dim == "batch" else dim for dim in tensor.shape)
        low, high = tensor.value_range
        tensors.append(torch.rand(shape, generator=generator) * (high - low) + low)
    return tuple(tensors)
