"""The one encoder/decoder pair every model shares (after the VAEGAN of Larsen et al. 2016).

Each level is a 5x5 convolution with stride 2, batch norm and a leaky ReLU (encoder), mirrored by
5x5 transposed convolutions with stride 2, batch norm and ReLU (decoder). With `len(channels)`
levels an image of side S has a feature map of side S / 2**len(channels) at the bottleneck: four
levels give the paper's 16 x 16 at 256 px and 8 x 8 at 128 px. Models differ only in what sits at
the bottleneck, so Table 1 compares bottlenecks and objectives, not capacity.
"""

from __future__ import annotations

import torch
from torch import nn


def down(c_in: int, c_out: int, norm: bool = True) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, H/2, W/2)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 5, stride=2, padding=2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def up(c_in: int, c_out: int) -> nn.Sequential:
    """(B, c_in, H, W) -> (B, c_out, 2H, 2W)."""
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 5, stride=2, padding=2, output_padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """(B, 1, S, S) -> (B, channels[-1], S / 2**L, S / 2**L)."""

    def __init__(self, channels: tuple[int, ...], in_channels: int = 1) -> None:
        super().__init__()
        widths = (in_channels, *channels)
        pairs = zip(widths, widths[1:], strict=False)
        self.net = nn.Sequential(*[down(a, b, norm=i > 0) for i, (a, b) in enumerate(pairs)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every level's output, finest first: what a U-Net decoder's skips take."""
        out = []
        for level in self.net:
            x = level(x)
            out.append(x)
        return out


class Decoder(nn.Module):
    """(B, channels[-1], s, s) -> (B, 1, s * 2**L, s * 2**L) in [0, 1] (sigmoid output).

    With `skip`, each level also takes the encoder's output of the same side (concatenated:
    a U-Net, Ronneberger et al. 2015), so fine detail need not pass the bottleneck.
    """

    def __init__(self, channels: tuple[int, ...], out_channels: int = 1,
                 skip: bool = False) -> None:
        super().__init__()
        widths = tuple(reversed(channels))
        inputs = [w * (2 if skip and i > 0 else 1) for i, w in enumerate(widths)]
        self.skip, self.levels = skip, len(widths)
        ups = [up(a, b) for a, b in zip(inputs, (*widths[1:], widths[-1]), strict=True)]
        self.net = nn.Sequential(*ups, nn.Conv2d(widths[-1], out_channels, 5, padding=2),
                                 nn.Sigmoid())

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`skips`: the encoder's `levels` (finest first), with `skip` only."""
        if not self.skip:
            return self.net(h)
        for i, level in enumerate(self.net):
            if 0 < i < self.levels:
                h = torch.cat([h, skips[-1 - i]], dim=1)  # (B, 2C, s, s)
            h = level(h)
        return h


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` for inference, every (convolution, batch norm) pair folded into the
    convolution: the same outputs in eval mode, one pass over memory less per level."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (norm_name, norm) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d | nn.ConvTranspose2d) and isinstance(norm,
                                                                               nn.BatchNorm2d):
                transpose = isinstance(conv, nn.ConvTranspose2d)
                setattr(module, name, fuse_conv_bn_eval(conv, norm, transpose=transpose))
                setattr(module, norm_name, nn.Identity())
    return model
