"""A study config resolved into what the workflow needs: models, datasets, targets.

The Snakemake rule files stay declarative; their input functions call this class,
which is plain Python and unit-tested. Path templates live in ``paths``.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from medtransfer import paths
from medtransfer import protocols as registry
from medtransfer.config import default, load_schema, resolve
from medtransfer.data.adapters import COLOUR_FLAG_KINDS, MULTIVIEW_KINDS, get_adapter
from medtransfer.data.demo import DEMO_KINDS
from medtransfer.weights.registry import AuxiliaryFile, ModelSpec, resolve_auxiliary, resolve_model

# Dataset names of the correlation stage's rows over datasets (docs/protocols.md, Correlation).
POOLED_NAMES = ("all", "mean")


@dataclass(frozen=True)
class Unit:
    """One (protocol, dataset, setting) cell that every model is evaluated on."""

    protocol: str
    dataset: str
    setting: str


class Study:
    """The resolved study. Raises a clear error for what the schema cannot check."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = resolve(config)
        config = self.config
        self.models: dict[str, ModelSpec] = {
            name: resolve_model(name, spec or {}) for name, spec in config["models"].items()
        }
        self.datasets: dict[str, dict[str, Any]] = dict(config["datasets"])
        #: Dataset -> whether its images are colour: its config's ``colour`` (csv, imagefolder), else its kind's.
        self.colour: dict[str, bool] = {
            name: bool(spec.get("colour", get_adapter(spec["kind"]).colour)) for name, spec in self.datasets.items()}
        self.protocols = [p for p in registry.PROTOCOLS if p in config["protocols"]]
        if not self.protocols:
            raise ValueError(f"config: `protocols` names none of {sorted(registry.PROTOCOLS)}; add at least one")
        for name, spec in self.datasets.items():
            self._check_dataset(name, spec)
        self._check_paths()
        for protocol in self.protocols:
            registry.get(protocol).check(**self.settings(protocol))  # fails at DAG build, not in a job
        # Weights files besides the models' (LPIPS backbones), downloaded the same way.
        lpips = config["protocols"].get("reconstruction", {}).get("lpips")
        self.auxiliary: dict[str, AuxiliaryFile] = {} if lpips is None else {
            f"lpips-{net}": resolve_auxiliary(f"lpips-{net}", lpips.get(net)) for net in ("alex", "vgg", "squeeze")}
        self.downloads: dict[str, ModelSpec | AuxiliaryFile] = {**self.models, **self.auxiliary}
        if self.correlates:
            self._check_correlation()

    def _check_dataset(self, name: str, spec: Mapping[str, Any]) -> None:
        kind = spec["kind"]
        if kind == "csv" and not spec.get("csv"):
            raise ValueError(f"dataset {name!r}: kind csv needs `csv: <file with path,label columns>`")
        adapter = get_adapter(kind)
        if not adapter.from_csv and not spec.get("root"):
            raise ValueError(f"dataset {name!r}: kind {kind} needs `root:` (the folder holding the download)")
        if "colour" in spec and kind not in COLOUR_FLAG_KINDS:
            raise ValueError(f"dataset {name!r}: kind {kind} records its own colour ({adapter.colour}); `colour` is "
                             f"for the kinds {' and '.join(COLOUR_FLAG_KINDS)} only: remove it from this dataset")
        if spec.get("multiview") and not adapter.multiview:
            raise ValueError(f"dataset {name!r}: multiview: true, but kind {kind!r} has no multi-view pairs; "
                             f"kinds with pairs: {list(MULTIVIEW_KINDS)}. Remove multiview from this dataset")
        try:
            options = adapter.resolve_options(spec.get("options"))
        except ValueError as err:
            raise ValueError(f"dataset {name!r}: {err}") from None
        classes = list(options.get("classes") or adapter.class_names(options))
        if "fewshot" in self.protocols and classes and self.n_way(name) > len(classes):
            own = spec.get("fewshot", {}).get("n_way")
            where = f"datasets.{name}.fewshot.n_way" if own else "protocols.fewshot.n_way"
            raise ValueError(f"dataset {name!r}: few-shot n_way {self.n_way(name)} ({where}) is more than its "
                             f"{len(classes)} classes {classes}; allowed: 2 to {len(classes)}. Set "
                             f"datasets.{name}.fewshot.n_way.")

    def _check_correlation(self) -> None:
        """Excluded models are models of the study; no dataset takes a name of the pooled rows."""
        unknown = [m for m in self.config["correlation"]["exclude"] or [] if m not in self.models]
        if unknown:
            raise ValueError(f"correlation.exclude names {unknown}, not models of this study {list(self.models)}; "
                             "list model names from `models` (or [] to keep every model)")
        taken = [d for d in self.datasets if d in POOLED_NAMES] + [m for m in self.models if m == POOLED_NAMES[0]]
        if taken:
            raise ValueError(f"dataset or model name(s) {taken}: the correlation stage's rows over models and "
                             f"datasets use the names {list(POOLED_NAMES)}; rename them")

    def _check_paths(self) -> None:
        """Every dataset root and CSV exists, checked before any job runs (all named at once)."""
        missing = []
        for name in self.datasets:
            root, csv = self.dataset_root(name), self.dataset_csv(name)
            if self.is_demo(name):
                continue
            if root and not Path(root).is_dir():
                missing.append(f"dataset {name!r}: root {root} (data_root + root) does not exist or is not a folder")
            if csv and not Path(csv).is_file():
                missing.append(f"dataset {name!r}: csv {csv} (data_root + csv) does not exist")
        if missing:
            raise FileNotFoundError("\n".join(missing) + "\nDownload the data and point data_root and the "
                                    "dataset's root / csv at it (relative paths are taken from the working "
                                    "directory); `python -m medtransfer.data describe KIND` says where each "
                                    "dataset comes from and the layout expected.")

    # -- models ------------------------------------------------------------------
    def source_filename(self, model: str) -> str:
        spec = self.downloads[model]
        if spec.filename:
            return spec.filename
        name = PurePosixPath(urllib.parse.urlparse(spec.url).path).name
        return name or "weights"

    def weights_source(self, model: str) -> str:
        """The file the converter (or a stage) reads: a local ``path`` as is, else the download."""
        spec = self.downloads[model]
        if spec.path:
            # A TensorFlow checkpoint prefix (model.ckpt-N) is no file: its .index stands for it
            # (the converter reads and hashes every file of the checkpoint).
            index = spec.path + ".index"
            return index if not Path(spec.path).exists() and Path(index).exists() else spec.path
        return paths.DOWNLOAD.format(model=model, filename=self.source_filename(model))

    def download_inputs(self, model: str) -> list[str]:
        """A ``file:`` URL's file is an input, so a rule that makes it (demo weights) runs first."""
        url = self.downloads[model].url
        if not url.startswith("file:"):
            return []
        path = urllib.parse.urlparse(url).path if url.startswith("file://") else url[len("file:"):]
        return [path]

    def lpips_weights(self) -> dict[str, str]:
        """LPIPS backbone -> the torchvision file the reconstruction scores read."""
        return {name.removeprefix("lpips-"): self.weights_source(name) for name in self.auxiliary}

    # -- datasets ----------------------------------------------------------------
    def is_demo(self, dataset: str) -> bool:
        return self.datasets[dataset]["kind"] in DEMO_KINDS

    def dataset_root(self, dataset: str) -> str:
        spec = self.datasets[dataset]
        if self.is_demo(dataset):
            return paths.DEMO_DATA.format(dataset=dataset)
        root = spec.get("root", "")
        if not root:
            return ""
        return str(Path(self.config.get("data_root", ".")) / root)

    def dataset_csv(self, dataset: str) -> str:
        spec = self.datasets[dataset]
        if self.is_demo(dataset):
            return paths.DEMO_LABELS.format(dataset=dataset)
        if spec.get("csv"):
            return str(Path(self.config.get("data_root", ".")) / spec["csv"])
        return ""

    def index_inputs(self, dataset: str) -> list[str]:
        csv = self.dataset_csv(dataset)
        return [csv] if csv else []

    def n_way(self, dataset: str) -> int:
        own = self.datasets[dataset].get("fewshot", {}).get("n_way")
        return int(own or self.config["protocols"]["fewshot"]["n_way"])

    def fewshot_pool(self, dataset: str) -> str:
        own = self.datasets[dataset].get("fewshot", {}).get("pool")
        return own or self.config["protocols"]["fewshot"]["pool"]

    def metric(self, dataset: str) -> str:
        """The dataset's headline metric: model selection and paired comparisons use it."""
        return self.datasets[dataset]["metric"]

    def settings(self, protocol: str) -> dict[str, Any]:
        """The protocol's resolved config section (every default filled)."""
        return dict(self.config["protocols"][protocol])

    def default_settings(self, protocol: str) -> dict[str, Any]:
        """The schema's defaults of a protocol the study does not run (a shared cache may need them)."""
        section = load_schema()["properties"]["protocols"]["properties"][protocol]["properties"]
        return {key: default("protocols", protocol, key) for key, sub in section.items() if "default" in sub}

    def settings_or_defaults(self, protocol: str) -> dict[str, Any]:
        """The protocol's settings; the schema's defaults when the study does not run it (shared caches)."""
        return self.settings(protocol) if protocol in self.protocols else self.default_settings(protocol)

    def top1(self) -> dict[str, float | None]:
        """Model -> ImageNet top-1 (None where unknown) from the source ``correlation.top1`` names:
        ``registry`` each model's ``top1``, ``study`` its ``top1_study`` (``top1`` where it has none)."""
        if self.top1_source() == "registry":
            return {name: spec.top1 for name, spec in self.models.items()}
        return {name: spec.top1 if spec.top1_study is None else spec.top1_study for name, spec in self.models.items()}

    def top1_source(self) -> str:
        return self.config["correlation"]["top1"] if self.correlates else "registry"

    def correlation_exclude(self) -> list[str]:
        """Models left out of the correlations: ``correlation.exclude``, by default the random baseline(s)."""
        exclude = self.config["correlation"]["exclude"] if self.correlates else None
        return list(exclude) if exclude is not None else [m for m, spec in self.models.items() if spec.random]

    def same_data(self) -> dict[str, dict[str, str]]:
        """Transfer protocol -> dataset -> what its transfer score is computed from, as a string;
        datasets with equal strings (one root under two entries) are pooled once.

        The data: kind, root, csv, split, adapter options, demo generation and headline metric;
        for the few-shot protocol also the episodes' n_way and pool, so entries that differ only
        in their few-shot settings are one dataset to every protocol but few-shot.
        """
        out = {}
        for protocol in registry.transfer_protocols():
            out[protocol] = {}
            for name, spec in self.datasets.items():
                key = {k: spec.get(k) for k in ("kind", "split", "options", "demo", "metric")}
                key |= {"root": self.dataset_root(name), "csv": self.dataset_csv(name)}
                if protocol == "fewshot":
                    key |= {"n_way": self.n_way(name), "pool": self.fewshot_pool(name)}
                out[protocol][name] = json.dumps(key, sort_keys=True, default=str)
        return out

    def headline_metrics(self) -> dict[str, str]:
        return {name: self.metric(name) for name in self.datasets}

    # -- targets -----------------------------------------------------------------
    def setting_names(self, protocol: str, dataset: str | None = None) -> list[str]:
        """The protocol's settings; with ``dataset``, those that dataset gets: less the colour-only
        ones on a grey dataset (invariance's hue), plus those only it has (multiview)."""
        spec = registry.get(protocol)
        names = spec.settings(self.config["protocols"][protocol])
        if dataset is None:
            return names
        left_out = set(self.left_out(protocol, dataset))
        return [n for n in names if n not in left_out] + spec.dataset_settings(self.datasets[dataset])

    def left_out(self, protocol: str, dataset: str) -> list[str]:
        """The protocol's settings that ``dataset`` does not get: colour-only ones when its images are grey."""
        spec = registry.get(protocol)
        if self.colour[dataset] or not spec.colour_only:
            return []
        return [n for n in spec.settings(self.config["protocols"][protocol]) if n in spec.colour_only]

    def left_out_settings(self, protocol: str) -> dict[str, list[str]]:
        """Dataset -> the settings of ``protocol`` it does not get, for the datasets that lack any."""
        if protocol not in self.protocols:
            return {}
        return {d: names for d in self.datasets if (names := self.left_out(protocol, d))}

    def units(self) -> list[Unit]:
        return [Unit(p, d, s) for p in self.protocols for d in self.datasets for s in self.setting_names(p, d)]

    def transforms(self, colour: bool = True) -> list[str]:
        """The invariance protocol's synthetic transforms for colour datasets, or (``colour=False``)
        for grey ones, without the colour-only transforms (all known ones when it does not run)."""
        names = self.setting_names("invariance") if "invariance" in self.protocols else list(registry.TRANSFORMS)
        return names if colour else [n for n in names if n not in registry.get("invariance").colour_only]

    def invariance_datasets(self, colour: bool = True) -> list[str]:
        """The datasets of each invariance rule: those that get every transform (``colour``: the
        colour datasets, and the grey ones too when no transform is colour-only), or
        (``colour=False``) the grey ones that get fewer (none when they get the same, or nothing)."""
        grey = [d for d, is_colour in self.colour.items() if not is_colour]
        same = self.transforms(colour=False) == self.transforms(colour=True)
        if colour:
            return [d for d in self.datasets if d not in grey or same]
        return grey if not same and self.transforms(colour=False) else []

    @property
    def correlates(self) -> bool:
        """Whether the correlation stage runs (``correlation:`` is in the config)."""
        return "correlation" in self.config

    def correlation_inputs(self) -> list[str]:
        """Every model's row files (the numbers the correlations are computed from)."""
        return [f for u in self.units() for f in self.rows(u)]

    def correlation_measures(self) -> list[str]:
        """Names of the explanatory measures (one scatter figure each)."""
        names = ["imagenet_top1"]
        for protocol in self.protocols:
            spec = registry.get(protocol)
            settings = dict.fromkeys(s for d in self.datasets for s in self.setting_names(protocol, d))
            names += [template.format(setting=s) for _, template in spec.measures for s in settings]
        return list(dict.fromkeys(names))

    def figures(self) -> list[str]:
        """Every figure of the report: each protocol's heatmap, the transfer protocols' bar charts,
        each model's radar chart, the reconstruction and saliency figures, the correlation scatters."""
        figures = [paths.PROTOCOL_FIGURE.format(protocol=p) for p in self.protocols]
        transfer = [p for p in registry.transfer_protocols() if p in self.protocols]
        figures += [paths.BARS.format(protocol=p) for p in transfer]
        if transfer:
            figures += [paths.RADAR.format(model=m) for m in self.models]
        if "reconstruction" in self.protocols:
            figures += [paths.RECONSTRUCTION_GRID.format(dataset=d) for d in self.datasets]
        if "saliency" in self.protocols:
            figures += [paths.SALIENCY_FIGURE.format(dataset=d, model=m, kind="overlay")
                        for d in self.datasets for m in self.models]
        if self.correlates:
            figures += self.correlation_figures()
        return figures

    def correlation_figures(self) -> list[str]:
        return [paths.CORRELATION_FIGURE.format(measure=m) for m in self.correlation_measures()]

    def rows(self, unit: Unit) -> list[str]:
        return [paths.rows(unit.protocol, m, unit.dataset, unit.setting) for m in self.models]

    def predictions(self, unit: Unit) -> list[str]:
        return [paths.predictions(unit.protocol, m, unit.dataset, unit.setting) for m in self.models]

    def compare_inputs(self, unit: Unit) -> dict[str, list[str]]:
        """Named inputs of one comparison: every model's predictions and rows files."""
        return {"predictions": self.predictions(unit), "rows": self.rows(unit)}

    def table_inputs(self, protocol: str | None = None) -> list[str]:
        """Every row file of the study (each model's, then the paired comparisons)."""
        units = [u for u in self.units() if protocol in (None, u.protocol)]
        files = [f for u in units for f in self.rows(u)]
        files += [paths.compare(u.protocol, u.dataset, u.setting) for u in units]
        return files + ([paths.CORRELATION] if self.correlates and protocol is None else [])
