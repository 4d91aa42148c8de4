"""The E2FGVI model (Li et al., "Towards An End-to-End Framework for Flow-Guided Video
Inpainting", CVPR 2022): generator (E2FGVI and E2FGVI-HQ), T-PatchGAN discriminator, SPyNet,
and safe loading of official and our own weights. Parameter names equal the official ones, so the
released checkpoints load with ``strict=True``.
"""

from e2fgvi.model.build import (
    build_flow_teacher,
    build_generator,
    load_generator,
    load_generator_state,
    load_spynet_weights,
    read_spynet_state,
)
from e2fgvi.model.deform_conv import FORMULATIONS as DEFORM_CONV_FORMULATIONS
from e2fgvi.model.discriminator import Discriminator
from e2fgvi.model.feature_propagation import use_deform_conv
from e2fgvi.model.generator import InpaintGenerator
from e2fgvi.model.sizes import (
    VARIANTS,
    check_input_size,
    crop_to_size,
    hq_pad_size,
    pad_frames_for_hq,
)
from e2fgvi.model.spynet import SPyNet, bidirectional_flows, flow_warp

__all__ = [
    "DEFORM_CONV_FORMULATIONS",
    "VARIANTS",
    "Discriminator",
    "InpaintGenerator",
    "SPyNet",
    "bidirectional_flows",
    "build_flow_teacher",
    "build_generator",
    "check_input_size",
    "crop_to_size",
    "flow_warp",
    "hq_pad_size",
    "load_generator",
    "load_generator_state",
    "load_spynet_weights",
    "pad_frames_for_hq",
    "read_spynet_state",
    "use_deform_conv",
]
