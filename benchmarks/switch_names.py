"""The speed switches the benchmarks know, by name (combine with "+": ``sampled+bf16``).

bf16 / fp16: ``train.amp``; channels_last: ``train.channels_last`` (the generator's 2-D convs);
compile: ``train.compile`` (generator and discriminator); sampled: ``train.deform_conv: sampled``
(the deformable conv by grid_sample + matmul); reduced / reduced_area: ``train.decode`` (the
loader's reduced-size JPEG decoding, then PIL bicubic or OpenCV area resize; loader only);
foreach / fused: the Adam implementation (``train/optim.py`` builds ``torch.optim.Adam`` with its
defaults, i.e. the single-tensor loop on CPU); tf32 and no_cudnn_benchmark: CUDA only (neither
has any effect on a CPU).
"""

from __future__ import annotations

from typing import Any

SWITCHES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"amp": "bf16"},
    "fp16": {"amp": "fp16"},
    "channels_last": {"channels_last": True},
    "compile": {"compile": True},
    "sampled": {"deform_conv": "sampled"},
    "reduced": {"decode": "reduced"},
    "reduced_area": {"decode": "reduced_area"},
    "foreach": {"adam": "foreach"},
    "fused": {"adam": "fused"},
    "tf32": {"tf32": True},
    "no_cudnn_benchmark": {"cudnn_benchmark": False},
}
CUDA_ONLY = ("fp16", "tf32", "no_cudnn_benchmark")


def switch_settings(name: str, device: str) -> dict[str, Any]:
    """The settings of a "+"-joined switch name; SystemExit for unknown or CUDA-only-on-CPU."""
    settings: dict[str, Any] = {}
    for part in name.split("+"):
        if part not in SWITCHES:
            raise SystemExit(f"unknown switch {part!r}; choose from {', '.join(SWITCHES)}")
        if part in CUDA_ONLY and device != "cuda":
            raise SystemExit(f"{part} applies on CUDA only (no effect or unsupported on CPU)")
        settings |= SWITCHES[part]
    return settings
