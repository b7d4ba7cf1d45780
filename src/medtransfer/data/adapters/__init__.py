"""Dataset adapters: a download of each published dataset (or users' own data) -> the index.

One adapter per dataset key. The registry ``ADAPTERS`` carries, next to the code that
scans a download, what a user needs to get the data right: class names in label order,
where to download it and under which licence, the folder layout expected under the
dataset root, the published label and split rules, patient ids and the options taken.
``describe(kind)`` renders that as text; every layout error quotes it. Each record also
carries the facts of its kind that the rest of the package reads (``multiview``,
``typical_images``, ``colour``: see ``base.Adapter``).

Modules: ``base`` (the record, its options, the shared scanning helpers and errors) and one
module per family, each scanner next to its record: ``chest`` (chestx, chexpert,
montgomerycxr, shenzhencxr, stoic), ``fundus`` (diabetic_retinopathy, ichallenge_amd,
ichallenge_pm), ``histology`` (bach), ``generic`` (imagefolder, csv, cifar10, demo_*).
A new kind is a scanner and a record in its family's module plus one line below.

Splits (``split=``):

- ``published``: the paper's split, exactly. The published code
  (github.com/jonahanton/SSL_medicalimaging, ``datasets/custom_<name>_dataset.py``)
  shuffles a table with ``DataFrame.sample(frac=1, random_state=42)`` and keeps
  ``iloc[:floor(0.8 n)]`` as train; ``index.published_split`` reproduces that. The table
  it shuffled sets the row order, so each adapter keeps rows in that order: the
  ground-truth CSV for bach (without it bach refuses this split: its row order cannot be
  rebuilt from the folders), ``Data_Entry_2017.csv`` for chestx (all 112,120 rows, split
  *before* the single-finding filter), ``train.csv`` for chexpert (shuffled, then the
  first 134,049 rows are train), the official train/test for diabetic_retinopathy. For
  amd, pm, montgomery and shenzhen the published code shuffled private or Kaggle CSVs
  (``amd_labels.csv``, ``fovea_location_csv.csv``, ``montgomery_metadata.csv``,
  ``shenzhen_metadata.csv``) not in the official downloads; we assume their rows were
  sorted by file name and shuffle the sorted file names. ``seed`` is ignored: always 42.
- ``patient``: grouped by patient (seeded, stratified by majority label), no patient in
  both splits; needs patient ids (bach has none: an error).
- ``random``: a seeded 80/20 shuffle of the images kept after filtering.
- ``given``: the split the data carries (diabetic_retinopathy; a CSV with a ``split``
  column); an error for data without one.

The index rows keep the source order (CSV rows or sorted files), not the shuffled one.
Users' data: ``imagefolder`` (one folder per class) and ``csv``; the workflow's generated
``demo_*`` datasets are CSV-backed kinds too (class order from ``demo.DEMO_KINDS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.data.adapters import chest, fundus, generic, histology
from medtransfer.data.adapters.base import ADAPTERS, Adapter, _check_exist, _check_nonempty, describe, get_adapter
from medtransfer.data.index import (
    SPLITS,
    check_index,
    index_columns,
    index_from_csv,
    patient_split,
    published_split,
    write_index,
)

__all__ = ["ADAPTERS", "COLOUR_FLAG_KINDS", "DATASET_KINDS", "MULTIVIEW_KINDS", "Adapter", "build_index", "describe",
           "get_adapter", "index_dataset"]

# The order users see (describe, the CLI's choices, error messages): keep it when adding a kind.
ADAPTERS.update((a.kind, a) for a in (
    histology.BACH, chest.CHESTX, chest.CHEXPERT, fundus.DIABETIC_RETINOPATHY, fundus.ICHALLENGE_AMD,
    fundus.ICHALLENGE_PM, chest.MONTGOMERYCXR, chest.SHENZHENCXR, generic.IMAGEFOLDER, chest.STOIC,
    generic.CIFAR10, generic.CSV, *generic.DEMO,
))

DATASET_KINDS: tuple[str, ...] = tuple(ADAPTERS)
#: Kinds whose index carries view_group and view (the invariance protocol's multi-view pairs).
MULTIVIEW_KINDS: tuple[str, ...] = tuple(kind for kind, a in ADAPTERS.items() if a.multiview)
#: Kinds whose config says whether the images are colour (``datasets.<name>.colour``, default
#: true); every other kind's record says it.
COLOUR_FLAG_KINDS: tuple[str, ...] = ("csv", "imagefolder")


# ---------------------------------------------------------------------------- entry points


def build_index(kind: str, root: str | Path | None, *, split: str = "published", seed: int = 42,
                options: dict | None = None, csv: str | Path | None = None) -> pd.DataFrame:
    """The index frame (``index.INDEX_COLUMNS``) of the dataset ``kind`` downloaded under ``root``.

    ``options`` are the adapter's (see ``describe(kind)``); ``csv`` is the labels CSV of the
    CSV-backed kinds (``csv``, ``demo_*``), for which ``root`` is optional. Same arguments,
    same files -> the same frame.
    """
    adapter = get_adapter(kind)
    opts = adapter.resolve_options(options)
    if split not in SPLITS:
        raise ValueError(f"{kind}: unknown split {split!r}; use one of {list(SPLITS)}")
    if adapter.from_csv:
        return _csv_index(adapter, root, csv, split, seed, opts)
    root = _check_root(kind, root)
    frame = _split(adapter, adapter.scan(root, opts), split, seed, opts)
    _check_nonempty(kind, adapter.class_names(opts), frame["label"], str(root))
    if adapter.listed_in:
        _check_exist(kind, frame, f"{adapter.listed_in} under {root}")
    frame = frame[index_columns(frame)].reset_index(drop=True)
    check_index(frame, f"{kind} index of {root}")
    return frame

def index_dataset(out: str | Path, *, kind: str, root: str | Path | None, split: str = "published",
                  seed: int = 42, options: dict | None = None, csv: str | Path | None = None) -> None:
    """Build the index of ``kind`` and write it to ``out`` atomically (``index.write_index``)."""
    write_index(build_index(kind, root, split=split, seed=seed, options=options, csv=csv), out)

def _check_root(kind: str, root: str | Path | None) -> Path:
    if root is None or str(root) == "":
        raise ValueError(f"{kind}: no dataset root given; set the dataset's root in the config to "
                         f"the folder holding the download.\n{describe(kind)}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{kind}: dataset root {path} does not exist or is not a folder; "
                                f"download the data and point root at it.\n{describe(kind)}")
    return path

def _split(adapter: Adapter, frame: pd.DataFrame, split: str, seed: int, opts: dict[str, Any]) -> pd.DataFrame:
    """Fill ``split``/``split_rule``; the published split sees every row, the others kept rows."""
    kind = adapter.kind
    if split == "published":
        parts, rule = adapter.published(frame, opts)
        return frame.assign(split=parts, split_rule=rule)[frame["keep"].to_numpy()]
    frame = frame[frame["keep"].to_numpy()].reset_index(drop=True)
    if split == "given":
        if not adapter.has_given_split:
            raise ValueError(f"{kind}: split 'given' needs data that carries its own train/test split, "
                             f"and {kind} has none; use split: published, patient or random")
        return frame.assign(split_rule="given")
    if split == "random":
        return frame.assign(split=published_split(len(frame), seed=seed), split_rule=f"random:80/20,seed={seed}")
    if not adapter.has_patients:
        raise ValueError(f"{kind}: split 'patient' needs patient ids and {kind} has none "
                         f"({adapter.patient_rule}); use split: published or random")
    return frame.assign(split=patient_split(frame["patient"], frame["label"], seed=seed),
                        split_rule=f"patient:80/20,seed={seed}")

def _csv_index(adapter: Adapter, root: str | Path | None, csv: str | Path | None, split: str, seed: int,
               opts: dict[str, Any]) -> pd.DataFrame:
    """Users' CSV or a demo dataset's labels.csv, through ``index.index_from_csv``."""
    kind = adapter.kind
    if csv is None or str(csv) == "":
        raise ValueError(f"{kind}: no CSV given; pass csv=<file with columns path,label[,split,patient]>\n"
                         f"{describe(kind)}")
    classes = list(opts.get("classes") or adapter.classes) or None  # None: sorted names found
    # ``given`` falls back to the 80/20 rule when the CSV has no split column.
    rule = "given" if split == "published" else split
    frame = index_from_csv(csv, root if root not in (None, "") else None, split=rule, seed=seed, classes=classes)
    _check_nonempty(kind, classes or [], frame["label"], str(csv))
    _check_exist(kind, frame, str(csv))
    check_index(frame, f"{kind} index of {csv}")
    return frame
