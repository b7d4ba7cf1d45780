"""Scores of reconstructions: LPIPS (AlexNet, VGG, SqueezeNet and their mean), PSNR, SSIM.

Original and reconstruction are compared in [0, 1] as the model saw them before its
input normalisation (LPIPS maps them to [-1, 1] itself): the metrics of ``IMAGE_METRICS``.
The same metrics with the suffix ``_model_view`` compare the two images as the model sees
them (``model_view``): for a histogram-equalised model both equalised, since such a model
cannot tell an image from any tone curve of it, so its reconstruction is pinned down only
up to one; for every other model they equal the first ones. Each metric's value is the
mean over the inverted images with a seeded percentile-bootstrap CI over images; the
per-image values go to the predictions file so models can be compared paired.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medtransfer.protocols.reconstruct.files import IMAGE_METRICS, METRICS, MODEL_VIEW, load_reconstructions
from medtransfer.protocols.reconstruct.perceptual import LPIPS_NETS, load_lpips
from medtransfer.results import write_values
from medtransfer.runtime import resolve_device
from medtransfer.weights.backbones import equalise_histogram

PROTOCOL = "reconstruction"
SETTING = "dip"  # one setting for every model, whatever its target layer (in details)


def lpips_distances(model: torch.nn.Module, a: np.ndarray, b: np.ndarray, device: str = "cpu",
                    batch_size: int = 16) -> np.ndarray:
    """LPIPS between image stacks ``a`` and ``b`` (N, H, W, 3) in [0, 1]: (N,) float64."""
    model = model.to(device)
    out = []
    with torch.no_grad():
        for lo in range(0, len(a), batch_size):
            x, y = (torch.from_numpy(np.ascontiguousarray(v[lo:lo + batch_size], dtype=np.float32))
                    .permute(0, 3, 1, 2).to(device) for v in (a, b))
            out.append(model(x, y, normalize=True).reshape(-1).double().cpu().numpy())
    return np.concatenate(out)


def pixel_scores(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """PSNR (dB) and SSIM per image (scikit-image, data range 1, SSIM over RGB channels)."""
    with np.errstate(divide="ignore"):  # identical images (e.g. as a histeq model sees them): PSNR is +inf
        psnr = [peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)]
    ssim = [structural_similarity(x, y, data_range=1.0, channel_axis=-1) for x, y in zip(a, b)]
    return {"psnr": np.array(psnr, dtype=np.float64), "ssim": np.array(ssim, dtype=np.float64)}


def model_view(images: np.ndarray, normalisation: str) -> np.ndarray:
    """Images (N, H, W, 3) in [0, 1] as a model with ``normalisation`` sees them, in [0, 1].

    ``histeq``: the model's own input (``equalise_histogram``, each image by its own
    histogram), its [0, 255] divided by 255. Any other normalisation is one fixed affine map
    per channel, undone exactly, so the images are returned as they are.
    """
    if normalisation != "histeq":
        return images
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64)).permute(0, 3, 1, 2)
    return (equalise_histogram(x) / 255.0).permute(0, 2, 3, 1).numpy()


def image_scores(originals: np.ndarray, reconstructions: np.ndarray,
                 lpips_weights: Mapping[str, str | os.PathLike], device: str = "cpu") -> dict[str, np.ndarray]:
    """Every metric of ``IMAGE_METRICS`` per image; inputs (N, H, W, 3) in [0, 1]."""
    missing = [n for n in LPIPS_NETS if n not in lpips_weights]
    if missing:
        raise ValueError(f"LPIPS backbone file(s) missing for {missing}; give one path per net of {list(LPIPS_NETS)}")
    a, b = np.asarray(originals, np.float64), np.asarray(reconstructions, np.float64)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected two (N, H, W, 3) image stacks of one shape, got {a.shape} and {b.shape}")
    scores = {}
    for net in LPIPS_NETS:
        model, _ = load_lpips(net, lpips_weights[net])
        scores[f"lpips_{net}"] = lpips_distances(model, a, b, device)
    scores["lpips_mean"] = np.mean([scores[f"lpips_{n}"] for n in LPIPS_NETS], axis=0)
    scores.update(pixel_scores(a, b))
    return scores


def score(
    *, reconstructions_npz: str | os.PathLike, lpips_weights: Mapping[str, str | os.PathLike],
    out_rows_csv: str | os.PathLike, out_predictions_npz: str | os.PathLike, seed: int = 0,
    n_bootstrap: int = 1000, device: str = "auto",
) -> dict[str, np.ndarray]:
    """Score one ``invert`` output: tidy rows (``METRICS``) and per-image values.

    ``lpips_weights``: net (``alex``, ``vgg``, ``squeeze``) -> torchvision weights file.
    """
    data = load_reconstructions(reconstructions_npz)
    meta = data["meta"]
    if "normalisation" not in meta or "clipped" not in data:
        raise ValueError(f"{reconstructions_npz} was written by an older medtransfer (no normalisation or "
                         "clipped share recorded); delete it and re-run the reconstruct rule")
    originals = data["originals"].astype(np.float64) / 255.0
    device = resolve_device(device)
    scores = image_scores(originals, data["reconstructions"], lpips_weights, device)
    if meta["normalisation"] == "histeq":
        views = (model_view(originals, "histeq"), model_view(data["reconstructions"], "histeq"))
        seen = image_scores(*views, lpips_weights, device)
    else:
        seen = scores  # the model sees the images themselves (model_view): same values, not recomputed
    scores.update({m + MODEL_VIEW: seen[m] for m in IMAGE_METRICS})
    generator = meta["generator"]
    details = {"images": len(originals), "steps": meta["steps"], "lr": meta["lr"], "layer": meta["target_layer"],
               "generator": "dip_skip", "downsample": generator["downsample"], "output": generator["output"],
               "noise_px": meta["noise_size"], "lpips": "v0.1",
               "model_view": "equalise_histogram/255" if meta["normalisation"] == "histeq" else "as_is",
               "final_feature_mse": float(np.mean(data["final_loss"])),
               "clipped_share": float(np.mean(data["clipped"]))}
    write_values(rows=out_rows_csv, predictions=out_predictions_npz, protocol=PROTOCOL, setting=SETTING,
                 values={m: scores[m] for m in METRICS}, positions=data["positions"], labels=data["labels"],
                 meta=meta, seed=seed, n_bootstrap=n_bootstrap, details=details, extras={"paths": data["paths"]})
    return scores
