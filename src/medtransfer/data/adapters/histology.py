"""Histology: bach (BACH / ICIAR 2018 breast microscopy), whose published split needs the
ground-truth CSV's row order."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.adapters.base import (
    Adapter,
    _first,
    _published_80_20,
    _read_table,
    _rows,
    _scan_class_folders,
    _unknown_labels,
    describe,
)

BACH_CLASSES = ("Normal", "Benign", "InSitu", "Invasive")
BACH_TRUTH = "microscopy_ground_truth.csv"
BACH_TRUTH_COLUMNS = "no header and two columns, file name and class (e.g. b001.tif,Benign)"


def _scan_bach(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    photos = root / "ICIAR2018_BACH_Challenge" / "Photos"
    found = _scan_class_folders("bach", photos, BACH_CLASSES, (".tif", ".tiff"))
    truth = photos / BACH_TRUTH
    if truth.is_file():
        found = _bach_check_truth(found, truth)
    else:  # rows sorted by file name, for split: random; _published_bach refuses these
        found = found.sort_values("file", kind="stable")
    folders = pd.Series(BACH_CLASSES, dtype=str).iloc[found["label"]].to_numpy()
    frame = _rows(str(photos) + os.sep + pd.Series(folders) + os.sep + found["file"].to_numpy(),
                  found["label"], BACH_CLASSES)
    frame.attrs["missing_truth"] = None if truth.is_file() else str(truth)
    return frame


def _published_bach(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    """The published shuffle ran over the ground-truth CSV's rows: without it, refuse.

    The CSV lists the classes in the order Normal, Benign, InSitu, Invasive; the order of
    the files within a class cannot be checked without it, so no folder order is assumed.
    """
    missing = frame.attrs.get("missing_truth")
    if missing:
        raise FileNotFoundError(
            f"bach: split 'published' needs {missing}, which does not exist: the published "
            f"seed-42 shuffle ran over that CSV's row order, which the class folders cannot reproduce. "
            f"Restore {BACH_TRUTH} from the download, or use split: random (a seeded 80/20 shuffle of "
            f"the sorted file names; not the published split). split: patient and given are not "
            f"available for bach.\n{describe('bach')}")
    return _published_80_20(frame, options)


def _bach_check_truth(found: pd.DataFrame, truth: Path) -> pd.DataFrame:
    """Cross-check the folders with the ground-truth CSV; rows come back in the CSV's order."""
    table = _read_table("bach", truth, BACH_TRUTH_COLUMNS, header=None)
    if table.shape[1] < 2:
        raise ValueError(f"bach: {truth} has {table.shape[1]} column; expected {BACH_TRUTH_COLUMNS}. "
                         f"Restore the original file from the download.\n{describe('bach')}")
    table = table.iloc[:, :2].set_axis(["file", "name"], axis=1)
    bad = set(table["name"]) - set(BACH_CLASSES)
    if bad:
        raise _unknown_labels("bach", truth, bad, BACH_CLASSES)
    table["label"] = table["name"].map({c: i for i, c in enumerate(BACH_CLASSES)})
    merged = table.merge(found, on="file", how="outer", suffixes=("", "_folder"), indicator=True)
    not_on_disk = merged.loc[merged["_merge"] == "left_only", "file"]
    if len(not_on_disk):
        raise FileNotFoundError(f"bach: {len(not_on_disk)} images listed in {truth} are not in its "
                                f"class folders, e.g. {_first(not_on_disk)}; re-extract the download."
                                f"\n{describe('bach')}")
    disagree = merged[(merged["_merge"] == "right_only") | (merged["label"] != merged["label_folder"])]
    if len(disagree):
        raise ValueError(f"bach: {len(disagree)} images are in a class folder that {truth} does not "
                         f"list for them, e.g. {_first(disagree['file'])}; move them back or restore "
                         f"the original ground truth.\n{describe('bach')}")
    return table[["file", "label"]].astype({"label": int})


BACH = Adapter(
    kind="bach", title="BACH / ICIAR 2018 breast histology microscopy (400 images)",
    classes=BACH_CLASSES,
    source="https://zenodo.org/record/3632035 (ICIAR2018_BACH_Challenge.zip)",
    licence="CC BY-NC-ND 4.0 (non-commercial, no derivatives)",
    layout="ICIAR2018_BACH_Challenge/Photos/{Normal,Benign,InSitu,Invasive}/*.tif\n"
           "ICIAR2018_BACH_Challenge/Photos/microscopy_ground_truth.csv (no header: file,label; "
           "needed for split: published, cross-checked with the folders)",
    label_rule="the class folder; the ground-truth CSV must agree when present",
    published_rule="80/20, seed-42 shuffle of the ground-truth CSV rows in file order, first "
                   "floor(80%) train. Without the CSV, split: published is refused (its row order "
                   "cannot be rebuilt from the folders); split: random works without it",
    patient_rule="none: BACH publishes no patient ids and several photos come from one "
                 "patient, so split: patient is refused",
    scan=_scan_bach, published=_published_bach,
    typical_images=400, colour=True)
