"""Backbones in torchvision layout, with the padding of the framework that trained them.

The architectures (ResNet-18/50, DenseNet-121) are one table, ``formats.BACKBONES``: its
record gives the torchvision constructor, the classifier replaced by the identity (so the
backbone returns its pooled features), the pooled width and the reconstruction target.

Converted weights keep torchvision's parameter names; only the *padding* of some
layers differs between frameworks, so the same state dict loads into any variant:

- ``torch``: stock torchvision ResNet-50 (symmetric padding everywhere).
- ``tf_same``: every convolution and the stem max-pool use TensorFlow/Haiku "SAME"
  padding, which pads more at the bottom/right for strided layers (BYOL, Haiku).
- ``tf_same_maxpool``: only the stem max-pool is "SAME"; convolutions use explicit
  symmetric padding as in torchvision (SimCLR-v1's ResNet).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medtransfer.weights.base import load_torch
from medtransfer.weights.formats import ARCHITECTURES as ARCHS
from medtransfer.weights.formats import BACKBONES, IMAGENET_MEAN, IMAGENET_STD, PADDINGS, ArchRecord
from medtransfer.writers import save_torch

HISTEQ_BINS = 256
WEIGHTS_FORMAT_VERSION = 1


def _same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel at the bottom/right)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_pads(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = _same_pads(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class SameMaxPool2d(nn.Module):
    """Max-pool with TensorFlow "SAME" padding (pads with -inf, extra at bottom/right)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = _same_pads(x.shape[-2], self.kernel_size, self.stride)
        left, right = _same_pads(x.shape[-1], self.kernel_size, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def _to_same_conv(conv: nn.Conv2d) -> SameConv2d:
    same = SameConv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
        conv.dilation, conv.groups, conv.bias is not None,
    )
    same.load_state_dict(conv.state_dict())
    return same


def _apply_padding(model: nn.Module, padding: str, record: ArchRecord) -> nn.Module:
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
    if padding not in record.paddings:
        raise ValueError(f"architecture {record.name!r} cannot be built with padding {padding!r}; "
                         f"it supports {record.paddings}")
    if padding in ("tf_same", "tf_same_maxpool"):
        parent, _, child = record.stem_pool.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, SameMaxPool2d(3, 2))
    if padding == "tf_same":
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.Conv2d) and not isinstance(module, SameConv2d):
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                setattr(parent, child, _to_same_conv(module))
    return model


def arch_record(arch: str) -> ArchRecord:
    """The table entry of ``arch``; the error lists the known architectures."""
    if arch not in BACKBONES:
        raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")
    return BACKBONES[arch]


def _headless(arch: str) -> nn.Module:
    record = arch_record(arch)
    model = getattr(torchvision.models, record.builder)(weights=None)
    setattr(model, record.head.rstrip("."), nn.Identity())  # pooled features out
    return model


def build_backbone(arch: str = "resnet50", padding: str = "torch") -> nn.Module:
    """A randomly initialised backbone whose classifier is the identity (pooled features out:
    ``feature_dim(arch)`` wide; DenseNet: features -> ReLU -> global average pool)."""
    return _apply_padding(_headless(arch), padding, arch_record(arch))


def feature_dim(arch: str) -> int:
    """Width of the pooled features of ``arch`` (512 for ResNet-18, 1024 DenseNet-121...)."""
    return arch_record(arch).dim


def backbone_keys(arch: str = "resnet50") -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a headless backbone with its shape (what a converter must produce)."""
    with torch.device("meta"):
        model = _headless(arch)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def guess_arch(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The architecture whose backbone keys and shapes the state dict holds exactly, if any."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    return next((arch for arch in ARCHS if backbone_keys(arch) == shapes), None)


def check_state_dict(state_dict: dict[str, torch.Tensor], arch: str, source: str) -> None:
    """Raise with the full list of missing, unexpected and mis-shaped keys."""
    expected = backbone_keys(arch)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = sorted(
        f"{k}: got {tuple(state_dict[k].shape)}, expected {expected[k]}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != expected[k]
    )
    if missing or unexpected or shapes:
        found = guess_arch(state_dict)
        if found is not None:
            raise ValueError(
                f"{source}: the weights are a {found} backbone, not the {arch} the config asks for. "
                f"Set `arch: {found}` for this model (command line: --arch {found}), or check the file."
            )
        raise ValueError(
            f"{source}: the weights do not fit a {arch} backbone. "
            f"missing ({len(missing)}): {missing[:20]}; unexpected ({len(unexpected)}): "
            f"{unexpected[:20]}; wrong shapes ({len(shapes)}): {shapes[:20]}. "
            "Check the file is the model you meant and that its `format` is right."
        )


@dataclass
class WeightsMeta:
    """What travels with converted weights: how to build the model and feed it."""

    arch: str = "resnet50"
    padding: str = "torch"
    mean: tuple[float, float, float] | None = IMAGENET_MEAN
    std: tuple[float, float, float] | None = IMAGENET_STD
    normalisation: str = ""  # its name (formats.NORMALISATIONS); "" in files written before it was kept
    source_format: str = "torchvision"
    source_sha256: str = ""
    model: str = ""
    dropped: dict[str, str] = field(default_factory=dict)
    demo: bool = False
    random: bool = False  # the untrained baseline (registry `random`)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: WeightsMeta) -> None:
    """Write the canonical weights file (plain tensors and builtins: loads with weights_only)."""
    check_state_dict(state_dict, meta.arch, str(path))
    payload = {
        "format_version": WEIGHTS_FORMAT_VERSION,
        "meta": meta.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
    }
    save_torch(path, payload)


def load_weights(path: str | os.PathLike) -> tuple[nn.Module, WeightsMeta]:
    """Build the backbone described by a canonical weights file, load strictly, eval mode."""
    payload = load_torch(Path(path), needs="the canonical weights file")
    if not isinstance(payload, dict) or payload.get("format_version") != WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"{path} is not a medtransfer weights file (format_version "
            f"{WEIGHTS_FORMAT_VERSION}); convert it with `python -m medtransfer.weights convert`"
        )
    raw = payload["meta"]
    meta = WeightsMeta(**{k: (tuple(v) if k in ("mean", "std") and v else v) for k, v in raw.items()})
    model = build_backbone(meta.arch, meta.padding)
    model.load_state_dict(payload["state_dict"], strict=True)
    return model.eval(), meta


def normalise(x: torch.Tensor, meta: WeightsMeta) -> torch.Tensor:
    """Map a float batch in [0, 1] (N,3,H,W) to the model's own input normalisation."""
    if getattr(meta, "normalisation", "") == "histeq":  # duck-typed metas may predate the field
        return equalise_histogram(x)
    if meta.mean is None:
        return x
    mean = torch.tensor(meta.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def equalise_histogram(x: torch.Tensor, bins: int = HISTEQ_BINS) -> torch.Tensor:
    """Per-image histogram equalisation as CovidPrognosis trains its MIMIC-CheXpert models.

    Their transform (``HistogramNormalize``) takes one ``bins``-bin histogram of all
    ``3 * H * W`` values of an image, over the image's own [min, max] (``numpy.histogram``'s
    bins, a constant image's range widened by 0.5 on each side as numpy does); the normalised
    cumulative histogram scaled to 255 is linearly interpolated at every value from the bins'
    left edges (a value in the last bin maps to 255). Each channel keeps its own values, so a
    colour image stays in colour; a grey image (equal channels) gets the histogram of its one
    channel (each count tripled, the same cumulative histogram). No mean/std follows: the
    output is in [0, 255]. Computed in float64; differentiable in ``x`` for a fixed histogram
    (the mapping is piecewise linear), so reconstruction can optimise through it.
    """
    n = x.shape[0]
    image = x.double().reshape(n, -1)  # all channels' values: one histogram per image
    values = image.detach()
    lo, hi = values.min(dim=1, keepdim=True).values, values.max(dim=1, keepdim=True).values
    flat = hi == lo
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    edges = lo + (hi - lo) * (torch.arange(bins + 1, dtype=torch.float64, device=x.device) / bins)
    # the bin of each value, as numpy.histogram finds it (then corrected against the edges)
    idx = ((values - lo) * (bins / (hi - lo))).floor().long().clamp(0, bins - 1)
    idx = idx - (values < edges.gather(1, idx)).long()
    idx = idx + ((values >= edges.gather(1, idx + 1)) & (idx != bins - 1)).long()
    counts = torch.zeros(n, bins, dtype=torch.float64, device=x.device).scatter_add_(
        1, idx, torch.ones_like(values))
    cdf = 255.0 * counts.cumsum(dim=1) / counts.sum(dim=1, keepdim=True)
    left, right = edges.gather(1, idx), edges.gather(1, idx + 1)
    low, high = cdf.gather(1, idx), cdf.gather(1, (idx + 1).clamp(max=bins - 1))
    out = low + (image - left) * (high - low) / (right - left)
    out = torch.where(idx == bins - 1, cdf[:, -1:].expand_as(out), out)
    return out.reshape(x.shape).to(x.dtype)
