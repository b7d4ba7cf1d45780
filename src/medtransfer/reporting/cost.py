"""Where a study's time goes: the cost report of a finished run, and a plan for a new one.

``write_cost`` reads Snakemake's benchmark files (``benchmarks/<rule>/...tsv``: one line
per job with its wall time ``s``, peak resident memory ``max_rss`` in MB and ``cpu_time``)
and sums them per stage and per model into ``reports/cost.csv``, with a bar chart. A rule's
stage is the rule file it lives in (workflow/rules/<stage>.smk); a file's model and dataset
are the path parts that name one of the study's models or datasets.

``python -m medtransfer.cost --configfile config/paper.yaml`` prices a study before it runs:
the work of each stage (the same counts the cluster requests use, medtransfer.resources)
at the throughputs measured on an H200 (docs/performance.md), in GPU-hours per stage, and
the image decoding in CPU core-hours. Dataset sizes come from the dataset's index when it
exists, else from the documented size of its kind (docs/datasets.md).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from medtransfer import resources
from medtransfer.config import resolve
from medtransfer.resources import TYPICAL_IMAGES
from medtransfer.runtime import git_revision, package_version
from medtransfer.writers import pyplot, save_figure, write_csv

ALL = "all"
COST_COLUMNS = ["stage", "model", "jobs", "wall_s", "wall_share", "cpu_s", "peak_rss_mb",
                "study", "package_version", "git_revision"]

#: Throughputs measured on one NVIDIA H200 (docs/performance.md, "Measured on an NVIDIA H200"),
#: per precision; decoding is per CPU core. ``score`` (3 LPIPS nets + PSNR + SSIM per image)
#: has no anchor of its own: it is priced as three forward passes of a smaller net.
GPU_RATES = {
    "fp32": {"decode": 336.0, "extract": 6_800.0, "train": 1_990.0, "reconstruct": 41.0, "score": 2_000.0},
    "bf16": {"decode": 336.0, "extract": 16_400.0, "train": 3_850.0, "reconstruct": 608.0, "score": 4_000.0},
}

# ---------------------------------------------------------------- the run's cost


def read_benchmarks(folder: str | os.PathLike, *, stages: Mapping[str, str], models: Sequence[str],
                    datasets: Sequence[str]) -> pd.DataFrame:
    """One row per benchmark file under ``folder``: rule, stage, model, dataset, wall_s, cpu_s,
    peak_rss_mb. ``stages`` maps rule names to their stage; a rule not in it is its own stage."""
    rows = []
    folder = Path(folder)
    for path in sorted(folder.rglob("*.tsv")):
        parts = path.relative_to(folder).with_suffix("").parts
        rule = parts[0]
        try:
            bench = pd.read_csv(path, sep="\t")
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
            raise ValueError(f"benchmark file {path} is not a Snakemake benchmark table ({err}); "
                             "delete it and rerun the job that wrote it") from err
        if "s" not in bench.columns:
            raise ValueError(f"benchmark file {path} has no `s` (wall seconds) column; columns: "
                             f"{list(bench.columns)}. Delete it and rerun the job that wrote it")
        named = set(parts[1:])
        rows.append({
            "rule": rule, "stage": stages.get(rule, rule),
            "model": next((m for m in models if m in named), ALL),
            "dataset": next((d for d in datasets if d in named), ALL),
            "wall_s": float(bench["s"].sum()),
            "cpu_s": float(pd.to_numeric(bench.get("cpu_time", 0.0), errors="coerce").fillna(0).sum()),
            "peak_rss_mb": float(pd.to_numeric(bench.get("max_rss", np.nan), errors="coerce").max()),
        })
    columns = ["rule", "stage", "model", "dataset", "wall_s", "cpu_s", "peak_rss_mb"]
    return pd.DataFrame(rows, columns=columns)


def summarise(jobs: pd.DataFrame) -> pd.DataFrame:
    """Totals per (stage, model), per stage (model ``all``), per model (stage ``all``) and in
    all; ``wall_share`` is the part of the study's summed job time."""
    total = jobs["wall_s"].sum()

    def agg(frame: pd.DataFrame, stage: str | None, model: str | None) -> dict:
        return {"stage": stage, "model": model, "jobs": len(frame), "wall_s": round(frame["wall_s"].sum(), 3),
                "wall_share": round(frame["wall_s"].sum() / total, 4) if total else 0.0,
                "cpu_s": round(frame["cpu_s"].sum(), 3),
                "peak_rss_mb": round(frame["peak_rss_mb"].max(), 1) if frame["peak_rss_mb"].notna().any() else np.nan}

    rows = [agg(jobs, ALL, ALL)]
    for stage, part in jobs.groupby("stage", sort=True):
        rows.append(agg(part, stage, ALL))
    for model, part in jobs[jobs["model"] != ALL].groupby("model", sort=True):
        rows.append(agg(part, ALL, model))
    for (stage, model), part in jobs[jobs["model"] != ALL].groupby(["stage", "model"], sort=True):
        rows.append(agg(part, stage, model))
    return pd.DataFrame(rows)


def write_cost(*, benchmarks: str | os.PathLike, out: str | os.PathLike, figure: str | os.PathLike,
               stages: Mapping[str, str], models: Sequence[str], datasets: Sequence[str],
               study: str) -> pd.DataFrame:
    """``reports/cost.csv`` and its chart from the run's benchmark files."""
    jobs = read_benchmarks(benchmarks, stages=stages, models=models, datasets=datasets)
    if jobs.empty:
        raise ValueError(f"no benchmark files under {benchmarks}: the cost report sums the jobs' "
                         "benchmark files, which Snakemake writes as each job finishes")
    cost = summarise(jobs).assign(study=study, package_version=package_version(), git_revision=git_revision())
    write_csv(out, cost[COST_COLUMNS])
    plot_cost(cost, figure, study)
    return cost


def plot_cost(cost: pd.DataFrame, out: str | os.PathLike, study: str) -> None:
    """Horizontal bars: summed job minutes per stage, split by model where a stage has models."""
    plt = pyplot()
    per = cost[(cost["stage"] != ALL)]
    stages = per[per["model"] == ALL].sort_values("wall_s")["stage"].tolist()
    models = sorted(set(per["model"]) - {ALL})
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(stages) + 1.5))
    left = np.zeros(len(stages))
    colours = plt.get_cmap("tab20")
    for i, model in enumerate(models):
        minutes = np.array([per[(per["stage"] == s) & (per["model"] == model)]["wall_s"].sum() / 60 for s in stages])
        ax.barh(stages, minutes, left=left, color=colours(i % 20), label=model)
        left += minutes
    rest = np.array([per[(per["stage"] == s) & (per["model"] == ALL)]["wall_s"].sum() / 60 for s in stages]) - left
    ax.barh(stages, np.clip(rest, 0, None), left=left, color="0.7", label="not per model")
    ax.set_xlabel("summed job time (minutes)")
    ax.set_title(f"where the time went: {study}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)


# ---------------------------------------------------------------- planning a study


def _n_images(name: str, spec: Mapping, index_dir: Path, override: Mapping[str, int]) -> tuple[int, str]:
    if name in override:
        return override[name], "given"
    index = index_dir / name / "index.csv"
    if index.exists():
        return resources.count_images(index), "index"
    kind = spec.get("kind", name)
    if spec.get("demo") is not None or kind.startswith("demo"):
        return int((spec.get("demo") or {}).get("n_images", 0)), "demo"
    if kind not in TYPICAL_IMAGES:
        raise ValueError(f"dataset {name!r}: no index at {index} and no documented size for kind {kind!r}; "
                         f"give one with --images {name}=N")
    return TYPICAL_IMAGES[kind], "documented"


def estimate(config: Mapping, *, index_dir: str | os.PathLike = "results/data",
             images: Mapping[str, int] | None = None) -> pd.DataFrame:
    """GPU-hours per stage (and CPU core-hours of decoding) of the study ``config`` (resolved,
    medtransfer.config.resolve) at the measured H200 rates of its precision (the
    reconstruction: of its own precision)."""
    precision = config.get("precision", "fp32")
    rates = GPU_RATES["bf16" if precision == "bf16" else "fp32"]
    size, protocols = config["image_size"], config["protocols"]
    # the reconstruction has a precision of its own (protocols.reconstruction.precision)
    rec_rates = GPU_RATES["bf16" if protocols["reconstruction"].get("precision", precision) == "bf16" else "fp32"]
    n_models = len(config["models"])
    rows = []
    for name, spec in config["datasets"].items():
        n, source = _n_images(name, spec, Path(index_dir), images or {})
        per_model = {
            "features": resources.extract_seconds(n, image_size=size, rates=rates),
            "finetune": resources.finetune_seconds(n, image_size=size, settings=protocols["finetune"], rates=rates),
            "reconstruct": resources.reconstruct_seconds(image_size=size, settings=protocols["reconstruction"],
                                                         rates=rec_rates)
            + resources.score_seconds(settings=protocols["reconstruction"], rates=rec_rates),
            "saliency": resources.saliency_seconds(settings=protocols["saliency"], rates=rates),
            "invariance": resources.invariance_seconds(n, image_size=size, settings=protocols["invariance"],
                                                       rates=rates),
        }
        rows.append({"stage": "data (decode, CPU)", "dataset": name, "images": n, "size_from": source,
                     "hours": resources.cache_seconds(n, rates=rates) / 3600, "unit": "CPU core-hours"})
        for stage, seconds in per_model.items():
            rows.append({"stage": stage, "dataset": name, "images": n, "size_from": source,
                         "hours": n_models * seconds / 3600, "unit": "GPU-hours"})
    return pd.DataFrame(rows)


def _parse_images(values: Sequence[str]) -> dict[str, int]:
    out = {}
    for value in values:
        name, _, count = value.partition("=")
        if not count.isdigit():
            raise SystemExit(f"--images {value!r}: expected NAME=COUNT, e.g. --images chexpert=191027")
        out[name] = int(count)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medtransfer.cost", description=(
        "Estimate a study's GPU-hours per stage from the throughputs measured on an H200 "
        "(docs/performance.md), to plan cluster use."))
    parser.add_argument("--configfile", default="config/config.yaml", help="the study (default: the demo)")
    parser.add_argument("--index-dir", default="results/data", help="where the dataset indexes are, if built")
    parser.add_argument("--images", nargs="*", default=[], metavar="NAME=COUNT",
                        help="images of a dataset, overriding its index or documented size")
    args = parser.parse_args(argv)
    try:
        config = resolve(yaml.safe_load(Path(args.configfile).read_text()))
        plan = estimate(config, index_dir=args.index_dir, images=_parse_images(args.images))
    except (OSError, ValueError) as err:
        print(f"medtransfer.cost: {err}", file=sys.stderr)
        return 2
    gpu = plan[plan["unit"] == "GPU-hours"]
    by_stage = gpu.groupby("stage", sort=False)["hours"].sum()
    print(f"study {config.get('study', args.configfile)}: {len(config['models'])} models, "
          f"{len(config['datasets'])} datasets, {config['image_size']} px, {config.get('precision', 'fp32')}; "
          "rates measured on one H200 (docs/performance.md)")
    print(plan.assign(hours=plan["hours"].map(lambda h: f"{h:.3g}")).to_string(index=False))
    print("\nGPU-hours per stage:")
    for stage, hours in by_stage.items():
        print(f"  {stage:<12} {hours:10.3g}")
    decode = plan.loc[plan["unit"] != "GPU-hours", "hours"].sum()
    print(f"  {'total':<12} {by_stage.sum():10.3g}   (+ {decode:.3g} CPU core-hours decoding, once per dataset)")
    if not math.isfinite(by_stage.sum()):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
