"""Every path the workflow reads or writes, in one place.

Rules take their outputs from here, the study (``study.Study``) its targets, the cost
report its benchmark files. Templates keep Snakemake's ``{wildcard}`` braces; the functions
fill some of them and leave the rest as wildcards. Nothing here imports more than the
standard library: the DAG is built from it.

Layout (relative to the working directory):

- ``resources/``: inputs fetched or generated once (weights downloads and conversions, the
  demo's generated files);
- ``results/``: one folder per stage, then per model and dataset;
- ``reports/``: what a reader opens (the table, the summary, figures, the cost report);
- ``logs/<rule>/...log`` and ``benchmarks/<rule>/...tsv``: one per job, named after its rule
  (the cost report reads the rule from the benchmark file's folder).
"""

from __future__ import annotations

from pathlib import Path

# -- resources -------------------------------------------------------------------
DEMO_WEIGHTS = "resources/demo/weights/{model}/{filename}"
DEMO_LPIPS = "resources/demo/weights/lpips-{net}/{filename}"
DOWNLOAD = "resources/weights/download/{model}/{filename}"
WEIGHTS = "resources/weights/{model}.pt"
DEMO_DATA = "resources/demo/data/{dataset}"
DEMO_LABELS = "resources/demo/data/{dataset}/labels.csv"

# -- results ---------------------------------------------------------------------
INDEX = "results/data/{dataset}/index.csv"
CACHE = "results/cache/{dataset}/images.npy"
FULL_CACHE = "results/cache/{dataset}/full.npy"
FEATURES = "results/features/{model}/{dataset}.npz"
EPISODES = "results/fewshot/episodes/{dataset}/{setting}.npz"
RECONSTRUCTIONS = "results/reconstruction/{model}/{dataset}/images.npz"
SALIENCY_MAPS = "results/saliency/{model}/{dataset}/maps.npz"
ROWS = "results/{protocol}/{model}/{dataset}/{setting}.csv"
PREDICTIONS = "results/{protocol}/{model}/{dataset}/{setting}.predictions.npz"
COMPARE = "results/compare/{protocol}/{dataset}/{setting}.csv"
CORRELATION = "results/correlation/correlation.csv"

# -- reports ---------------------------------------------------------------------
TABLE = "reports/table.csv"
SUMMARY_MD = "reports/summary.md"
SUMMARY_TEX = "reports/summary.tex"
SUMMARY_HTML = "reports/summary.html"
SUMMARY_CELLS = "reports/summary.csv"
COST = "reports/cost.csv"
COST_FIGURE = "reports/figures/cost.png"
PROTOCOL_FIGURE = "reports/figures/{protocol}.png"
PROTOCOL_FIGURE_PDF = "reports/figures/{protocol}.pdf"
BARS = "reports/figures/bars/{protocol}.png"
BARS_PDF = "reports/figures/bars/{protocol}.pdf"
RADAR = "reports/figures/radar/{model}.png"
RADAR_PDF = "reports/figures/radar/{model}.pdf"
RECONSTRUCTION_GRID = "reports/figures/reconstruction/{dataset}_grid.png"
RECONSTRUCTION_GRID_PDF = "reports/figures/reconstruction/{dataset}_grid.pdf"
RECONSTRUCTION_LPIPS = "reports/figures/reconstruction/{dataset}_lpips.png"
RECONSTRUCTION_LPIPS_PDF = "reports/figures/reconstruction/{dataset}_lpips.pdf"
SALIENCY_FIGURE = "reports/figures/saliency/{dataset}/{model}_{kind}.png"
CORRELATION_FIGURE = "reports/figures/correlation/{measure}.png"

LOGS = "logs"
BENCHMARKS = "benchmarks"


def rows(protocol: str, model: str = "{model}", dataset: str = "{dataset}", setting: str = "{setting}") -> str:
    """A protocol's rows CSV (a template while any argument is left as a wildcard)."""
    return ROWS.format(protocol=protocol, model=model, dataset=dataset, setting=setting)


def predictions(protocol: str, model: str = "{model}", dataset: str = "{dataset}", setting: str = "{setting}") -> str:
    """The per-image predictions (or values) saved beside a protocol's rows."""
    return PREDICTIONS.format(protocol=protocol, model=model, dataset=dataset, setting=setting)


def compare(protocol: str = "{protocol}", dataset: str = "{dataset}", setting: str = "{setting}") -> str:
    """The paired comparisons of every model on one (protocol, dataset, setting)."""
    return COMPARE.format(protocol=protocol, dataset=dataset, setting=setting)


def full_hw(full_cache: str | Path) -> Path:
    """The sidecar of a whole-image cache with each image's real (h, w): ``full.npy`` -> ``full.hw.npy``."""
    path = Path(full_cache)
    return path.with_name(f"{path.name.removesuffix('.npy')}.hw.npy")


FULL_HW = str(full_hw(FULL_CACHE))


def log(rule: str, job: str = "") -> str:
    """The log file of one job of ``rule`` (``job``: its wildcards, e.g. ``{model}/{dataset}``)."""
    return f"{LOGS}/{rule}/{job}.log" if job else f"{LOGS}/{rule}.log"


def benchmark(rule: str, job: str = "") -> str:
    """The benchmark file of one job of ``rule``; ``reporting.cost`` reads the rule back from it."""
    return f"{BENCHMARKS}/{rule}/{job}.tsv" if job else f"{BENCHMARKS}/{rule}.tsv"
