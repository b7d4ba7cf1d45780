"""What the reconstruction stage writes and reads back: the reconstructions file of ``invert``
and the names of ``score``'s metrics. Torch-free, so the figure job imports no torch."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

IMAGE_METRICS = ("lpips_alex", "lpips_vgg", "lpips_squeeze", "lpips_mean", "psnr", "ssim")
# Suffix of the same metrics between the two images as the model sees them (scoring.model_view).
MODEL_VIEW = "_model_view"
METRICS = IMAGE_METRICS + tuple(m + MODEL_VIEW for m in IMAGE_METRICS)


def load_reconstructions(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of an ``invert`` output, with ``meta`` parsed."""
    with np.load(path, allow_pickle=False) as data:
        out = {k: data[k] for k in data.files}
    if "reconstructions" not in out or "originals" not in out:
        raise ValueError(f"{path} is not a reconstruction file (no originals/reconstructions); "
                         "produce it with medtransfer.protocols.reconstruct.invert")
    out["meta"] = json.loads(str(out["meta"]))
    return out
