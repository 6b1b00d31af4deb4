"""Building blocks shared by the project's own architectures.

Each block is small and stateless beyond its layers so the model files read as topology only.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ConvBNReLU",
    "DoubleConv",
    "AsymConvBN",
    "MultiKernelBlock",
    "ChannelAttention",
    "AttentionGate",
    "DWSConv",
    "DilatedDWSBlock",
    "DABModule",
    "make_divisible",
    "resize_to",
]


def make_divisible(value: float, divisor: int = 4, minimum: int | None = None) -> int:
    """Round a scaled channel count to a multiple of ``divisor`` (never below ``minimum`` or ``divisor``)."""
    minimum = minimum or divisor
    return max(minimum, int(value + divisor / 2) // divisor * divisor)


def resize_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False) unless already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """conv -> BatchNorm -> activation (ReLU by default; ``act=None`` for none)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int = 1,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
        padding = ((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=padding, dilation=d, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(_act(act, out_ch))
        super().__init__(*layers)


def _act(act: type[nn.Module], channels: int) -> nn.Module:
    """Instantiate an activation class: PReLU gets one slope per channel, ReLU runs in place."""
    if act is nn.PReLU:
        return nn.PReLU(channels)
    if act is nn.ReLU:
        return nn.ReLU(inplace=True)
    return act()


class DoubleConv(nn.Sequential):
    """(3x3 conv + BN + ReLU) x 2: the U-Net level block."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None) -> None:
        mid_ch = mid_ch or out_ch
        super().__init__(ConvBNReLU(in_ch, mid_ch), ConvBNReLU(mid_ch, out_ch))


class AsymConvBN(nn.Module):
    """ACNet-style multi-kernel conv: BN(3x3) + BN(1x3) + BN(3x1), no activation.

    Why: the asymmetric branches strengthen the kernel's central cross (horizontal/vertical structures
    such as road edges and poles) at little cost, and fold into one 3x3 conv for deployment.
    With ``depthwise=True`` the three branches are depthwise (per-channel) and a pointwise
    1x1 conv + BN maps to ``out_ch``: the compressed student's version.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        mid = in_ch if depthwise else out_ch
        groups = in_ch if depthwise else 1

        def branch(k: tuple[int, int]) -> nn.Sequential:
            pad = ((k[0] - 1) // 2, (k[1] - 1) // 2)
            return nn.Sequential(
                nn.Conv2d(in_ch, mid, k, stride=stride, padding=pad, groups=groups, bias=False),
                nn.BatchNorm2d(mid),
            )

        self.square = branch((3, 3))
        self.hor = branch((1, 3))
        self.ver = branch((3, 1))
        self.pointwise = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch)) if depthwise else None
        )

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and not torch.jit.is_tracing() and self._foldable():
            return self._folded_forward(x)
        y = self.square(x) + self.hor(x) + self.ver(x)
        if self.pointwise is not None:
            y = self.pointwise(y)
        return y

    # -- inference: the three branches and their BNs as one conv (ACNet's deployment form) -----------------
    def _foldable(self) -> bool:
        return all(bn.running_var is not None for bn in self._norms())

    def _norms(self) -> list[nn.BatchNorm2d]:
        seqs = [self.square, self.hor, self.ver] + ([self.pointwise] if self.pointwise is not None else [])
        return [s[1] for s in seqs]

    def folded_weights(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """The eval-mode block as ``(kernel, bias)`` of one 3x3 conv (+ the pointwise ``(kernel, bias)``).

        Why: at inference BN is affine, so each branch is a conv with a bias, and a 1x3 or 3x1 kernel is a 3x3
        kernel with zero rows/columns; three convolutions, four BNs and two additions over a full-resolution
        map become one convolution (three times less memory traffic). The result equals the branch sum up to
        float rounding. Computed on every call from the current weights (a few hundred small ops), so it never
        goes stale. Not while tracing for ONNX export: the exported graph keeps the branches (ONNX Runtime folds
        the BatchNorms itself)."""
        kernel = bias = None
        for seq, pad in ((self.square, (0, 0, 0, 0)), (self.hor, (0, 0, 1, 1)), (self.ver, (1, 1, 0, 0))):
            k, b = fold_bn(seq[0].weight, seq[1])
            k = F.pad(k, pad)
            kernel, bias = (k, b) if kernel is None else (kernel + k, bias + b)
        pw = None
        if self.pointwise is not None:
            pw = fold_bn(self.pointwise[0].weight, self.pointwise[1])
        return kernel, bias, pw

    def _folded_forward(self, x: Tensor) -> Tensor:
        kernel, bias, pw = self.folded_weights()
        conv = self.square[0]
        y = F.conv2d(x, kernel, bias, conv.stride, 1, 1, conv.groups)
        if pw is not None:
            y = F.conv2d(y, pw[0], pw[1])
        return y


def fold_bn(weight: Tensor, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``conv(weight, no bias) -> bn`` (eval) as one conv's ``(kernel, bias)``."""
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = -bn.running_mean * scale
    if bn.bias is not None:
        bias = bias + bn.bias
    return weight * scale.reshape(-1, 1, 1, 1), bias


class MultiKernelBlock(nn.Sequential):
    """Two (multi-kernel conv + ReLU) layers: the level block of the multi-scale attention U-Net."""

    def __init__(self, in_ch: int, out_ch: int, depthwise: bool = False, layers: int = 2) -> None:
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [AsymConvBN(in_ch if i == 0 else out_ch, out_ch, depthwise=depthwise), nn.ReLU(inplace=True)]
        super().__init__(*mods)


class ChannelAttention(nn.Module):
    """CBAM channel attention: sigmoid(MLP(avgpool(x)) + MLP(maxpool(x))) scales each channel."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        # the pooling ops (not mean/amax over dims 2, 3): the same values, and on channels-last maps amax is a
        # strided reduction several times slower than adaptive_max_pool2d
        return x * self.scale(F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1))

    def scale(self, avg: Tensor, mx: Tensor) -> Tensor:
        """The per-channel scale from the map's average- and max-pooled ``N x C x 1 x 1`` descriptors."""
        return torch.sigmoid(self.mlp(avg) + self.mlp(mx))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): the decoder's gating signal weights the skip map.

    alpha = sigmoid(psi(relu(W_g g + W_x x))), output = x * alpha. ``g`` is brought to ``x``'s size first.
    """

    def __init__(self, gate_ch: int, skip_ch: int, inter_ch: int | None = None) -> None:
        super().__init__()
        inter_ch = inter_ch or max(1, skip_ch // 2)
        self.w_g = nn.Sequential(nn.Conv2d(gate_ch, inter_ch, 1, bias=False), nn.BatchNorm2d(inter_ch))
        self.w_x = nn.Sequential(nn.Conv2d(skip_ch, inter_ch, 1, bias=False), nn.BatchNorm2d(inter_ch))
        self.psi = nn.Sequential(nn.Conv2d(inter_ch, 1, 1, bias=True), nn.BatchNorm2d(1))

    def forward(self, g: Tensor, x: Tensor) -> Tensor:
        g = resize_to(g, x.shape[-2:])
        alpha = torch.sigmoid(self.psi(F.relu(self.w_g(g) + self.w_x(x))))
        return x * alpha


class DWSConv(nn.Sequential):
    """Depthwise-separable conv: depthwise kxk (dilated) + BN, pointwise 1x1 + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, dilation: int = 1, stride: int = 1) -> None:
        super().__init__(
            ConvBNReLU(in_ch, in_ch, kernel_size, stride=stride, dilation=dilation, groups=in_ch, act=None),
            ConvBNReLU(in_ch, out_ch, 1),
        )


class DilatedDWSBlock(nn.Module):
    """Parallel depthwise-separable convs (dilations 1, 2, 3) concatenated and fused by 1x1 conv+BN+ReLU.

    Why: several receptive fields at the price of depthwise convs; the residual (when ``in_ch == out_ch``)
    keeps gradients flowing through stacks of these blocks.
    """

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(DWSConv(in_ch, out_ch, 3, dilation=r) for r in rates)
        self.fuse = ConvBNReLU(out_ch * len(rates), out_ch, 1)
        self.residual = in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.fuse(torch.cat([b(x) for b in self.branches], dim=1))
        return y + x if self.residual else y


class DABModule(nn.Module):
    """Depthwise Asymmetric Bottleneck (after DABNet, Li et al. 2019), post-activation with a residual.

    kxk conv to C/2 -> [dw 3x1, dw 1x3] + [dilated dw 3x1, dilated dw 1x3] -> 1x1 conv to C, plus the
    input, ReLU. Why: the two depthwise branches see local detail and wide context (dilation ``d``) for a
    few hundred parameters per channel. Differences from DABNet, both for CPU speed with the same
    receptive field: every BN follows a conv (so it folds into the conv at export instead of running as
    a separate op), and ReLU replaces PReLU (ONNX Runtime fuses ReLU into the conv; PReLU runs apart).
    ``reduce_kernel=3`` is DABNet's dense 3x3 reduction; 1 (CGNet-style) is ~5x cheaper.
    """

    def __init__(self, channels: int, dilation: int = 1, reduce_kernel: int = 1) -> None:
        super().__init__()
        half = channels // 2
        d = dilation
        self.reduce = ConvBNReLU(channels, half, reduce_kernel)
        self.local = nn.Sequential(
            ConvBNReLU(half, half, (3, 1), groups=half),
            ConvBNReLU(half, half, (1, 3), groups=half),
        )
        self.context = nn.Sequential(
            ConvBNReLU(half, half, (3, 1), dilation=(d, 1), groups=half),
            ConvBNReLU(half, half, (1, 3), dilation=(1, d), groups=half),
        )
        self.expand = ConvBNReLU(half, channels, 1, act=None)

    def forward(self, x: Tensor) -> Tensor:
        y = self.reduce(x)
        y = self.local(y) + self.context(y)
        return F.relu(self.expand(y) + x)
