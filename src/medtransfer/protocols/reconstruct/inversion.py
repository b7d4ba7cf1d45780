"""Feature inversion: optimise one deep-image-prior generator per image so that the
backbone's last feature map of the generated image matches the original's.

Settings (see docs/protocols.md, Reconstruction): target = the feature map before
pooling (``TARGET_LAYERS``), backbone frozen in eval mode, fixed noise input (32
channels, U(0, 1) * 0.1, 256 px for a 224 px image), Adam lr 1e-3, 3,000 steps, MSE.
Unlike the published code, images are seeded, several per dataset, and the generated
image goes through the model's own input normalisation like every other protocol.

Output ``clip`` (as published): the generator has no final activation; its unbounded
output is what the backbone sees while optimising, and only the saved image is clipped
to [0, 1] (the published code fed the raw output to the model and clipped when saving).
``final_loss`` is the feature MSE of the saved, clipped image, so it shows what clipping
cost; ``clipped`` is each image's share of values outside [0, 1] before clipping.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.data.cache import load_indexed_cache
from medtransfer.features import run_meta
from medtransfer.progress import Progress
from medtransfer.protocols.checks import RECONSTRUCTION_KEY, check_reconstruction
from medtransfer.protocols.reconstruct.generator import (
    SkipConfig,
    build_generators,
    check_size,
    make_noise,
    noise_size,
    output_crop,
)
from medtransfer.protocols.shared import draw_test_positions, frozen_backbone
from medtransfer.runtime import autocast, resolve_device
from medtransfer.weights.backbones import normalise
from medtransfer.weights.formats import BACKBONES
from medtransfer.writers import save_npz

log = logging.getLogger(__name__)

# arch -> the module whose output is the last feature map before global pooling (from the
# architecture table; DenseNet-121: denseblock4's output, before the final norm, as published).
TARGET_LAYERS: dict[str, str] = {name: record.target_layer for name, record in BACKBONES.items()}


def target_layer(arch: str) -> str:
    """The feature layer inverted for ``arch``; an arch without an entry is an error."""
    if arch not in TARGET_LAYERS:
        raise ValueError(
            f"reconstruction has no target layer for architecture {arch!r}; known: "
            f"{sorted(TARGET_LAYERS)}. Add the name of its last feature map before pooling "
            "to its record in medtransfer.weights.formats.BACKBONES"
        )
    return TARGET_LAYERS[arch]


def image_seeds(seed: int, positions: Sequence[int]) -> np.ndarray:
    """Per image (init seed, noise seed): a function of (seed, row position) only, so an
    image's reconstruction does not depend on which images share its batch."""
    return np.array([np.random.SeedSequence([int(seed), int(p)]).generate_state(2) for p in positions],
                    dtype=np.int64).reshape(-1, 2)


class FeatureTap:
    """The output of one named module of a backbone (a forward hook)."""

    def __init__(self, net: nn.Module, layer: str) -> None:
        self.net, self.value = net, None
        self.handle = net.get_submodule(layer).register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.value = output

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.net(x)
        value, self.value = self.value, None
        return value

    def close(self) -> None:
        self.handle.remove()


@dataclass
class Inversion:
    """``images`` (N, 3, S, S) float32 in [0, 1] on the CPU (the generator's output after the
    last step, clipped); ``losses`` (steps, N): each image's feature MSE before each step, of
    the unclipped output; ``final_loss`` (N,): of ``images``; ``clipped`` (N,): each image's
    share of output values outside [0, 1] (always 0 with a sigmoid output)."""

    images: torch.Tensor
    losses: np.ndarray
    final_loss: np.ndarray
    clipped: np.ndarray


def invert_batch(
    tap: FeatureTap, normalise: Any, images: torch.Tensor, seeds: np.ndarray, *, steps: int, lr: float,
    device: str, precision: str = "fp32", cfg: SkipConfig = SkipConfig(), log_every: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Inversion:
    """Invert ``images`` (N, 3, S, S) in [0, 1] together, one generator each.

    ``seeds``: (N, 2) init and noise seed per image. ``normalise`` maps [0, 1] images to
    the backbone's input. ``dtype`` float64 (with the backbone in float64) is for
    verification only: batched and one-at-a-time runs then agree exactly (see tests).
    """
    size = images.shape[-1]
    check_size(noise_size(size), cfg)
    gen = build_generators([int(s) for s in seeds[:, 0]], cfg).to(device, dtype).train()
    noise = make_noise([int(s) for s in seeds[:, 1]], noise_size(size), cfg.in_channels).to(device, dtype)
    images = images.to(device, dtype)
    with torch.no_grad(), autocast(device, precision):
        target = tap(normalise(images)).to(dtype)
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    losses = torch.empty(steps, len(images), device=device)  # copied once at the end: no sync per step
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        with autocast(device, precision):
            feats = tap(normalise(output_crop(gen(noise), size)))
        per_image = (feats.to(dtype) - target).pow(2).mean(dim=(1, 2, 3))
        per_image.sum().backward()  # each generator only receives its own image's gradient
        opt.step()
        losses[step] = per_image.detach()
        if log_every and (step + 1) % log_every == 0:
            log.info("step %d/%d mean feature MSE %.6g", step + 1, steps, float(losses[step].mean()))
    with torch.no_grad(), autocast(device, precision):
        raw = output_crop(gen(noise), size)  # BatchNorm in train mode, as optimised
        out = raw.clamp(0.0, 1.0)  # the saved image; a no-op after a sigmoid
        final = (tap(normalise(out)).to(dtype) - target).pow(2).mean(dim=(1, 2, 3))
    clipped = ((raw < 0) | (raw > 1)).float().mean(dim=(1, 2, 3))
    return Inversion(out.float().cpu(), losses.cpu().numpy(), final.cpu().numpy().astype(np.float32),
                     clipped.cpu().numpy().astype(np.float32))


def _load(weights: str | os.PathLike, device: str, precision: str):
    net, meta = frozen_backbone(weights, device, channels_last=precision == "bf16" and device.startswith("cuda"))
    layer = target_layer(meta.arch)
    return FeatureTap(net, layer), (lambda x: normalise(x, meta)), meta, layer


def invert(
    *, weights: str | os.PathLike, cache: str | os.PathLike, index: str | os.PathLike,
    out_npz: str | os.PathLike, model: str, dataset: str, n_images: int = 8, steps: int = 3000,
    lr: float = 1e-3, seed: int = 0, device: str = "auto", precision: str = "fp32",
    batch_size: int = 16, log_every: int = 100, downsample: str = "stride", output: str = "sigmoid",
    generator: SkipConfig | None = None,
) -> dict[str, Any]:
    """Invert ``n_images`` seeded test images of one (model, dataset); write ``out_npz``.

    ``out_npz`` holds ``originals`` (N, S, S, 3) uint8 (the cached images), ``reconstructions``
    (N, S, S, 3) float32 in [0, 1], ``positions`` (rows of the index), ``paths``, ``labels``,
    ``losses`` (steps, N) feature MSE before each step, ``final_loss`` (N,) of the saved
    images, ``clipped`` (N,) share of values clipped, ``seeds`` (N, 2) and ``meta`` (JSON:
    provenance and settings). ``batch_size`` images are optimised at once (default 16); it
    changes results only by float rounding (see the package docstring). ``downsample``
    (``stride`` or ``avg``) and ``output`` (``sigmoid`` or ``clip``): see ``SkipConfig``.
    ``generator``: the generator's shape (default: the published one); its ``downsample``
    and ``output`` are replaced by the two keywords.
    """
    check_reconstruction(steps=steps, lr=lr, n_images=n_images, precision=precision, batch_size=batch_size,
                         downsample=downsample, output=output)
    generator = replace(generator or SkipConfig(), downsample=downsample, output=output)
    frame, images = load_indexed_cache(cache, index)
    positions = draw_test_positions(frame["split"].to_numpy(str), n_images, seed, RECONSTRUCTION_KEY,
                                    f"dataset {dataset!r} ({index})")
    check_size(noise_size(images.shape[1]), generator)
    device = resolve_device(device)
    tap, normalise, wmeta, layer = _load(weights, device, precision)
    seeds = image_seeds(seed, positions)
    originals = np.array(images[positions])
    start = time.perf_counter()
    parts = []
    progress = Progress(f"reconstruct {model}/{dataset}", n_images, unit="images")
    for lo in range(0, n_images, batch_size):
        x = torch.from_numpy(originals[lo:lo + batch_size]).permute(0, 3, 1, 2).float().div(255.0)
        parts.append(invert_batch(tap, normalise, x, seeds[lo:lo + batch_size], steps=steps, lr=lr,
                                  device=device, precision=precision, log_every=log_every, cfg=generator))
        progress.update(len(x))
    elapsed = time.perf_counter() - start
    tap.close()
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame, precision=precision,
                    size=images.shape[1], seed=seed)
    meta.update(protocol="reconstruction", arch=wmeta.arch, normalisation=wmeta.normalisation,
                target_layer=layer, steps=steps, lr=lr,
                n_images=n_images, batch_size=batch_size, noise_size=noise_size(images.shape[1]),
                noise="U(0,1)*0.1", generator=generator.to_dict(), device=device.split(":")[0],
                elapsed_s=round(elapsed, 3))
    result = Inversion(torch.cat([p.images for p in parts]), np.concatenate([p.losses for p in parts], axis=1),
                       np.concatenate([p.final_loss for p in parts]), np.concatenate([p.clipped for p in parts]))
    _write_npz(out_npz, originals=originals, result=result, positions=positions, frame=frame, seeds=seeds,
               meta=meta)
    return meta


def _write_npz(path, *, originals, result: Inversion, positions, frame, seeds, meta) -> None:
    save_npz(
        path, originals=originals.astype(np.uint8),
        reconstructions=result.images.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32),
        positions=positions.astype(np.int64), paths=frame["path"].to_numpy(str)[positions],
        labels=frame["label"].to_numpy(np.int64)[positions], losses=result.losses.astype(np.float32),
        final_loss=result.final_loss, clipped=result.clipped, seeds=seeds.astype(np.int64),
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
