"""Frozen-backbone feature extraction, computed once per (model, dataset) and cached."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medtransfer.common import atomic_path


@dataclass
class FeatureSet:
    """Pooled features of every image of a dataset index, in index order.

    ``split`` holds ``train``/``test`` per row; ``meta`` carries provenance
    (model, dataset, weights_sha256, weights_demo, split rule, precision,
    preprocessing, seed, class names).
    """

    features: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) str
    meta: dict[str, Any] = field(default_factory=dict)

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == name
        return self.features[mask], self.labels[mask]

    @property
    def num_classes(self) -> int:
        return len(self.meta.get("classes", [])) or int(self.labels.max()) + 1


def save_features(path: str | os.PathLike, fs: FeatureSet) -> None:
    with atomic_path(path) as tmp:
        np.savez(
            tmp, features=fs.features.astype(np.float32), labels=fs.labels.astype(np.int64),
            split=fs.split.astype(str), meta=np.array(json.dumps(fs.meta, sort_keys=True)),
        )


def load_features(path: str | os.PathLike) -> FeatureSet:
    with np.load(path, allow_pickle=False) as data:
        return FeatureSet(
            features=data["features"], labels=data["labels"], split=data["split"],
            meta=json.loads(str(data["meta"])),
        )
