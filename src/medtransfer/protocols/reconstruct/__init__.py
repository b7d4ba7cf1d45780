"""Reconstruction protocol: how much of an image survives in a model's last feature map.

For a few seeded test images per dataset, a deep-image-prior generator is optimised so
that the frozen backbone's feature map of the generated image matches the original's
(``invert``); the reconstructions are then scored with LPIPS, PSNR and SSIM against the
originals, as pixels and as the model sees them (``score``), and drawn (``plot_grid``,
``plot_lpips``). See docs/protocols.md (Reconstruction) for the published settings and
their weaknesses this fixes.

Batching, and why it is exact
-----------------------------
Published code inverts one image per run; at 3,000 steps that is about 75 s per image on
a GPU, mostly launch overhead of small layers. Here all N images of a (model, dataset)
are optimised together, each by its own generator, and the N generators are *one*
module whose layers are grouped convolutions (``groups=N``) over channels laid out
member-major. Nothing mixes members:

- a grouped convolution's group ``g`` reads only channels of member ``g``;
- BatchNorm (train mode, batch 1, as in the deep image prior) normalises each channel
  over its own H x W, so its statistics are per member; average pooling is per channel;
  LeakyReLU, nearest upsampling, the sigmoid and the final clip are per element; the
  skip concat interleaves per member;
- the backbone is in eval mode, so each image's features depend on that image only;
- the loss is the *sum* of the per-image MSEs, so the gradient reaching member ``g``
  is exactly that of its own image's loss;
- Adam is elementwise (its moments, bias correction and eps act per element; no weight
  decay), so one Adam over the stacked parameters is N independent Adams.

Each member is initialised exactly as a lone generator seeded with its image's seed
(``image_seeds``: a function of the run seed and the image's row), and has its own noise.
In float64 a batch of N and N runs of one give identical bytes (tested). In float32 the
two differ by rounding (grouped and plain convolutions sum in different orders), and
this optimisation amplifies rounding: BatchNorm over tiny deep feature maps, and Adam,
which turns mathematically-zero gradients (biases before BatchNorm) into full-size
steps, make pixels of two fp32 runs drift apart within tens of steps. Same settings,
same device and same batch give the same bytes. The alternative, ``torch.func.vmap``
over a functional generator, computes the same grouped convolutions underneath.

Public API (what the workflow calls)
------------------------------------
``invert``, ``score``, ``plot_grid``, ``plot_lpips``, ``write_demo_lpips_weights``,
``LPIPS_BACKBONES`` (the three torchvision files LPIPS needs, for the download rule),
``TARGET_LAYERS`` / ``target_layer`` (arch -> inverted layer; config-time checks). The
settings are checked by ``medtransfer.protocols.checks.check_reconstruction`` (torch-free,
run when the DAG is built).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. The names load on first use (PEP 562), so a job that needs
# one torch-free part (the figures: ``plots``, ``files``) does not import torch with the rest.
_HOMES = {
    "TARGET_LAYERS": "inversion", "invert": "inversion", "target_layer": "inversion",
    "LPIPS_BACKBONES": "perceptual", "LPIPS_NETS": "perceptual", "load_lpips": "perceptual",
    "write_demo_lpips_weights": "perceptual",
    "plot_grid": "plots", "plot_lpips": "plots",
    "METRICS": "files", "load_reconstructions": "files",
    "score": "scoring",
}
__all__ = [  # the keys of _HOMES (a test checks)
    "LPIPS_BACKBONES", "LPIPS_NETS", "METRICS", "TARGET_LAYERS", "invert", "load_lpips", "load_reconstructions",
    "plot_grid", "plot_lpips", "score", "target_layer", "write_demo_lpips_weights",
]

if TYPE_CHECKING:
    from medtransfer.protocols.reconstruct.files import METRICS, load_reconstructions
    from medtransfer.protocols.reconstruct.inversion import TARGET_LAYERS, invert, target_layer
    from medtransfer.protocols.reconstruct.perceptual import (
        LPIPS_BACKBONES,
        LPIPS_NETS,
        load_lpips,
        write_demo_lpips_weights,
    )
    from medtransfer.protocols.reconstruct.plots import plot_grid, plot_lpips
    from medtransfer.protocols.reconstruct.scoring import score


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
