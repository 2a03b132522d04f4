"""Building blocks of the UV network: the Fourier encoder E_f (method.md §5.2) and the U-Net image
encoder E_i (§5.3, no BatchNorm: method.md §15 item 10)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..render.validation import check_float_tensor

__all__ = ["FourierEncoder", "DoubleConv", "UNetEncoder", "conv3", "conv1"]


# --------------------------------------------------------------------------------------------------
# §5.2 Fourier encoder
# --------------------------------------------------------------------------------------------------

class FourierEncoder(nn.Module):
    """Parameter-free Fourier features E_f (method.md §5.2), shared by UV_pos and UV_disp.

    Frequencies f_k = 10^(k/5), k = 0..5 = {1, 1.585, 2.512, 3.981, 6.310, 10}. For an input with C
    channels the output has C·(1 + 2K) channels, laid out as

        [x (C), sin(2π f_k x_c) (C·K), cos(2π f_k x_c) (C·K)],

    where inside the sin and cos blocks the index is channel-major: c·K + k. For C = 3 this is 39.

    Input [B,C,H,W] (any float dtype, any device) → output [B,C(1+2K),H,W], same dtype/device.
    Raises ValueError if the input is not a 4-D floating tensor.
    """

    def __init__(self, num_freqs: int = 6, base: float = 10.0, step: float = 5.0):
        super().__init__()
        # plain Python floats (not a buffer), so the features are exact in the input's own dtype
        self.freqs = tuple(base ** (k / step) for k in range(num_freqs))
        self.num_freqs = num_freqs

    def out_channels(self, in_channels: int = 3) -> int:
        """Number of output channels for `in_channels` input channels (39 for 3)."""
        return in_channels * (1 + 2 * self.num_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_tensor(x, "x", (None, None, None, None))
        b, c, h, w = x.shape
        f = torch.tensor(self.freqs, dtype=x.dtype, device=x.device)
        # [B,C,K,H,W] -> [B,C*K,H,W] gives channel-major index c*K + k
        arg = (2.0 * math.pi) * x[:, :, None] * f[None, None, :, None, None]
        arg = arg.reshape(b, c * self.num_freqs, h, w)
        return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=1)


# --------------------------------------------------------------------------------------------------
# §5.3 image encoder (U-Net)
# --------------------------------------------------------------------------------------------------

def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=bias)


def conv1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=True)


class DoubleConv(nn.Sequential):
    """DoubleConv(a → b, mid m) = Conv3(a→m, no bias) + ReLU + Conv3(m→b, no bias) + ReLU (method.md §5.3).

    No BatchNorm (method.md §15 item 10). `mid` defaults to `out_ch`.
    """

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None):
        mid = out_ch if mid_ch is None else mid_ch
        super().__init__(
            conv3(in_ch, mid, bias=False), nn.ReLU(inplace=True),
            conv3(mid, out_ch, bias=False), nn.ReLU(inplace=True),
        )


class _Down(nn.Sequential):
    """MaxPool2 then DoubleConv (method.md §5.3)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))


class _Up(nn.Module):
    """Bilinear ×2 upsampling (align_corners=True), concat [skip, up], DoubleConv (method.md §5.3)."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int):
        super().__init__()
        self.conv = DoubleConv(in_ch, out_ch, mid_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        if up.shape[-2:] != skip.shape[-2:]:  # odd sizes: pad to the skip's size
            dh, dw = skip.shape[-2] - up.shape[-2], skip.shape[-1] - up.shape[-1]
            up = F.pad(up, [dw // 2, dw - dw // 2, dh // 2, dh - dh // 2])
        return self.conv(torch.cat([skip, up], dim=1))


class UNetEncoder(nn.Module):
    """Image encoder E_i (method.md §5.3): [B,3,S,S] image in [0,1] → d3 [B,64,S,S].

    inc DoubleConv(3→64, mid 32); down1..3 = MaxPool2 + DoubleConv(64→128, 128→256, 256→256);
    up1..3 = bilinear ×2 (align_corners=True) + concat skip + DoubleConv(512→128 mid 256,
    256→64 mid 128, 128→64 mid 64). 4,258,656 parameters, all conv weights (no biases).
    """

    def __init__(self, in_ch: int = 3):
        super().__init__()
        self.inc = DoubleConv(in_ch, 64, 32)
        self.down1 = _Down(64, 128)
        self.down2 = _Down(128, 256)
        self.down3 = _Down(256, 256)
        self.up1 = _Up(512, 128, 256)
        self.up2 = _Up(256, 64, 128)
        self.up3 = _Up(128, 64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        y = self.up1(x4, x3)
        y = self.up2(y, x2)
        return self.up3(y, x1)
