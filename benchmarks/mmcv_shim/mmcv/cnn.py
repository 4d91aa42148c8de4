"""``ConvModule`` (conv then activation, no norm) and ``constant_init``."""

from __future__ import annotations

from torch import nn

_ACTIVATIONS = {"ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU}
_RELU = {"type": "ReLU"}  # mmcv's default; an explicit None means no activation


class ConvModule(nn.Module):
    """Conv2d named ``conv``, then the ``act_cfg`` activation (none for None); no norm layers."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias="auto",
        conv_cfg=None,
        norm_cfg=None,
        act_cfg=_RELU,
        inplace: bool = True,
    ) -> None:
        super().__init__()
        if norm_cfg is not None or conv_cfg is not None:
            raise NotImplementedError("the stand-in supports norm_cfg=None, conv_cfg=None only")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias=True if bias == "auto" else bias,
        )
        self.activate: nn.Module = nn.Identity()
        if act_cfg is not None:
            cfg = dict(act_cfg)
            self.activate = _ACTIVATIONS[cfg.pop("type")](inplace=inplace, **cfg)

    def forward(self, x):
        return self.activate(self.conv(x))


def constant_init(module: nn.Module, val: float, bias: float = 0) -> None:
    if getattr(module, "weight", None) is not None:
        nn.init.constant_(module.weight, val)
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)
