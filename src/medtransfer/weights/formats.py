"""The weights file formats, one record each: the single place that knows them.

Convert, demo, inspect, the model registry and the command line are all derived from
``FORMATS``. A record holds a format's plain facts (name, what the file is, the default
input normalisation, the padding of the framework that trained it, the architectures it
can hold) and names the module that implements it. That module defines three functions:

- ``convert(path: Path) -> Converted``: the backbone under torchvision names, plus every
  dropped source key with its reason (``medtransfer.weights.base.Converted``);
- ``write_demo(state: dict[str, Tensor], out: Path, seed: int) -> None``: a torchvision
  ResNet-50 state dict written in the format's own published file layout;
- ``detect(probe: Probe) -> dict | None``: a summary (``container``, ``count``, ``keys``...)
  when the file is in this format, else ``None`` (``medtransfer.weights.base.Probe``).

Adding a format is one new module with those functions plus one ``FormatRecord`` line
below. This module imports no torch (the workflow's DAG building reads it through the
model registry); a record imports its module only when one of its functions is called.
The modules never import this one, the registry, convert, demo or inspect, so there is
no import cycle to hide.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: importing base would import torch
    from medtransfer.weights.base import Converted, Probe



@dataclass(frozen=True)
class ArchRecord:
    """One backbone architecture: everything a protocol needs to know about it.

    ``builder`` is the torchvision constructor; ``head`` the prefix of its classifier, which
    the backbone replaces by the identity so that it returns the pooled features (``dim``
    wide); ``target_layer`` the module whose output is the last feature map before pooling
    (the reconstruction target); ``stem_pool`` the stem max-pool (the one a framework's
    "SAME" padding changes); ``paddings`` the framework paddings it can be built with.
    """

    name: str
    builder: str
    dim: int
    head: str
    target_layer: str
    stem_pool: str
    paddings: tuple[str, ...] = ("torch",)


# Backbones a converted file can be built as: one line per architecture (kept torch-free here;
# medtransfer.weights.backbones builds them). DenseNet-121: features -> ReLU -> global average pool, and the
# reconstruction target is denseblock4's output, before the final norm (as published).
BACKBONES: dict[str, ArchRecord] = {
    record.name: record for record in [
        ArchRecord("resnet18", "resnet18", 512, "fc.", "layer4", "maxpool",
                   ("torch", "tf_same", "tf_same_maxpool")),
        ArchRecord("resnet50", "resnet50", 2048, "fc.", "layer4", "maxpool",
                   ("torch", "tf_same", "tf_same_maxpool")),
        ArchRecord("densenet121", "densenet121", 1024, "classifier.", "features.denseblock4",
                   "features.pool0"),
    ]
}
ARCHITECTURES: tuple[str, ...] = tuple(BACKBONES)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MoCo-CXR's chest X-ray statistics, the same on every channel (its authors' data loader).
CXR_MEAN = (0.5020, 0.5020, 0.5020)
CXR_STD = (0.085585, 0.085585, 0.085585)


@dataclass(frozen=True)
class Normalisation:
    """An input normalisation: what it does, and the per-channel ``mean`` / ``std`` applied after
    scaling to [0, 1] (None for none; ``histeq`` has none either: ``backbones.normalise``
    equalises the image instead, by the name kept in ``WeightsMeta.normalisation``)."""

    summary: str
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


# Input normalisations by name.
NORMALISATIONS: dict[str, Normalisation] = {
    "imagenet": Normalisation("ImageNet mean/std after scaling to [0, 1]", IMAGENET_MEAN, IMAGENET_STD),
    "none": Normalisation("inputs in [0, 1], no mean/std (SimCLR-v1)"),
    "cxr": Normalisation("chest X-ray mean 0.5020 / std 0.085585 on every channel after scaling to [0, 1] "
                         "(MoCo-CXR)", CXR_MEAN, CXR_STD),
    "histeq": Normalisation("per-image histogram equalisation (one 256-bin CDF of all three channels' values, "
                            "colour kept) to [0, 255], no mean/std (CovidPrognosis' MIMIC-CheXpert models)"),
}
# Framework paddings a converted backbone can emulate (built by medtransfer.weights.backbones).
PADDINGS: tuple[str, ...] = ("torch", "tf_same", "tf_same_maxpool")


@dataclass(frozen=True)
class FormatRecord:
    """One weights file format; ``module`` implements convert / write_demo / detect."""

    name: str
    module: str
    summary: str
    normalisation: str = "imagenet"
    padding: str = "torch"
    archs: tuple[str, ...] = ARCHITECTURES

    def __post_init__(self) -> None:
        if self.normalisation not in NORMALISATIONS or self.padding not in PADDINGS:
            raise ValueError(f"format {self.name!r}: normalisation {self.normalisation!r} or padding "
                             f"{self.padding!r} is not one of {sorted(NORMALISATIONS)} / {PADDINGS}")
        if not set(self.archs) <= set(ARCHITECTURES):
            raise ValueError(f"format {self.name!r}: archs {self.archs} are not all in {ARCHITECTURES}")

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.module)

    def convert(self, path: Path) -> Converted:
        """The backbone under torchvision names and the dropped keys of the source at ``path``."""
        return self.implementation().convert(Path(path))

    def write_demo(self, state: dict[str, Any], out: Path, seed: int) -> None:
        self.implementation().write_demo(state, Path(out), seed)

    def detect(self, probe: Probe) -> dict[str, Any] | None:
        return self.implementation().detect(probe)


def _index(*records: FormatRecord) -> dict[str, FormatRecord]:
    return {record.name: record for record in records}


# One line per format; the order is the order in which inspect tries them.
FORMATS: dict[str, FormatRecord] = _index(
    FormatRecord("torchvision", "medtransfer.weights.plain",
                 "a plain torchvision state dict (conv1.weight, layer1.0..., fc.*)"),
    FormatRecord("moco", "medtransfer.weights.moco",
                 "a MoCo training checkpoint: 'state_dict' with module.encoder_q.*, encoder_k, queue"),
    FormatRecord("lightning_moco", "medtransfer.weights.lightning",
                 "a PyTorch Lightning MoCo checkpoint (CovidPrognosis): 'state_dict' with model.encoder_q.*, "
                 "encoder_k, queue", normalisation="histeq"),
    FormatRecord("swav", "medtransfer.weights.swav",
                 "a SwAV checkpoint: module.* with projection_head and prototypes"),
    FormatRecord("pirl", "medtransfer.weights.pirl",
                 "a PyContrast PIRL checkpoint: 'model' with module.encoder.*, heads and jigsaw branch"),
    FormatRecord("byol", "medtransfer.weights.byol",
                 "BYOL's dill pickle of Haiku parameters (experiment_state, step, rng)",
                 padding="tf_same", archs=("resnet50",)),
    FormatRecord("simclr_tf", "medtransfer.weights.simclr",
                 "a SimCLR-v1 TensorFlow 1 checkpoint (the published zip, a folder, a prefix or .index)",
                 normalisation="none", padding="tf_same_maxpool", archs=("resnet50",)),
)


def get_format(name: str) -> FormatRecord:
    """The record of format ``name``; the error lists the known formats."""
    if name not in FORMATS:
        raise ValueError(f"unknown weights format {name!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[name]
