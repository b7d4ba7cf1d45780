"""The published models: where their files come from and how to read and feed them.

Facts in docs/models.md. A study config may override any field of a registered model (e.g. a local ``path`` or a
mirror ``url``) or add a model of its own with ``url`` or ``path`` and ``format``. What a
format implies (default normalisation, architectures it can hold) comes from its record in
``formats.FORMATS``. This module imports no torch: ``snakemake -n`` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from medtransfer.weights.formats import ARCHITECTURES, FORMATS, NORMALISATIONS


@dataclass(frozen=True)
class ModelSpec:
    """One model: source (``url`` or local ``path``), file ``format``, how to feed it.

    ``path`` may also be a TensorFlow checkpoint prefix (``.../model.ckpt-225206``; see
    ``sources.source_files``). ``normalisation`` empty means the format's default (filled
    in by ``resolve_model``).

    ``sha256`` pins the source file (a prefix of at least 8 hex digits will do); when
    empty the first download records it in the lock file and later downloads are
    verified against that. ``demo`` marks randomly
    initialised stand-ins (the embedded demo study), carried into every result row.
    ``random`` marks the untrained baseline: its file is a seeded torchvision
    initialisation made locally (the demo-weights rule, without BatchNorm calibration), never
    downloaded, and every result row carries ``weights_random=True``.

    ``top1`` is the ImageNet top-1 (percent) its publishers give (torchvision's model
    documentation for torchvision's files); ``top1_study`` the value the published study
    correlated against (its ``imagenet-top1.csv``), which differs for the supervised
    ResNet-50, ResNet-18 and DenseNet-121. ``correlation.top1`` picks one.
    """

    name: str
    format: str
    url: str = ""
    path: str = ""
    filename: str = ""
    sha256: str = ""
    arch: str = "resnet50"
    normalisation: str = ""
    top1: float | None = None
    top1_study: float | None = None
    demo: bool = False
    random: bool = False
    notes: str = ""


TORCHVISION_V1 = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
_TV = "https://download.pytorch.org/models/"
_COVID = "https://dl.fbaipublicfiles.com/CovidPrognosis/pretrained_models/"

def _complete(spec: ModelSpec) -> ModelSpec:
    """Check ``spec`` against its format's record and fill in the default normalisation."""
    name = spec.name
    if spec.format not in FORMATS:
        raise ValueError(f"model {name!r}: unknown format {spec.format!r}; expected one of {sorted(FORMATS)}")
    record = FORMATS[spec.format]
    normalisation = spec.normalisation or record.normalisation
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"model {name!r}: unknown normalisation {normalisation!r}; "
                         f"expected one of {sorted(NORMALISATIONS)}")
    if spec.arch not in ARCHITECTURES:
        raise ValueError(f"model {name!r}: unknown arch {spec.arch!r}; expected one of {ARCHITECTURES}")
    if spec.random and not spec.url.startswith("file:"):
        raise ValueError(f"model {name!r}: random: true is made locally; its `url` must be a file: URL "
                         f"(resources/demo/weights/<model>/<file>), not {spec.url!r}")
    if spec.arch not in record.archs:
        raise ValueError(f"model {name!r}: format {spec.format!r} holds only {record.archs}, not arch "
                         f"{spec.arch!r}; remove `arch` or correct the `format`")
    return replace(spec, normalisation=normalisation)


REGISTRY: dict[str, ModelSpec] = {
    spec.name: _complete(spec)
    for spec in [
        ModelSpec("supervised", "torchvision", TORCHVISION_V1, filename="resnet50-0676ba61.pth",
                  sha256="0676ba61", top1=76.1, top1_study=77.2, notes="torchvision ResNet50_Weights.IMAGENET1K_V1"),
        ModelSpec("moco-v2", "moco",
                  "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
                  filename="moco_v2_800ep_pretrain.pth.tar", top1=71.1, top1_study=71.1),
        ModelSpec("swav", "swav", "https://dl.fbaipublicfiles.com/deepcluster/swav_800ep_pretrain.pth.tar",
                  filename="swav_800ep_pretrain.pth.tar", top1=75.3, top1_study=75.3),
        ModelSpec("pirl", "pirl",
                  "https://www.dropbox.com/sh/87d24jqsl6ra7t2/AADN4jKnvTI0U5oT6hTmQZz8a/PIRL.pth?dl=1",
                  filename="PIRL.pth", top1=61.7, top1_study=61.7),
        ModelSpec("byol", "byol", "https://storage.googleapis.com/deepmind-byol/checkpoints/pretrain_res50x1.pkl",
                  filename="pretrain_res50x1.pkl", top1=74.3, top1_study=74.3),
        ModelSpec("simclr-v1", "simclr_tf", "https://storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip",
                  filename="ResNet50_1x.zip", top1=69.3, top1_study=69.3,
                  notes="login-only URL; the same files are in the public bucket gs://simclr-checkpoints/simclrv1/1x"),
        # The second wave: ImageNet ResNet-18 / DenseNet-121, chest X-ray models, an untrained baseline.
        ModelSpec("supervised-r18", "torchvision", _TV + "resnet18-f37072fd.pth", filename="resnet18-f37072fd.pth",
                  sha256="f37072fd", arch="resnet18", top1=69.758,
                  top1_study=72.12, notes="torchvision ResNet18_Weights.IMAGENET1K_V1"),
        ModelSpec("supervised-d121", "torchvision", _TV + "densenet121-a639ec97.pth",
                  filename="densenet121-a639ec97.pth", sha256="a639ec97", arch="densenet121", top1=74.434,
                  top1_study=74.98,
                  notes="torchvision DenseNet121_Weights.IMAGENET1K_V1 (old DenseNet key names, renamed)"),
        *[ModelSpec(f"mimic-chexpert_lr_{lr}", "lightning_moco",
                    _COVID + f"mimic-chexpert_lr_{lr}_bs_128_fd_128_qs_65536.pt",
                    filename=f"mimic-chexpert_lr_{lr}_bs_128_fd_128_qs_65536.pt", arch="densenet121",
                    notes="CovidPrognosis MoCo on MIMIC-CXR + CheXpert; no ImageNet training, so no ImageNet top-1")
          for lr in ("0.01", "0.1", "1.0")],
        ModelSpec("moco-cxr-r18", "moco", "https://storage.googleapis.com/moco-cxr/r8w-00001.pth.tar",
                  filename="r8w-00001.pth.tar", arch="resnet18", normalisation="cxr",
                  notes="MoCo-CXR on CheXpert (from ImageNet initialisation); no ImageNet top-1 published"),
        ModelSpec("moco-cxr-d121", "moco", "https://storage.googleapis.com/moco-cxr/d1w-00001.pth.tar",
                  filename="d1w-00001.pth.tar", arch="densenet121", normalisation="cxr",
                  notes="MoCo-CXR on CheXpert (from ImageNet initialisation); no ImageNet top-1 published"),
        ModelSpec("random", "torchvision", "file:resources/demo/weights/random/resnet50-random.pth",
                  filename="resnet50-random.pth", random=True,
                  notes="untrained baseline: seeded torchvision initialisation, made locally"),
    ]
}

_FIELDS = {f.name for f in fields(ModelSpec)}


def resolve_model(name: str, overrides: Mapping[str, Any] | None = None) -> ModelSpec:
    """The registry entry for ``name`` with the config's ``overrides`` applied.

    A name not in the registry is a user model: it must give ``format`` and a ``url``
    or ``path``.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - _FIELDS)
    if unknown:
        raise ValueError(f"model {name!r}: unknown setting(s) {unknown}; allowed: {sorted(_FIELDS - {'name'})}")
    if name in REGISTRY:
        if ("url" in overrides or "path" in overrides) and "sha256" not in overrides:
            overrides["sha256"] = ""  # a registry pin belongs to the registry's URL, not a mirror
        if "format" in overrides and "normalisation" not in overrides:
            overrides["normalisation"] = ""  # the new format's default
        spec = replace(REGISTRY[name], **overrides)
    elif "format" not in overrides or not (overrides.get("url") or overrides.get("path")):
        raise ValueError(
            f"model {name!r} is not one of the published models {sorted(REGISTRY)}; a model of your own "
            "needs `format` and a `url` or `path` in the config"
        )
    else:
        spec = ModelSpec(name=name, **overrides)
    return _complete(spec)


# ---------------------------------------------------------------- auxiliary weights


@dataclass(frozen=True)
class AuxiliaryFile:
    """A weights file a stage needs besides the studied models (LPIPS backbones).

    Downloaded by the same rule as the models (``resources/weights/download/<name>/``),
    with the same checks; ``arch`` is the torchvision architecture the file holds.
    """

    name: str
    arch: str
    url: str = ""
    path: str = ""
    filename: str = ""
    sha256: str = ""
    demo: bool = False


AUXILIARY: dict[str, AuxiliaryFile] = {
    f.name: f for f in [
        AuxiliaryFile("lpips-alex", "alexnet", _TV + "alexnet-owt-7be5be79.pth",
                      filename="alexnet-owt-7be5be79.pth", sha256="7be5be79"),
        AuxiliaryFile("lpips-vgg", "vgg16", _TV + "vgg16-397923af.pth",
                      filename="vgg16-397923af.pth", sha256="397923af"),
        AuxiliaryFile("lpips-squeeze", "squeezenet1_1", _TV + "squeezenet1_1-b8a52dc0.pth",
                      filename="squeezenet1_1-b8a52dc0.pth", sha256="b8a52dc0"),
    ]
}


def resolve_auxiliary(name: str, overrides: Mapping[str, Any] | None = None) -> AuxiliaryFile:
    """The registry's ``name`` with the config's ``url``/``path``/``sha256``/``demo`` applied."""
    if name not in AUXILIARY:
        raise ValueError(f"unknown auxiliary weights {name!r}; expected one of {sorted(AUXILIARY)}")
    overrides = dict(overrides or {})
    if ("url" in overrides or "path" in overrides) and "sha256" not in overrides:
        overrides["sha256"] = ""  # the registry pin belongs to the registry's URL, not a mirror
    return replace(AUXILIARY[name], **overrides)
