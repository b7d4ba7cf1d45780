"""A study config resolved into what the workflow needs: models, datasets, targets.

The Snakemake rule files stay declarative; their input functions call this class,
which is plain Python and unit-tested. Path templates live here once.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medtransfer.data.demo import DEMO_KINDS
from medtransfer.weights.registry import ModelSpec, resolve_model

DEMO_WEIGHTS = "resources/demo/weights/{model}/{filename}"
DOWNLOAD = "resources/weights/download/{model}/{filename}"
WEIGHTS = "resources/weights/{model}.pt"
DEMO_DATA = "resources/demo/data/{dataset}"
DEMO_LABELS = "resources/demo/data/{dataset}/labels.csv"
INDEX = "results/data/{dataset}/index.csv"
CACHE = "results/cache/{dataset}/images.npy"
FEATURES = "results/features/{model}/{dataset}.npz"
ROWS = "results/{protocol}/{model}/{dataset}/{variant}.csv"
PREDICTIONS = "results/{protocol}/{model}/{dataset}/{variant}.predictions.npz"
EPISODES = "results/fewshot/episodes/{dataset}/{variant}.npz"
COMPARE = "results/compare/{protocol}/{dataset}/{variant}.csv"
PROTOCOL_NAMES = ("linear", "fewshot", "finetune")
MANY_SHOT = "manyshot"


@dataclass(frozen=True)
class Unit:
    """One (protocol, dataset, variant) cell that every model is evaluated on."""

    protocol: str
    dataset: str
    variant: str


class Study:
    """The resolved study. Raises a clear error for what the schema cannot check."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        self.models: dict[str, ModelSpec] = {
            name: resolve_model(name, spec or {}) for name, spec in config["models"].items()
        }
        self.datasets: dict[str, dict[str, Any]] = dict(config["datasets"])
        self.protocols = [p for p in PROTOCOL_NAMES if p in config["protocols"]]
        if not self.protocols:
            raise ValueError(f"config: `protocols` names none of {PROTOCOL_NAMES}; add at least one")
        for name, spec in self.datasets.items():
            self._check_dataset(name, spec)

    def _check_dataset(self, name: str, spec: Mapping[str, Any]) -> None:
        kind = spec["kind"]
        if kind == "csv" and not spec.get("csv"):
            raise ValueError(f"dataset {name!r}: kind csv needs `csv: <file with path,label columns>`")
        if kind not in DEMO_KINDS and kind != "csv" and not spec.get("root"):
            raise ValueError(f"dataset {name!r}: kind {kind} needs `root:` (the folder holding the download)")

    # -- models ------------------------------------------------------------------
    def source_filename(self, model: str) -> str:
        spec = self.models[model]
        if spec.filename:
            return spec.filename
        name = PurePosixPath(urllib.parse.urlparse(spec.url).path).name
        return name or "weights"

    def weights_source(self, model: str) -> str:
        """The file the converter reads: a local ``path`` as is, else the download."""
        spec = self.models[model]
        if spec.path:
            return spec.path
        return DOWNLOAD.format(model=model, filename=self.source_filename(model))

    def download_inputs(self, model: str) -> list[str]:
        """A ``file:`` URL's file is an input, so a rule that makes it (demo weights) runs first."""
        url = self.models[model].url
        if not url.startswith("file:"):
            return []
        path = urllib.parse.urlparse(url).path if url.startswith("file://") else url[len("file:"):]
        return [path]

    def demo_weights_format(self, model: str) -> str:
        return self.models[model].format

    # -- datasets ----------------------------------------------------------------
    def is_demo(self, dataset: str) -> bool:
        return self.datasets[dataset]["kind"] in DEMO_KINDS

    def dataset_root(self, dataset: str) -> str:
        spec = self.datasets[dataset]
        if self.is_demo(dataset):
            return DEMO_DATA.format(dataset=dataset)
        root = spec.get("root", "")
        if not root:
            return ""
        return str(Path(self.config.get("data_root", ".")) / root)

    def dataset_csv(self, dataset: str) -> str:
        spec = self.datasets[dataset]
        if self.is_demo(dataset):
            return DEMO_LABELS.format(dataset=dataset)
        if spec.get("csv"):
            return str(Path(self.config.get("data_root", ".")) / spec["csv"])
        return ""

    def index_inputs(self, dataset: str) -> list[str]:
        csv = self.dataset_csv(dataset)
        return [csv] if csv else []

    def n_way(self, dataset: str) -> int:
        own = self.datasets[dataset].get("fewshot", {}).get("n_way")
        return int(own or self.config["protocols"]["fewshot"].get("n_way", 2))

    # -- targets -----------------------------------------------------------------
    def variants(self, protocol: str) -> list[str]:
        if protocol == "fewshot":
            return [f"{k}shot" for k in self.config["protocols"]["fewshot"].get("n_support", [20])]
        return [MANY_SHOT]

    def units(self) -> list[Unit]:
        return [Unit(p, d, v) for p in self.protocols for d in self.datasets for v in self.variants(p)]

    def rows(self, unit: Unit) -> dict[str, str]:
        return {m: ROWS.format(protocol=unit.protocol, model=m, dataset=unit.dataset, variant=unit.variant)
                for m in self.models}

    def predictions(self, unit: Unit) -> dict[str, str]:
        return {m: PREDICTIONS.format(protocol=unit.protocol, model=m, dataset=unit.dataset, variant=unit.variant)
                for m in self.models}

    def table_inputs(self, protocol: str | None = None) -> list[str]:
        """Every row file of the study (each model's, then the paired comparisons)."""
        units = [u for u in self.units() if protocol in (None, u.protocol)]
        files = [f for u in units for f in self.rows(u).values()]
        return files + [COMPARE.format(protocol=u.protocol, dataset=u.dataset, variant=u.variant) for u in units]
