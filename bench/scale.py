"""Scale benchmark: how each stage's time and peak memory grow with the number of images,
each stage run through the package code its workflow script calls, on synthetic inputs.

    python bench/scale.py [--quick] [--stages a,b,c] [--sizes 1000,10000] [--dim 2048]
                          [--max-iter 20] [--max-mb MB] [--timeout S] [--threads T]
                          [--warmup 300] [--workdir DIR] [--out bench/results/scale.csv]

One process per (stage, size), so a peak is the stage's own: the parent first builds the
stage's inputs in a preparatory child (``--prepare``; input generation is never timed nor
counted in a peak), then starts ``--child STAGE N``. The child loads torch where the
stage's workflow script does (``set_threads``), imports the stage's module and what it
imports lazily (torchvision, scikit-learn, scipy, matplotlib: seconds of imports are not
what scales), loads what the stage is handed in memory (the whitening's features, the
bootstrap's predictions; every other stage reads its files inside the call), records its
RSS (``base MB``), times the one call with ``time.perf_counter`` and reports ``ru_maxrss``
(``peak MB``: the process's whole peak, nothing subtracted; Linux starts it from the resident
memory of the harness at the fork, about 0.1 GB) as JSON on stdout. The parent
polls each child's VmRSS every 0.2 s and kills it above ``--max-mb`` (default 60% of the
memory available at the start) or after ``--timeout`` seconds (default 1,800; 300 with
--quick); a crashed or killed child is recorded as failed with its return code (its log
tail is printed) and the larger sizes of that stage are skipped. Every stage first runs
once, unrecorded, at --warmup images (the first process to use a library pages it in from
disk). Inputs live under ``--workdir`` (default a temporary folder in /tmp), one folder
per size, deleted after it. The machines these run on are shared: only repeated numbers
mean much.

What N ("images") means per stage:
- index_csv, index_chexpert: a users' CSV of N rows / a CheXpert-layout tree of N 8x8 grey
  PNGs (train.csv, patientNNNNN/studyN/viewN_{frontal,lateral}.png, both views of a study
  share its label), through ``data.adapters.index_dataset`` (kind csv / chexpert).
- cache_images, cache_full_images: those N files decoded to 16 px (``build_cache``, and
  ``build_full_cache`` of the train split), with --threads decoding threads. Tiny files:
  this measures the per-image overhead and how it scales, not real JPEG decoding.
- features: ``features.extract`` of the 16 px cache through a random --arch (resnet18,
  the smallest the package supports, 512-d) written by ``models.save_weights``, fp32, CPU.
- linear, knn, fewshot, multiview, whiten_*: a synthetic feature file of N x --dim float32
  (class-structured, non-negative) with the CheXpert index's labels and split (about 60%
  train). linear: ``evaluate_linear`` with 45 C values but ``--max-iter`` L-BFGS iterations
  (default 20, so time per iteration is what scales), 1,000 bootstrap resamples; knn:
  ``evaluate_knn`` (k 20); fewshot: ``evaluate_fewshot`` on 600 stored 2-way 20-shot
  episodes (15 queries); whiten_ledoit_wolf / whiten_ridge: ``invariance.Whitener(...).fit``
  of the features loaded beforehand; multiview: ``evaluate_multiview`` (its default
  ledoit_wolf covariance, 8 pairs) on the features and the index's view columns.
- episodes: ``episodes.sample_episodes`` (600 episodes, as above) on the N-row index.
- finetune: ``evaluate_finetune`` from the whole-image cache, 2 SGD steps of batch 16, no
  early stopping, then its evaluation of the test split (about 0.4 N images) and bootstrap.
- bootstrap, compare: a test set of N images: ``results.write_classification`` (1,000
  bootstrap CIs of the three metrics) of one model's predictions; ``compare.compare_models``
  of 6 models' prediction files (1,000 paired resamples).
- table, summary, correlate, figure, bars, radar, cost: these read result rows, not
  images, so N sets the size of the study: one model per 1,000 images (at least 3) on 10
  datasets, each (model, dataset) with the rows of linear, knn, finetune, 2 few-shot
  settings, reconstruction, saliency and 3 invariance settings (24 rows in 10 files) and a
  paired comparison per (protocol, dataset, setting); cost reads one benchmark file per job
  of that study. table: ``reporting.table.write_table`` of every row file; summary:
  ``summary.write_summary``; correlate: ``correlate.correlate`` (1,000 resamples); figure:
  ``report.plot_protocol`` (linear heatmap); bars / radar: ``report.plot_bars`` /
  ``plot_radar`` from the summary's cells; cost: ``cost.write_cost``.
- saliency, reconstruction, reconstruction_score: fixed image counts, measured once at the
  demo's small settings (2 test images of a 64 px cache, --arch backbone; saliency window
  8 stride 4; inversion 4 steps; LPIPS with the demo's random trunks); ``images`` is 2.

Output: a Markdown table ``| stage | images | seconds | peak MB | base MB | status |``, then
per stage the log-log growth exponents (least-squares slopes over the sizes that ran):
``time`` of log(seconds), ``time_last`` of the two largest sizes only (constant start-up
costs flatten the small sizes); ``peak`` of log(peak MB), near 0 wherever the imports
(~900 MB with torch and torchvision) dominate; ``growth`` of log(peak MB - base MB), the
stage's own memory and the more telling one (1: linear, 2: an N x N intermediate).
Written to --out (stage, images, seconds, peak_mb, base_mb, status), scale_exponents.csv
and scale.png beside it; the children's logs are under <workdir>/logs. --quick: sizes
1,000 / 5,000 / 20,000, under 15 minutes on a 2-core CPU. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_SIZES = (1_000, 10_000, 100_000, 223_414)
QUICK_SIZES = (1_000, 5_000, 20_000)
RESULTS = Path(__file__).resolve().parent / "results"
SIZE = 16  # cache side in pixels: small enough for 223k images on a CPU
FIXED_SIZE, FIXED_IMAGES, FIXED_FILES = 64, 2, 20  # saliency / reconstruction at the demo's 64 px
DATASETS = 10  # datasets of the synthetic study behind the row-reading stages
COMPARED_MODELS = 6
EPISODES = dict(n_way=2, n_support=20, n_query=15, episodes=600, pool="train", seed=0)
N_BOOTSTRAP = 1000
CSV_COLUMNS = ["stage", "images", "seconds", "peak_mb", "base_mb", "status"]


@dataclass(frozen=True)
class Ctx:
    """Where one (stage, size) works and the options it runs with."""

    dir: Path  # the size's folder: inputs shared by the stages of this size
    n: int
    opts: argparse.Namespace

    def __truediv__(self, name: str) -> Path:
        return self.dir / name

    @property
    def out(self) -> Path:
        """A scratch folder for the stage's outputs."""
        path = self.dir / "out"
        path.mkdir(parents=True, exist_ok=True)
        return path


def n_models(n: int) -> int:
    """Models of the synthetic study behind the row-reading stages: one per 1,000 images."""
    return max(3, round(n / 1000))


# ---------------------------------------------------------------- inputs (built in --prepare children)

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]
EFFUSION = ["1.0", "0.0", "-1.0", "", "1.0"]  # per study: uncertain counts as positive (option uncertain: ones)


def _tree(ctx: Ctx, n: int | None = None, folder: str = "tree") -> None:
    """``n`` 8x8 grey PNGs in the CheXpert layout, its train.csv, and a users' CSV of the same files."""
    from PIL import Image

    n = ctx.n if n is None else n
    root = ctx / folder
    pixels = np.random.default_rng(0).integers(0, 256, (n, 8, 8), dtype=np.uint8)
    rel, effusion = [], []
    for i in range(n):
        view = "view1_frontal.png" if i % 2 == 0 else "view2_lateral.png"
        rel.append(f"CheXpert-v1.0/train/patient{i // 4 + 1:05d}/study{i // 2 % 2 + 1}/{view}")
        effusion.append(EFFUSION[i // 2 % 5])
        path = root / rel[-1]
        if i % 2 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i], "L").save(path)
    table = pd.DataFrame({c: "" for c in CHEXPERT_HEADER}, index=range(n))
    table["Path"], table["Pleural Effusion"] = rel, effusion
    table["Sex"], table["Age"] = "Female", "68"
    table["Frontal/Lateral"] = np.where(np.arange(n) % 2 == 0, "Frontal", "Lateral")
    table.to_csv(root / "CheXpert-v1.0" / "train.csv", index=False)
    positive = np.isin(effusion, ["1.0", "-1.0"])
    pd.DataFrame({"path": rel, "label": np.where(positive, "pleural_effusion", "no_pleural_effusion"),
                  "patient": [r.split("/")[2] for r in rel]}).to_csv(root / "labels.csv", index=False)


def _index(ctx: Ctx, folder: str = "tree", out: str = "index.csv") -> None:
    from medtransfer.data.adapters import index_dataset

    index_dataset(ctx / out, kind="chexpert", root=ctx / folder, split="published", seed=0)


def _cache(ctx: Ctx) -> None:
    from medtransfer.data.cache import build_cache

    build_cache(ctx / "index.csv", ctx / "cache.npy", size=SIZE, kind="chexpert", workers=ctx.opts.threads)


def _full(ctx: Ctx) -> None:
    from medtransfer.data.cache import build_full_cache

    build_full_cache(ctx / "index.csv", ctx / "full.npy", size=SIZE, kind="chexpert", workers=ctx.opts.threads)


def _weights(ctx: Ctx) -> None:
    import torch

    from medtransfer.weights.backbones import WeightsMeta, build_backbone, save_weights

    torch.manual_seed(0)
    save_weights(ctx / "weights.pt", build_backbone(ctx.opts.arch).state_dict(),
                 WeightsMeta(arch=ctx.opts.arch, model="bench", demo=True))


def feature_meta(classes: list[str], split_rule: str, size: int = SIZE) -> dict:
    """The provenance ``features.run_meta`` writes, for synthetic features."""
    return {"model": "bench", "dataset": "bench", "weights_sha256": "0" * 64, "weights_demo": True,
            "weights_random": False, "weights_format": "torchvision", "padding": "torch", "split": split_rule,
            "precision": "fp32", "seed": 0, "classes": classes, "deterministic": False,
            "preprocessing": f"resize_short{size}_bicubic+center_crop{size}+normalise:imagenet_mean_std"}


def synthetic_features(labels: np.ndarray, dim: int, seed: int = 0, chunk: int = 8192) -> np.ndarray:
    """Class-structured non-negative features with correlated dimensions, like pooled CNN
    features; made in float32 chunks so 223k x 2048 never needs a float64 copy."""
    rng = np.random.default_rng(seed)
    latent = 64
    means = rng.normal(0.0, 0.12, (int(labels.max()) + 1, latent))
    mixing = (rng.normal(0.0, 1.0, (latent, dim)) / math.sqrt(latent)).astype(np.float32)
    out = np.empty((len(labels), dim), np.float32)
    for lo in range(0, len(labels), chunk):
        y = labels[lo:lo + chunk]
        z = (means[y] + rng.standard_normal((len(y), latent))).astype(np.float32)
        noise = rng.standard_normal((len(y), dim), dtype=np.float32)
        out[lo:lo + chunk] = np.maximum(z @ mixing + 0.7 * noise, 0.0)
    return out


def _features(ctx: Ctx) -> None:
    from medtransfer.data.index import class_names, read_index
    from medtransfer.features import FeatureSet, save_features

    frame = read_index(ctx / "index.csv")
    labels = frame["label"].to_numpy(np.int64)
    save_features(ctx / "features.npz", FeatureSet(
        features=synthetic_features(labels, ctx.opts.dim), labels=labels, split=frame["split"].to_numpy(str),
        meta=feature_meta(class_names(frame), str(frame["split_rule"].iloc[0]))))


def _episodes(ctx: Ctx) -> None:
    from medtransfer.protocols.episodes import sample_episodes

    sample_episodes(index=ctx / "index.csv", out=ctx / "episodes.npz", dataset="bench", **EPISODES)


def _predictions(ctx: Ctx) -> None:
    """Test predictions of ``COMPARED_MODELS`` models on the same N images (rows + .npz each)."""
    from medtransfer.results import write_classification

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, ctx.n)
    for m in range(COMPARED_MODELS):
        p = np.clip(0.25 + 0.3 * labels + rng.normal(0.0, 0.2 + 0.02 * m, ctx.n), 0.0, 1.0)
        write_classification(rows=ctx / f"preds/model{m}.csv", predictions=ctx / f"preds/model{m}.npz",
                             protocol="linear", setting="manyshot", probs=np.stack([1 - p, p], 1), labels=labels,
                             positions=np.arange(ctx.n), classes=["a", "b"], seed=0, n_bootstrap=0,
                             meta={**feature_meta(["a", "b"], "given"), "model": f"model{m}"}, details={})


CLASSIFICATION = ("accuracy", "balanced_accuracy", "auroc")
STUDY_UNITS = {  # (protocol, setting): its metrics; the first is the one compared
    ("linear", "manyshot"): CLASSIFICATION, ("knn", "manyshot"): CLASSIFICATION,
    ("finetune", "manyshot"): CLASSIFICATION, ("fewshot", "5shot"): ("accuracy",),
    ("fewshot", "20shot"): ("accuracy",),
    ("reconstruction", "dip"): ("lpips_mean", "lpips_alex", "lpips_vgg", "lpips_squeeze", "psnr", "ssim"),
    ("saliency", "occlusion"): ("attentive_diffusion",),
    **{("invariance", s): ("cosine", "mahalanobis") for s in ("rotation", "hflip", "multiview")},
}


def study_names(n: int) -> tuple[list[str], list[str]]:
    return [f"model{m:03d}" for m in range(n_models(n))], [f"data{d:02d}" for d in range(DATASETS)]


def _study(ctx: Ctx) -> None:
    """The row files of a finished study: every model's, and the paired comparisons'."""
    from medtransfer.results import make_row, write_rows

    models, datasets = study_names(ctx.n)
    rng = np.random.default_rng(0)
    files = []
    for (protocol, setting), metrics in STUDY_UNITS.items():
        for dataset in datasets:
            values = {m: rng.uniform(0.5, 0.95, len(metrics)) for m in models}
            for model in models:
                sha = f"{zlib.crc32(model.encode()):064x}"
                meta = {**feature_meta(["a", "b"], "published"), "weights_sha256": sha}
                rows = [make_row(model=model, dataset=dataset, protocol=protocol, setting=setting, metric=metric,
                                 value=v, ci_low=v - 0.03, ci_high=v + 0.03, n=1000, seed=0, meta=meta)
                        for metric, v in zip(metrics, values[model])]
                files.append(ctx / f"study/results/{protocol}/{model}/{dataset}/{setting}.csv")
                write_rows(rows, files[-1])
            best = max(models, key=lambda m: values[m][0])
            diffs = [make_row(model=m, dataset=dataset, protocol=protocol, setting=setting,
                              metric=f"{metrics[0]}_diff_vs_best", value=values[m][0] - values[best][0],
                              n=1000, seed=0, meta=feature_meta(["a", "b"], "published"),
                              details={"best": best, "p": 0.5, "p_holm": 1.0, "differs": bool(m != best)})
                     for m in models]
            write_rows(diffs, ctx / f"study/results/compare/{protocol}/{dataset}/{setting}.csv")
    (ctx / "study/model_rows.txt").write_text("\n".join(map(str, files)) + "\n")


def study_files(ctx: Ctx, compare: bool = True) -> list[str]:
    files = (ctx / "study/model_rows.txt").read_text().split()
    return files + (sorted(map(str, (ctx / "study/results/compare").rglob("*.csv"))) if compare else [])


def _table(ctx: Ctx) -> None:
    from medtransfer.reporting.table import write_table

    write_table(rows=study_files(ctx), out=ctx / "table.csv")


def _cells(ctx: Ctx) -> None:
    from medtransfer.reporting.summary import write_summary

    write_summary(table=ctx / "table.csv", markdown=ctx / "prep_summary.md", latex=ctx / "prep_summary.tex",
                  cells_csv=ctx / "cells.csv", headline=dict.fromkeys(study_names(ctx.n)[1], "accuracy"))


# rule -> stage (its rule file), as ``rule_stages()`` in workflow/rules/common.smk gives them
MODEL_RULES = {"convert_weights": "weights", "extract_features": "features", "linear_probe": "linear",
               "knn": "knn", "finetune": "finetune", "invariance": "invariance",
               "multiview_invariance": "invariance", "saliency": "saliency", "reconstruct": "reconstruct",
               "score_reconstruction": "reconstruct", "fewshot": "fewshot"}
DATASET_RULES = {"index_dataset": "data", "cache_images": "data", "cache_full_images": "data",
                 "sample_episodes": "fewshot", "compare_models": "report"}
RULE_STAGES = {**MODEL_RULES, **DATASET_RULES, "table": "report", "summary": "report", "figure": "report",
               "bars": "report", "radar": "report", "correlate": "correlate"}
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _benchmarks(ctx: Ctx) -> None:
    """One Snakemake benchmark file per job of the synthetic study."""
    models, datasets = study_names(ctx.n)
    rng = np.random.default_rng(0)
    paths = [f"{r}/{m}/{d}.tsv" for r in MODEL_RULES if r not in ("fewshot", "convert_weights")
             for m in models for d in datasets]
    paths += [f"fewshot/{m}/{d}/{s}.tsv" for m in models for d in datasets for s in ("5shot", "20shot")]
    paths += [f"convert_weights/{m}.tsv" for m in models] + [f"radar/{m}.tsv" for m in models]
    paths += [f"{r}/{d}.tsv" for r in ("index_dataset", "cache_images", "cache_full_images") for d in datasets]
    paths += [f"sample_episodes/{d}/{s}.tsv" for d in datasets for s in ("5shot", "20shot")]
    paths += [f"compare_models/{p}/{d}/{s}.tsv" for p, s in STUDY_UNITS for d in datasets]
    paths += ["table.tsv", "summary.tsv", "correlate.tsv", "figure/linear.tsv", "bars/linear.tsv"]
    for path in paths:
        s, rss = rng.uniform(1, 600), rng.uniform(300, 8000)
        target = ctx / f"benchmarks/{path}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(BENCH_HEADER + f"{s:.4f}\t0:00:{int(s) % 60:02d}\t{rss:.2f}\t{rss * 1.5:.2f}\t{rss:.2f}"
                          f"\t{rss:.2f}\t1.00\t2.00\t95.0\t{s * 0.9:.2f}\n")


def _fixed(ctx: Ctx) -> None:
    """A 64 px cache of 20 files (8 test images) for the fixed-count analyses."""
    from medtransfer.data.cache import build_cache

    _tree(ctx, FIXED_FILES, "fixed_tree")
    _index(ctx, "fixed_tree", "fixed_index.csv")
    build_cache(ctx / "fixed_index.csv", ctx / "fixed_cache.npy", size=FIXED_SIZE)


def _lpips(ctx: Ctx) -> None:
    from medtransfer.protocols.reconstruct import write_demo_lpips_weights

    for net in ("alex", "vgg", "squeeze"):
        write_demo_lpips_weights(ctx / f"lpips/{net}.pth", net)


def _inverted(ctx: Ctx) -> None:
    _reconstruction(ctx, ctx / "inverted.npz")()


# asset -> (assets it needs, builder); a builder writes under the size's folder
ASSETS: dict[str, tuple[tuple[str, ...], Callable[[Ctx], None]]] = {
    "tree": ((), _tree), "index": (("tree",), _index), "cache": (("index",), _cache),
    "full": (("index",), _full), "weights": ((), _weights), "features": (("index",), _features),
    "episodes": (("index",), _episodes), "predictions": ((), _predictions), "study": ((), _study),
    "table": (("study",), _table), "cells": (("table",), _cells), "benchmarks": ((), _benchmarks),
    "fixed": ((), _fixed), "lpips": ((), _lpips), "inverted": (("fixed", "weights"), _inverted),
}


def needed_assets(names: tuple[str, ...]) -> list[str]:
    """``names`` and everything they need, dependencies first."""
    order: list[str] = []
    for name in names:
        for dep in needed_assets(ASSETS[name][0]) + [name]:
            if dep not in order:
                order.append(dep)
    return order


def asset_done(ctx_dir: Path, name: str) -> Path:
    return ctx_dir / ".assets" / f"{name}.done"


def prepare(ctx: Ctx, stage: str) -> None:
    """Build the missing inputs of ``stage`` (the --prepare child)."""
    os.environ["MEDTRANSFER_GIT_REVISION"] = "bench"  # rows of the inputs: skip two git calls per row
    for name in needed_assets(STAGES[stage].needs):
        marker = asset_done(ctx.dir, name)
        if not marker.exists():
            start = time.perf_counter()
            ASSETS[name][1](ctx)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            print(f"  prepared {name} for N={ctx.n} in {time.perf_counter() - start:.1f} s", file=sys.stderr)


# ---------------------------------------------------------------- the stages (run in --child processes)
# Each setup imports the stage's module and loads what the stage is handed in memory, then
# returns the one call that is timed.

Call = Callable[[], object]


def _index_csv(ctx: Ctx) -> Call:
    from medtransfer.data.adapters import index_dataset

    return lambda: index_dataset(ctx.out / "index.csv", kind="csv", root=ctx / "tree",
                                 csv=ctx / "tree/labels.csv", split="published", seed=0)


def _index_chexpert(ctx: Ctx) -> Call:
    from medtransfer.data.adapters import index_dataset

    return lambda: index_dataset(ctx.out / "index.csv", kind="chexpert", root=ctx / "tree", split="published",
                                 seed=0)


def _cache_images(ctx: Ctx) -> Call:
    from medtransfer.data.cache import build_cache

    return lambda: build_cache(ctx / "index.csv", ctx.out / "cache.npy", size=SIZE, kind="chexpert",
                               workers=ctx.opts.threads)


def _cache_full_images(ctx: Ctx) -> Call:
    from medtransfer.data.cache import FULL_MAX_ASPECT, FULL_SCALE, build_full_cache

    return lambda: build_full_cache(ctx / "index.csv", ctx.out / "full.npy", size=SIZE, scale=FULL_SCALE,
                                    max_aspect=FULL_MAX_ASPECT, kind="chexpert", workers=ctx.opts.threads)


def _extract(ctx: Ctx) -> Call:
    from medtransfer.features.extract import extract

    return lambda: extract(weights=ctx / "weights.pt", cache=ctx / "cache.npy", index=ctx / "index.csv",
                           out=ctx.out / "features.npz", model="bench", dataset="bench", precision="fp32",
                           device="cpu", seed=0)


def _linear(ctx: Ctx) -> Call:
    from medtransfer.protocols.linear import evaluate_linear

    return lambda: evaluate_linear(features=ctx / "features.npz", rows=ctx.out / "linear.csv",
                                   predictions=ctx.out / "linear.npz", grid_points=45, val_fraction=0.2, seed=0,
                                   device="cpu", n_bootstrap=N_BOOTSTRAP, max_iter=ctx.opts.max_iter)


def _knn(ctx: Ctx) -> Call:
    from medtransfer.protocols.knn import evaluate_knn

    return lambda: evaluate_knn(features=ctx / "features.npz", rows=ctx.out / "knn.csv",
                                predictions=ctx.out / "knn.npz", k=20, temperature=0.07, seed=0, device="cpu",
                                n_bootstrap=N_BOOTSTRAP)


def _sample_episodes(ctx: Ctx) -> Call:
    from medtransfer.protocols.episodes import sample_episodes

    return lambda: sample_episodes(index=ctx / "index.csv", out=ctx.out / "episodes.npz", dataset="bench",
                                   **EPISODES)


def _fewshot(ctx: Ctx) -> Call:
    from medtransfer.protocols.fewshot import evaluate_fewshot

    return lambda: evaluate_fewshot(features=ctx / "features.npz", episodes=ctx / "episodes.npz",
                                    rows=ctx.out / "fewshot.csv", predictions=ctx.out / "fewshot.npz", seed=0)


def _finetune(ctx: Ctx) -> Call:
    from medtransfer.protocols.finetune import evaluate_finetune

    return lambda: evaluate_finetune(
        weights=ctx / "weights.pt", cache=ctx / "cache.npy", index=ctx / "index.csv", rows=ctx.out / "finetune.csv",
        predictions=ctx.out / "finetune.npz", model="bench", dataset="bench", steps=2, batch_size=16, lr=0.01,
        weight_decay=1e-8, early_stopping=False, seed=0, device="cpu", precision="fp32",
        n_bootstrap=N_BOOTSTRAP, full_cache=ctx / "full.npy")


def _bootstrap(ctx: Ctx) -> Call:
    from medtransfer.results import Predictions, write_classification

    pred = Predictions.load(ctx / "preds/model0.npz")  # what a protocol holds when it writes its rows
    return lambda: write_classification(
        rows=ctx.out / "rows.csv", predictions=ctx.out / "preds.npz", protocol="linear", setting="manyshot",
        probs=pred["probs"], labels=pred["labels"], positions=pred["positions"], classes=["a", "b"],
        meta=feature_meta(["a", "b"], "given"), seed=0, n_bootstrap=N_BOOTSTRAP, details={})


def _compare(ctx: Ctx) -> Call:
    from medtransfer.reporting.compare import compare_models

    models = range(COMPARED_MODELS)
    return lambda: compare_models(predictions=[ctx / f"preds/model{m}.npz" for m in models],
                                  rows=[ctx / f"preds/model{m}.csv" for m in models], out=ctx.out / "compare.csv",
                                  protocol="linear", dataset="bench", metric="accuracy",
                                  n_bootstrap=N_BOOTSTRAP, seed=0)


def _whiten(covariance: str) -> Callable[[Ctx], Call]:
    def setup(ctx: Ctx) -> Call:
        from medtransfer.features import load_features
        from medtransfer.protocols.invariance import Whitener

        features = load_features(ctx / "features.npz").features  # the stage is handed them in memory
        return lambda: Whitener(covariance, ridge=1e-6).fit(features)

    return setup


def _multiview(ctx: Ctx) -> Call:
    from medtransfer.protocols.invariance import evaluate_multiview

    return lambda: evaluate_multiview(features=ctx / "features.npz", index=ctx / "index.csv",
                                      out_rows=ctx.out / "multiview.csv", out_predictions=ctx.out / "multiview.npz",
                                      dataset="bench", n_images=8, covariance="ledoit_wolf", ridge=1e-6,
                                      n_bootstrap=N_BOOTSTRAP, seed=0)


def _correlate(ctx: Ctx) -> Call:
    from medtransfer.reporting.correlate import correlate

    models, datasets = study_names(ctx.n)
    top1 = {m: 60.0 + 20.0 * i / len(models) for i, m in enumerate(models)}
    return lambda: correlate(rows=study_files(ctx, compare=False), out=ctx.out / "correlation.csv", top1=top1,
                             headline=dict.fromkeys(datasets, "accuracy"), n_bootstrap=N_BOOTSTRAP, seed=0)


def _write_table(ctx: Ctx) -> Call:
    from medtransfer.reporting.table import write_table

    files = study_files(ctx)
    return lambda: write_table(rows=files, out=ctx.out / "table.csv")


def _summary(ctx: Ctx) -> Call:
    from medtransfer.reporting.summary import write_summary

    headline = dict.fromkeys(study_names(ctx.n)[1], "accuracy")
    return lambda: write_summary(table=ctx / "table.csv", markdown=ctx.out / "summary.md",
                                 latex=ctx.out / "summary.tex", html=ctx.out / "summary.html",
                                 cells_csv=ctx.out / "cells.csv", headline=headline, study="bench")


def _figure(ctx: Ctx) -> Call:
    from medtransfer.reporting.figures import plot_protocol

    return lambda: plot_protocol(table=ctx / "table.csv", out=ctx.out / "linear.png", pdf=ctx.out / "linear.pdf",
                                 protocol="linear", metric="accuracy")


def _bars(ctx: Ctx) -> Call:
    from medtransfer.reporting.figures import plot_bars

    return lambda: plot_bars(cells=ctx / "cells.csv", png=ctx.out / "bars.png", pdf=ctx.out / "bars.pdf",
                             protocol="linear")


def _radar(ctx: Ctx) -> Call:
    from medtransfer.reporting.figures import plot_radar

    return lambda: plot_radar(cells=ctx / "cells.csv", png=ctx.out / "radar.png", pdf=ctx.out / "radar.pdf",
                              model=study_names(ctx.n)[0][0])


def _cost(ctx: Ctx) -> Call:
    from medtransfer.reporting.cost import write_cost

    models, datasets = study_names(ctx.n)
    return lambda: write_cost(benchmarks=ctx / "benchmarks", out=ctx.out / "cost.csv", figure=ctx.out / "cost.png",
                              stages=RULE_STAGES, models=models, datasets=datasets, study="bench")


def _saliency(ctx: Ctx) -> Call:
    from medtransfer.protocols.saliency import evaluate_saliency

    return lambda: evaluate_saliency(
        weights=ctx / "weights.pt", cache=ctx / "fixed_cache.npy", index=ctx / "fixed_index.csv",
        out_rows=ctx.out / "saliency.csv", out_predictions=ctx.out / "saliency.npz", out_maps=ctx.out / "maps.npz",
        model="bench", dataset="bench", n_images=FIXED_IMAGES, input_size=FIXED_SIZE, crop_size=56, window=8,
        stride=4, batch_size=75, n_bootstrap=200, seed=0, device="cpu")


def _reconstruction(ctx: Ctx, out: Path | None = None) -> Call:
    from medtransfer.protocols.reconstruct import invert

    return lambda: invert(weights=ctx / "weights.pt", cache=ctx / "fixed_cache.npy", index=ctx / "fixed_index.csv",
                          out_npz=out or ctx.out / "inverted.npz", model="bench", dataset="bench",
                          n_images=FIXED_IMAGES, steps=4, lr=1e-3, seed=0, device="cpu", precision="fp32",
                          batch_size=16, log_every=0)


def _score(ctx: Ctx) -> Call:
    from medtransfer.protocols.reconstruct import score

    lpips = {net: ctx / f"lpips/{net}.pth" for net in ("alex", "vgg", "squeeze")}
    return lambda: score(reconstructions_npz=ctx / "inverted.npz", lpips_weights=lpips,
                         out_rows_csv=ctx.out / "score.csv", out_predictions_npz=ctx.out / "score.npz", seed=0,
                         n_bootstrap=200, device="cpu")


@dataclass(frozen=True)
class Stage:
    needs: tuple[str, ...]  # assets built before the stage starts
    setup: Callable[[Ctx], Call]
    torch: bool = True  # its workflow script calls set_threads first, so torch is loaded before the call
    imports: tuple[str, ...] = ()  # modules the stage imports lazily, imported before the timing
    fixed: int = 0  # > 0: a fixed image count, measured once


# What torch stages import inside their calls (torchvision alone takes ~2.5 s on this CPU): a
# scale benchmark times the work, so these load before the clock starts, with the baseline.
TORCH_IMPORTS = ("medtransfer.weights.backbones", "medtransfer.data.cache", "medtransfer.data.batches",
                 "medtransfer.results", "medtransfer.metrics", "sklearn.model_selection", "scipy.linalg", "scipy.stats")
PLOT = ("matplotlib.pyplot",)


STAGES: dict[str, Stage] = {
    "index_csv": Stage(("tree",), _index_csv, torch=False),
    "index_chexpert": Stage(("tree",), _index_chexpert, torch=False),
    "cache_images": Stage(("index",), _cache_images, torch=False),
    "cache_full_images": Stage(("index",), _cache_full_images, torch=False),
    "features": Stage(("cache", "weights"), _extract),
    "linear": Stage(("features",), _linear),
    "knn": Stage(("features",), _knn),
    "episodes": Stage(("index",), _sample_episodes),
    "fewshot": Stage(("features", "episodes"), _fewshot),
    "finetune": Stage(("cache", "full", "weights"), _finetune),
    "bootstrap": Stage(("predictions",), _bootstrap, torch=False),
    "compare": Stage(("predictions",), _compare),
    "whiten_ledoit_wolf": Stage(("features",), _whiten("ledoit_wolf")),
    "whiten_ridge": Stage(("features",), _whiten("ridge")),
    "multiview": Stage(("features",), _multiview),
    "table": Stage(("study",), _write_table, torch=False),
    "summary": Stage(("table",), _summary, torch=False, imports=("tabulate", "pandas.io.formats.style")),
    "correlate": Stage(("study",), _correlate, torch=False, imports=("scipy.stats",)),
    "figure": Stage(("table",), _figure, torch=False, imports=PLOT),
    "bars": Stage(("cells",), _bars, torch=False, imports=PLOT),
    "radar": Stage(("cells",), _radar, torch=False, imports=PLOT),
    "cost": Stage(("benchmarks",), _cost, torch=False, imports=PLOT),
    "saliency": Stage(("fixed", "weights"), _saliency, fixed=FIXED_IMAGES),
    "reconstruction": Stage(("fixed", "weights"), _reconstruction, fixed=FIXED_IMAGES),
    "reconstruction_score": Stage(("inverted", "lpips"), _score, imports=("lpips", "skimage.metrics"),
                                  fixed=FIXED_IMAGES),
}


def rss_mb(pid: int | str = "self") -> float:
    """Current resident memory of a process in MB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def child(ctx: Ctx, stage: str) -> None:
    """Time one stage call in this process; print seconds, peak and baseline RSS as JSON."""
    spec = STAGES[stage]
    if spec.torch:  # as its workflow script does; the other stages never load torch
        from medtransfer.runtime import set_threads

        set_threads(ctx.opts.threads)
    if "matplotlib.pyplot" in spec.imports:
        import matplotlib

        matplotlib.use("Agg")
    for module in (TORCH_IMPORTS if spec.torch else ()) + spec.imports:
        importlib.import_module(module)
    call = spec.setup(ctx)
    base = rss_mb()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "base_mb": base}))


# ---------------------------------------------------------------- the parent


def run_monitored(args: list[str], log: Path, timeout: float, max_mb: float) -> tuple[str, float, float, str]:
    """Run ``scale.py ARGS`` as a child; kill it above ``max_mb`` RSS or after ``timeout`` s.

    Returns (status, seconds, highest RSS seen in MB, its stdout); status "ok" or why not.
    """
    with open(log, "a") as err, tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], stdout=out, stderr=err)
        seen, status = 0.0, ""
        while proc.poll() is None:
            seen = max(seen, rss_mb(proc.pid))
            if seen > max_mb:
                status = f"killed: RSS > {max_mb:.0f} MB"
            elif time.perf_counter() - start > timeout:
                status = f"killed: timeout {timeout:.0f} s"
            if status:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        out.seek(0)
        text = out.read()
    if not status:
        status = "ok" if proc.returncode == 0 else f"failed rc={proc.returncode}"
    return status, seconds, seen, text


def child_args(stage: str, n: int, workdir: Path, opts: argparse.Namespace) -> list[str]:
    return [stage, str(n), "--workdir", str(workdir), "--dim", str(opts.dim), "--max-iter", str(opts.max_iter),
            "--threads", str(opts.threads), "--arch", opts.arch]


def measure(stage: str, n: int, size_dir: Path, opts: argparse.Namespace) -> dict:
    """Prepare the inputs of (stage, n) in one child, then time the stage in another."""
    images = STAGES[stage].fixed or n
    row = {"stage": stage, "images": images, "seconds": np.nan, "peak_mb": np.nan, "base_mb": np.nan}
    logs = size_dir.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    size_dir.mkdir(parents=True, exist_ok=True)
    if any(not asset_done(size_dir, a).exists() for a in needed_assets(STAGES[stage].needs)):
        log = logs / f"n{n}.{stage}.prepare.log"
        status, seconds, seen, _ = run_monitored(["--prepare", *child_args(stage, n, size_dir, opts)], log,
                                                 opts.timeout, opts.max_mb)
        print(f"  inputs of {stage} at N={n}: {seconds:.1f} s", flush=True)
        if status != "ok":
            _show_tail(log, f"inputs of {stage} N={n}: {status}")
            return {**row, "status": f"prep {status}"}
    log = logs / f"n{n}.{stage}.log"
    status, seconds, seen, text = run_monitored(["--child", *child_args(stage, n, size_dir, opts)], log,
                                                opts.timeout, opts.max_mb)
    if status != "ok":
        _show_tail(log, f"{stage} N={n}: {status}")
        return {**row, "seconds": seconds, "peak_mb": seen, "status": status}
    result = json.loads(text.strip().splitlines()[-1])
    return {**row, **result, "status": "ok"}


def _show_tail(log: Path, what: str, lines: int = 5) -> None:
    """The end of a failed child's log, or the top of its fault handler's stack after a crash."""
    text = [line for line in log.read_text(errors="replace").splitlines() if line.strip()] if log.exists() else []
    fatal = next((i for i, line in enumerate(text) if line.startswith("Fatal Python error")), None)
    shown = text[fatal:fatal + lines] if fatal is not None else text[-lines:]
    print(f"  {what}\n    " + "\n    ".join(shown), flush=True)


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.4g")
    os.replace(tmp, path)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of log(y) on log(x) (NaN with fewer than two points)."""
    keep = np.isfinite(y) & (y > 0)
    if keep.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(x[keep]), np.log(y[keep]), 1)[0])


def exponents(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for stage, part in frame[frame["status"] == "ok"].groupby("stage", sort=False):
        if STAGES[stage].fixed or len(part) < 2:
            continue
        n = part["images"].to_numpy(float)
        growth = np.maximum(part["peak_mb"].to_numpy(float) - part["base_mb"].to_numpy(float), 1.0)
        rows.append({"stage": stage, "sizes": len(part), "time": slope(n, part["seconds"].to_numpy(float)),
                     "time_last": slope(n[-2:], part["seconds"].to_numpy(float)[-2:]),
                     "peak": slope(n, part["peak_mb"].to_numpy(float)), "growth": slope(n, growth)})
    return pd.DataFrame(rows, columns=["stage", "sizes", "time", "time_last", "peak", "growth"])


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| stage | images | seconds | peak MB | base MB | status |", "|---|---:|---:|---:|---:|---|"]
    for r in frame.itertuples():
        cells = f"{r.stage} | {r.images:,} | {r.seconds:.2f} | {r.peak_mb:,.0f} | {r.base_mb:,.0f} | {r.status}"
        lines.append(f"| {cells.replace('nan', '-')} |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, path: Path) -> None:
    from medtransfer.writers import pyplot  # here: the parent process never imports the package it measures

    plt = pyplot()

    ok = frame[(frame["status"] == "ok") & ~frame["stage"].map(lambda s: bool(STAGES[s].fixed))]
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    colours, styles = plt.get_cmap("tab20"), ("-", "--")
    for i, (stage, part) in enumerate(ok.groupby("stage", sort=False)):
        style = dict(color=colours(i % 20), linestyle=styles[i // 20 % 2], marker="o", ms=3)
        axes[0].plot(part["images"], part["seconds"], label=stage, **style)
        axes[1].plot(part["images"], part["peak_mb"], label=stage, **style)
    for ax, what in zip(axes, ("seconds", "peak RSS (MB)")):
        ax.set(xscale="log", yscale="log", xlabel="images", ylabel=what)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("medtransfer stages: time and peak memory against dataset size (log-log)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    plt.close(fig)


def run_size(stages: list[str], n: int, root: Path, opts: argparse.Namespace, rows: list[dict],
             failed: dict[str, int], warmup: bool = False) -> None:
    """Measure every stage at ``n`` images (appending to ``rows``), then delete the size's inputs."""
    size_dir = root / f"n{n}"
    for stage in stages:
        if STAGES[stage].fixed and any(r["stage"] == stage for r in rows):
            continue  # a fixed image count: measured once
        if stage in failed:
            rows.append({"stage": stage, "images": n, "seconds": np.nan, "peak_mb": np.nan, "base_mb": np.nan,
                         "status": f"skipped (failed at {failed[stage]:,})"})
            continue
        r = measure(stage, n, size_dir, opts)
        print(f"{stage:>22s} N={r['images']:>7,}: {r['seconds']:8.2f} s, peak {r['peak_mb']:7.0f} MB, "
              f"base {r['base_mb']:6.0f} MB  {r['status']}{' (warm-up, not recorded)' if warmup else ''}",
              flush=True)
        if warmup:
            continue
        rows.append(r)
        if r["status"] != "ok":
            failed[stage] = n
        write_csv_atomic(pd.DataFrame(rows, columns=CSV_COLUMNS), Path(opts.out))  # partial results survive
    shutil.rmtree(size_dir, ignore_errors=True)  # inputs can be gigabytes: one size at a time


def run_all(opts: argparse.Namespace) -> None:
    stages = opts.stages.split(",") if opts.stages else list(STAGES)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    sizes = ([int(s) for s in opts.sizes.split(",")] if opts.sizes
             else list(QUICK_SIZES if opts.quick else DEFAULT_SIZES))
    root = Path(opts.workdir) if opts.workdir else Path(tempfile.mkdtemp(prefix="medtransfer-scale-"))
    print(f"sizes {sizes}, dim {opts.dim}, arch {opts.arch}, linear max_iter {opts.max_iter}, threads "
          f"{opts.threads}, max {opts.max_mb:.0f} MB and {opts.timeout:.0f} s per child, inputs under {root}",
          flush=True)
    start, rows, failed = time.perf_counter(), [], {}
    if opts.warmup:
        # The first process to run a stage pages its share of libtorch, oneDNN, fonts... in from
        # disk (seconds on a VM), which would inflate the smallest size and flatten the exponents.
        run_size(stages, opts.warmup, root, opts, [], {}, warmup=True)
    for n in sizes:
        run_size(stages, n, root, opts, rows, failed)
    if not opts.workdir:
        shutil.rmtree(root, ignore_errors=True)
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS).sort_values(["stage", "images"], key=_stage_order, kind="stable")
    exps = exponents(frame)
    out = Path(opts.out)
    write_csv_atomic(frame, out)
    write_csv_atomic(exps, out.with_name(f"{out.stem}_exponents.csv"))
    plot(frame, out.with_name(f"{out.stem}.png"))
    print("\n" + markdown(frame) + "\n")
    print("Log-log growth exponents (time: of seconds; time_last: the two largest sizes; peak: of peak MB;"
          " growth: of peak MB - base MB):\n")
    print(exps.to_markdown(index=False, floatfmt=".2f") if len(exps) else "(fewer than two sizes ran)")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs ({_cpu()}); "
          f"written {out}, {out.stem}_exponents.csv, {out.stem}.png")


def _stage_order(column: pd.Series) -> pd.Series:
    return column.map(list(STAGES).index) if column.name == "stage" else column


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def _default_max_mb() -> float:
    """60% of the memory available now (this machine is shared)."""
    try:
        with open("/proc/meminfo") as handle:
            available = next(int(line.split()[1]) for line in handle if line.startswith("MemAvailable:"))
        return 0.6 * available / 1024
    except (OSError, StopIteration):
        return 8000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES} (under 15 min on 2 cores)")
    parser.add_argument("--stages", default="", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--sizes", default="", help=f"comma-separated image counts (default {DEFAULT_SIZES})")
    parser.add_argument("--dim", type=int, default=2048, help="feature width (1024 for DenseNet-121)")
    parser.add_argument("--arch", default="resnet18", help="backbone of features, finetune and the analyses")
    parser.add_argument("--max-iter", type=int, default=20, help="L-BFGS iterations of the linear probe")
    parser.add_argument("--max-mb", type=float, default=None, help="kill a child above this RSS (MB)")
    parser.add_argument("--timeout", type=float, default=None, help="kill a child after this many seconds")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and decoding threads")
    parser.add_argument("--warmup", type=int, default=300, help="run each stage once at this size first, "
                        "unrecorded (0: no warm-up)")
    parser.add_argument("--workdir", default="", help="inputs go here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS / "scale.csv"))
    parser.add_argument("--child", nargs=2, metavar=("STAGE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare", nargs=2, metavar=("STAGE", "N"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child or opts.prepare:
        faulthandler.enable()  # a segfault (BLAS on a huge matrix) leaves its Python stack in the child's log
        stage, n = opts.child or opts.prepare
        ctx = Ctx(Path(opts.workdir), int(n), opts)
        (child if opts.child else prepare)(ctx, stage)
        return
    opts.max_mb = opts.max_mb or _default_max_mb()
    opts.timeout = opts.timeout or (300.0 if opts.quick else 1800.0)
    run_all(opts)


if __name__ == "__main__":
    main()
