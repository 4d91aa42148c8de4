"""e2fgvi-repro: train E2FGVI (CVPR 2022) reproducibly and measure what the training costs."""

__version__ = "0.1.0"
