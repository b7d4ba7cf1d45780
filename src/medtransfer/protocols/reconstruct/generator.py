"""The deep-image-prior "skip" generator, N independent copies in one module.

Layer order of one scale ``i`` (outermost first), as in the deep-image-prior "skip"
network (see docs/protocols.md, Reconstruction)::

    concat( skip:   conv1x1(c_in -> s_i), BN, LeakyReLU(0.2),
            deeper: conv k_i stride 2 (c_in -> d_i), BN, LeakyReLU,
                    conv k_i (d_i -> d_i), BN, LeakyReLU,
                    [scale i+1], nearest upsample x2 )
    BN(s_i + k), conv k_i (s_i + k -> u_i), BN, LeakyReLU,
    conv1x1(u_i -> u_i), BN, LeakyReLU

with ``k = u_{i+1}`` (``d_i`` at the deepest scale), then ``conv1x1(u_0 -> 3)`` and, with
``output="sigmoid"``, a sigmoid (``output="clip"``: none; the output is unbounded and the
caller clips the saved image). With ``downsample="avg"`` the first convolution of
``deeper`` has stride 1 and is followed by 2x2 average pooling (the published study's and
the deep-image-prior feature-inversion code's choice); with ``"stride"`` it has stride 2.
Every convolution has a bias and zero padding ``(k - 1) // 2``. When the two branches of a
concat differ in size (inputs not divisible by 2**scales) both are centre-cropped to the
smaller one, as the original does.

Independence of the N copies: every layer is a *grouped* convolution (``groups=N``)
over channels laid out member-major, BatchNorm and the activations are per channel,
and the concat interleaves per member. With batch 1, BatchNorm's statistics are per
channel over H x W, so no value of one member ever reaches another; see the package
docstring for why this is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from medtransfer.protocols.checks import DOWNSAMPLING, OUTPUTS


@dataclass(frozen=True)
class SkipConfig:
    """The generator's shape. Channels, kernels and slope default to the published ones;
    ``downsample`` and ``output`` default to the schema's ``stride`` and ``sigmoid``
    (the published study used ``avg`` and ``clip``: config/paper.yaml).

    ``downsample``: ``stride`` (strided convolution) or ``avg`` (stride-1 convolution,
    then 2x2 average pooling); both have the same parameters. ``avg`` halves with
    rounding down, so it needs larger inputs (``check_size``). ``output``: ``sigmoid``
    (output in (0, 1)) or ``clip`` (no final activation: unbounded while optimising).
    """

    in_channels: int = 32
    out_channels: int = 3
    down: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    up: tuple[int, ...] = (16, 32, 64, 128, 128, 128)
    skip: tuple[int, ...] = (4, 4, 4, 4, 4, 4)
    kernel_down: tuple[int, ...] = (7, 7, 5, 5, 3, 3)
    kernel_up: tuple[int, ...] = (7, 7, 5, 5, 3, 3)
    negative_slope: float = 0.2
    downsample: str = "stride"
    output: str = "sigmoid"

    def __post_init__(self) -> None:
        lengths = {len(self.down), len(self.up), len(self.skip), len(self.kernel_down), len(self.kernel_up)}
        if len(lengths) != 1:
            raise ValueError(f"down, up, skip, kernel_down, kernel_up need one entry per scale; got {self}")
        if self.downsample not in DOWNSAMPLING:
            raise ValueError(f"unknown downsample {self.downsample!r}; expected one of {DOWNSAMPLING}")
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown output {self.output!r}; expected one of {OUTPUTS}")
        if any(s <= 0 for s in self.skip):
            raise ValueError(f"every scale needs skip channels > 0, got {self.skip}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class GroupConv(nn.Conv2d):
    """``members`` independent convolutions ``c_in -> c_out`` as one grouped convolution."""

    def __init__(self, members: int, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(members * c_in, members * c_out, kernel, stride, (kernel - 1) // 2, groups=members)


class GroupBN(nn.BatchNorm2d):
    """BatchNorm over ``members * channels`` (per channel, so per member)."""

    def __init__(self, members: int, channels: int) -> None:
        super().__init__(members * channels)


def _block(members: int, c_in: int, c_out: int, kernel: int, slope: float, stride: int = 1,
           avg: bool = False) -> list[nn.Module]:
    if avg and stride > 1:
        layers: list[nn.Module] = [GroupConv(members, c_in, c_out, kernel), nn.AvgPool2d(stride, stride)]
    else:
        layers = [GroupConv(members, c_in, c_out, kernel, stride)]
    return layers + [GroupBN(members, c_out), nn.LeakyReLU(slope)]


def centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left = (x.shape[-2] - height) // 2, (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class MemberConcat(nn.Module):
    """Per member, concatenate the skip and deeper branches' channels (centre-cropped)."""

    def __init__(self, members: int, skip: nn.Module, deeper: nn.Module) -> None:
        super().__init__()
        self.members, self.skip, self.deeper = members, skip, deeper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.skip(x), self.deeper(x)
        h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
        a, b = centre_crop(a, h, w), centre_crop(b, h, w)
        n = self.members
        joined = torch.cat([a.reshape(a.shape[0], n, -1, h, w), b.reshape(b.shape[0], n, -1, h, w)], dim=2)
        return joined.reshape(a.shape[0], -1, h, w)


class SkipGenerator(nn.Module):
    """``members`` independent skip generators: input ``(1, members * in_channels, H, W)``,
    output ``(members, out_channels, H', W')``: in (0, 1) with ``output="sigmoid"``,
    unbounded with ``"clip"``."""

    def __init__(self, cfg: SkipConfig = SkipConfig(), members: int = 1) -> None:
        super().__init__()
        self.cfg, self.members = cfg, members
        self.body = self._scale(0, cfg.in_channels)
        self.head = GroupConv(members, cfg.up[0], cfg.out_channels, 1)

    def _scale(self, i: int, c_in: int) -> nn.Sequential:
        cfg, m, slope = self.cfg, self.members, self.cfg.negative_slope
        skip = nn.Sequential(*_block(m, c_in, cfg.skip[i], 1, slope))
        deeper = _block(m, c_in, cfg.down[i], cfg.kernel_down[i], slope, 2, cfg.downsample == "avg")
        deeper += _block(m, cfg.down[i], cfg.down[i], cfg.kernel_down[i], slope)
        last = i == len(cfg.down) - 1
        if not last:
            deeper.append(self._scale(i + 1, cfg.down[i]))
        deeper.append(nn.Upsample(scale_factor=2, mode="nearest"))
        k = cfg.down[i] if last else cfg.up[i + 1]
        return nn.Sequential(
            MemberConcat(m, skip, nn.Sequential(*deeper)), GroupBN(m, cfg.skip[i] + k),
            *_block(m, cfg.skip[i] + k, cfg.up[i], cfg.kernel_up[i], slope),
            *_block(m, cfg.up[i], cfg.up[i], 1, slope),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(noise))
        if self.cfg.output == "sigmoid":
            out = torch.sigmoid(out)
        return out.reshape(self.members, self.cfg.out_channels, *out.shape[-2:])


def build_generators(seeds: Sequence[int], cfg: SkipConfig = SkipConfig()) -> SkipGenerator:
    """One generator per seed, stacked; member ``g`` is initialised exactly as a lone
    generator built with ``seeds[g]`` (PyTorch's default initialisation, seeded)."""
    singles = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            singles.append(SkipGenerator(cfg, members=1).state_dict())
    stacked = SkipGenerator(cfg, members=len(seeds))
    state = {k: (v if v.ndim == 0 else torch.cat([s[k] for s in singles])) for k, v in singles[0].items()}
    stacked.load_state_dict(state, strict=True)
    return stacked


def make_noise(seeds: Sequence[int], size: int, channels: int = 32, scale: float = 0.1) -> torch.Tensor:
    """The fixed inputs ``(1, len(seeds) * channels, size, size)``: U(0, 1) * ``scale`` each."""
    parts = [torch.rand(channels, size, size, generator=torch.Generator().manual_seed(int(s))) * scale
             for s in seeds]
    return torch.cat(parts).unsqueeze(0)


def member_slice(generator: SkipGenerator, member: int) -> dict[str, torch.Tensor]:
    """Member ``member``'s parameters and buffers as a lone generator's state dict."""
    n = generator.members
    out = {}
    for key, value in generator.state_dict().items():
        if value.ndim == 0:
            out[key] = value
        else:
            size = value.shape[0] // n
            out[key] = value[member * size:(member + 1) * size]
    return out


def deepest_size(size: int, cfg: SkipConfig) -> int:
    """Side of the deepest feature map for a noise side ``size``."""
    for _ in cfg.down:
        size = (size + 1) // 2 if cfg.downsample == "stride" else size // 2
    return size


def check_size(size: int, cfg: SkipConfig) -> None:
    """BatchNorm with batch 1 needs >= 2 values per channel at the deepest scale."""
    if deepest_size(size, cfg) < 2:
        least = next(s for s in range(size, 64 * 2 ** len(cfg.down)) if deepest_size(s, cfg) >= 2)
        image = next(s for s in range(1, least + 1) if deepest_size(noise_size(s), cfg) >= 2)
        raise ValueError(
            f"noise of {size} px is too small for the generator's {len(cfg.down)} scales "
            f"(its deepest feature map would be {deepest_size(size, cfg)} px, BatchNorm needs 2); "
            f"use images of at least {image} px (noise >= {least} px)"
            + (", or set protocols.reconstruction.downsample: stride (it halves rounding up)"
               if cfg.downsample == "avg" else "")
        )


def noise_size(image_size: int) -> int:
    """Noise side for an image side: 256 for 224 as published, scaled alike for others."""
    return max(image_size, round(image_size * 256 / 224))


def output_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop of the generator's output to the image size."""
    if images.shape[-1] < size or images.shape[-2] < size:
        raise ValueError(f"generator output {tuple(images.shape[-2:])} is smaller than the image size {size}")
    return centre_crop(images, size, size)


__all__ = ["SkipConfig", "SkipGenerator", "build_generators", "check_size", "make_noise",
           "member_slice", "noise_size", "output_crop"]
