"""LPIPS v0.1 with backbones read from torchvision weight files the pipeline downloaded.

The ``lpips`` package ships its calibrated linear heads, but fetches the AlexNet /
VGG16 / SqueezeNet-1.1 trunks from the internet when built normally. Here the trunk
is built random (``pnet_rand=True``: no download) and then loaded, strictly, from the
file the download rule fetched (``LPIPS_BACKBONES``: torchvision's URLs, sha256
prefixes as in their file names). Only ``features.*`` is used; ``classifier.*`` keys
are dropped and listed; any other key is an error.

Demo backbones (``write_demo_lpips_weights``) are seeded random trunks in torchvision's
state-dict layout; AlexNet and VGG16 files hold the ``features.*`` keys only (their
classifiers would add 233 MB and 476 MB that LPIPS never uses), SqueezeNet's the full
state dict (its classifier is small). Scores from them are not perceptual distances.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import vgg

from medtransfer.weights.base import load_torch
from medtransfer.weights.demo import seeded_init
from medtransfer.weights.registry import AUXILIARY, AuxiliaryFile
from medtransfer.writers import torch_bytes, write_bytes

LPIPS_NETS = ("alex", "vgg", "squeeze")


# The torchvision files each LPIPS backbone is read from (registry: weights/registry.py).
LPIPS_BACKBONES: dict[str, AuxiliaryFile] = {net: AUXILIARY[f"lpips-{net}"] for net in LPIPS_NETS}


def _check_net(net: str) -> AuxiliaryFile:
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"unknown LPIPS backbone {net!r}; expected one of {list(LPIPS_NETS)}")
    return LPIPS_BACKBONES[net]


def _trunk(arch: str) -> nn.Sequential:
    """The trunk's structure with uninitialised weights (they are loaded next): built on
    the meta device, so VGG16's 120M-parameter classifier costs nothing."""
    with torch.device("meta"):
        features = getattr(torchvision.models, arch)(weights=None).features
    return features.to_empty(device="cpu")


def read_features(path: str | os.PathLike, net: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The trunk's state dict (``features.`` prefix removed) and the dropped keys.

    Strict: every trunk key must be present with its shape; ``classifier.*`` keys are
    dropped; anything else is an error naming the keys.
    """
    spec = _check_net(net)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS {net} backbone file {path} not found; run the download rule for it")
    state = load_torch(path, needs="its features.* tensors")  # never runs code from the file
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a torchvision state dict, found {type(state).__name__}")
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    dropped = sorted(k for k in state if k.startswith("classifier."))
    other = sorted(set(state) - set(dropped) - {f"features.{k}" for k in features})
    expected = {k: tuple(v.shape) for k, v in _trunk(spec.arch).state_dict().items()}
    missing = sorted(set(expected) - set(features))
    shapes = sorted(f"features.{k}: {tuple(v.shape)} != {expected[k]}" for k, v in features.items()
                    if k in expected and tuple(v.shape) != expected[k])
    extra = sorted(set(features) - set(expected))
    if other or missing or shapes or extra:
        raise ValueError(
            f"{path} is not a torchvision {spec.arch} file: missing features.{missing[:10]}, "
            f"unexpected {(other + ['features.' + k for k in extra])[:10]}, wrong shapes {shapes[:10]}. "
            f"LPIPS {net!r} expects {spec.filename} ({spec.url})"
        )
    return features, dropped


def load_lpips(net: str, path: str | os.PathLike) -> tuple[nn.Module, list[str]]:
    """``lpips.LPIPS`` v0.1: the package's linear heads, its trunk loaded from ``path``.

    The package's module is built on the meta device (no download, no seconds spent
    initialising weights that are replaced), then every entry of its state dict is
    loaded strictly: the heads from the package's own v0.1 file, the trunk from
    ``path``, the input scaling from the package's constants. Returns the model (eval
    mode, frozen, CPU) and the keys of ``path`` that were dropped.
    """
    import lpips  # only the scoring needs it; the inversion jobs import this module for its file list

    features, dropped = read_features(path, net)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # torchvision's `pretrained` deprecation
        model = lpips.LPIPS(net=net, version="0.1", pretrained=False, pnet_rand=True, verbose=False)
    model = model.to_empty(device="cpu")
    model.scaling_layer = lpips.ScalingLayer()  # constant buffers, rebuilt off the meta device
    trunk = _trunk(LPIPS_BACKBONES[net].arch)
    trunk.load_state_dict(features, strict=True)
    model.load_state_dict(_lpips_state(model, net, trunk), strict=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), dropped


def _head_file(net: str) -> Path:
    import lpips  # only the scoring needs it; the inversion jobs import this module for its file list

    return Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"


def _lpips_state(model: nn.Module, net: str, trunk: nn.Sequential) -> dict[str, torch.Tensor]:
    """A value for every key of the package model's state dict.

    Keys: ``lin{i}.*`` (heads; ``lins.{i}.*`` are aliases of the same modules),
    ``net.slice{k}.{j}.*`` (trunk layer ``j``: the package slices the torchvision
    ``features`` and keeps the layer indices as names), ``scaling_layer.*``.
    """
    heads = torch.load(_head_file(net), map_location="cpu", weights_only=True)
    trunk_state = trunk.state_dict()
    scaling = {f"scaling_layer.{k}": v for k, v in model.scaling_layer.state_dict().items()}
    state = {}
    for key in model.state_dict():
        if key.startswith("lins."):
            i, rest = key[len("lins."):].split(".", 1)
            state[key] = heads[f"lin{i}.{rest}"]
        elif key.startswith("lin"):
            state[key] = heads[key]
        elif key.startswith("net.slice"):
            state[key] = trunk_state[key.split(".", 2)[2]]
        else:
            state[key] = scaling[key]
    unused = sorted(set(heads) - set(state)) + sorted(
        f"features.{k}" for k in set(trunk_state) - {k.split(".", 2)[2] for k in state if k.startswith("net.")})
    if unused:
        raise RuntimeError(f"LPIPS {net}: weights {unused} have no place in the package's model; "
                           "is the installed `lpips` version supported?")
    return state


def _random_state(arch: str, seed: int, features_only: bool) -> dict[str, torch.Tensor]:
    """A seeded random backbone, initialised from numpy (``weights.demo.seeded_init``) so
    every machine writes the same bytes; VGG16's trunk alone when only features are kept
    (building its classifier takes seconds)."""
    if arch == "vgg16" and features_only:
        model = nn.Module()
        model.features = vgg.make_layers(vgg.cfgs["D"])
    else:
        model = getattr(torchvision.models, arch)(weights=None)
    state = seeded_init(model, seed).state_dict()
    if features_only:
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    return {k: v.contiguous() for k, v in state.items()}


def demo_lpips_bytes(net: str, seed: int = 0) -> bytes:
    """A seeded random backbone file for ``net``, as bytes (identical for the same seed).

    ``torch.save`` to a path names the zip's root folder after the file and so differs
    between temporary names; saving to a buffer uses a fixed root name.
    """
    spec = _check_net(net)
    return torch_bytes(_random_state(spec.arch, seed + LPIPS_NETS.index(net), features_only=net != "squeeze"))


def write_demo_lpips_weights(out: str | os.PathLike, net: str, seed: int = 0) -> Path:
    """Write the demo backbone file for ``net`` to ``out`` (atomically, deterministic bytes)."""
    out = Path(out)
    write_bytes(out, demo_lpips_bytes(net, seed))
    return out
