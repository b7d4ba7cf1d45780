"""Fundus photographs: diabetic_retinopathy (Kaggle EyePACS), ichallenge_amd (ADAM) and
ichallenge_pm (PALM)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.data.adapters.base import (
    Adapter,
    Option,
    _first,
    _join,
    _list_files,
    _need_dir,
    _need_file,
    _published_80_20,
    _published_given,
    _read_csv,
    _rows,
    _scan_class_folders,
    _stems,
    _unknown_labels,
    describe,
)

DR_CLASSES = ("no_dr", "mild", "moderate", "severe", "proliferative_dr")


def _scan_dr(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    parts = [_scan_dr_part(root, part) for part in ("train", "test")]
    return pd.concat(parts, ignore_index=True)


# Kaggle ships the test labels as retinopathy_solution.csv (image, level, Usage); the
# published code read a renamed copy, testLabels.csv. Either is accepted, Kaggle's first.
DR_LABELS = {"train": ("trainLabels.csv",), "test": ("retinopathy_solution.csv", "testLabels.csv")}


def _dr_labels_csv(root: Path, part: str) -> Path:
    names = DR_LABELS[part]
    found = next((root / n for n in names if (root / n).is_file()), None)
    if found is None and len(names) > 1:
        raise FileNotFoundError(
            f"diabetic_retinopathy: expected the {part} labels as {root / names[0]} (Kaggle's name) or "
            f"{root / names[1]} (the published code's name); neither exists. Download "
            f"{names[0]} from the competition's data page into the dataset root."
            f"\n{describe('diabetic_retinopathy')}")
    return found or _need_file("diabetic_retinopathy", root / names[0])


def _scan_dr_part(root: Path, part: str) -> pd.DataFrame:
    csv = _dr_labels_csv(root, part)
    table = _read_csv("diabetic_retinopathy", csv, ["image", "level"])
    _need_dir("diabetic_retinopathy", root / part)
    levels = table["level"].str.strip()
    unknown = set(levels) - {str(i) for i in range(len(DR_CLASSES))}
    if unknown:
        raise _unknown_labels("diabetic_retinopathy", f"{csv} (level)", unknown, list(range(len(DR_CLASSES))))
    patient = table["image"].str.extract(r"^(.+)_(?:left|right)$", expand=False)
    if patient.isna().any():
        raise ValueError(f"diabetic_retinopathy: image names in {csv} do not end in _left/_right, e.g. "
                         f"{_first(table['image'][patient.isna()])}; expected <id>_left, <id>_right"
                         f"\n{describe('diabetic_retinopathy')}")
    frame = _rows(_join(root / part, table["image"] + ".jpeg"), levels.astype(int), DR_CLASSES, patient.to_numpy())
    frame["view_group"] = patient.to_numpy()  # the two eyes of one patient
    frame["view"] = table["image"].str.extract(r"_(left|right)$", expand=False).to_numpy()
    frame["split"] = part
    return frame


DIABETIC_RETINOPATHY = Adapter(
    kind="diabetic_retinopathy", title="Kaggle EyePACS diabetic retinopathy (35,126 train / 53,576 test)",
    classes=DR_CLASSES,
    source="https://www.kaggle.com/competitions/diabetic-retinopathy-detection/data "
           "(cat train.zip.* > train.zip; unzip; same for test)",
    licence="Kaggle competition rules (non-commercial research use)",
    layout="trainLabels.csv (columns image, level)\n"
           "retinopathy_solution.csv (as Kaggle ships it: columns image, level, Usage; Public and "
           "Private rows are all test) or testLabels.csv (a renamed copy, as the published code "
           "read it); when both exist retinopathy_solution.csv is used\n"
           "train/<image>.jpeg, test/<image>.jpeg (images are <id>_left, <id>_right)",
    label_rule="level 0-4 (no DR, mild, moderate, severe, proliferative)",
    published_rule="the official train / test split",
    patient_rule="the id before _left/_right (the two eyes of one patient)",
    scan=_scan_dr, published=_published_given, has_patients=True, has_given_split=True,
    listed_in="trainLabels.csv and retinopathy_solution.csv (or testLabels.csv)",
    multiview=True, typical_images=88_702, colour=True)


AMD_CLASSES = ("Non-AMD", "AMD")


def _scan_amd(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    parent = root / "Training400"
    found = _scan_class_folders("ichallenge_amd", parent, AMD_CLASSES, (".jpg", ".jpeg"))
    found = found.sort_values("file", kind="stable")  # A0001.jpg... N0311.jpg, the assumed CSV order
    folders = pd.Series(AMD_CLASSES, dtype=str).iloc[found["label"]].to_numpy()
    paths = str(parent) + os.sep + pd.Series(folders) + os.sep + found["file"].to_numpy()
    return _rows(paths, found["label"], AMD_CLASSES, _stems(found["file"]))


ICHALLENGE_AMD = Adapter(
    kind="ichallenge_amd", title="iChallenge-AMD (ADAM) Training400 fundus photos (400, 89 AMD)",
    classes=AMD_CLASSES,
    source="https://ai.baidu.com/broad/subordinate?dataset=amd (or https://amd.grand-challenge.org; "
           "registration)",
    licence="Baidu iChallenge terms: research use, cite the ADAM challenge",
    layout="Training400/{AMD,Non-AMD}/*.jpg (file names start with A or N)",
    label_rule="the folder: AMD 1, Non-AMD 0",
    published_rule="80/20, seed-42 shuffle of the sorted file names, first floor(80%) train "
                   "(the published code shuffled its own amd_labels.csv, assumed sorted)",
    patient_rule="the file stem: no patient ids are published; one image per patient assumed",
    scan=_scan_amd, published=_published_80_20, has_patients=True,
    typical_images=400, colour=True)


PM_CLASSES = {"high_and_pathologic": ("normal", "high_or_pathologic_myopia"),
              "pathologic": ("normal_or_high_myopia", "pathologic_myopia")}
PM_POSITIVE = {"high_and_pathologic": ("H", "P"), "pathologic": ("P",)}


def _scan_pm(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    folder = root / "PALM-Training400" / "PALM-Training400"
    files = pd.Series(_list_files("ichallenge_pm", folder, (".jpg", ".jpeg")), dtype=str)
    prefix = files.str[:1].str.upper()
    unknown = files[~prefix.isin(["H", "N", "P"])]
    if len(unknown):
        raise _unknown_labels("ichallenge_pm", f"the file-name prefixes in {folder}", unknown,
                              ["H* high myopia", "N* normal", "P* pathologic myopia"])
    label = prefix.isin(PM_POSITIVE[options["positive"]]).astype(int)
    return _rows(_join(folder, files), label, PM_CLASSES[options["positive"]], _stems(files))


ICHALLENGE_PM = Adapter(
    kind="ichallenge_pm", title="iChallenge-PM (PALM) Training400 fundus photos (400)",
    classes=PM_CLASSES["high_and_pathologic"],
    source="https://ai.baidu.com/broad/subordinate?dataset=pm (or https://palm.grand-challenge.org; "
           "registration)",
    licence="Baidu iChallenge terms: research use, cite the PALM challenge",
    layout="PALM-Training400/PALM-Training400/*.jpg (prefix H high myopia, N normal, "
           "P pathologic myopia)",
    label_rule="by the option positive: H and P positive (as published) or P positive",
    published_rule="80/20, seed-42 shuffle of the sorted file names, first floor(80%) train "
                   "(the published code shuffled fovea_location_csv.csv, assumed sorted)",
    patient_rule="the file stem: no patient ids are published; one image per patient assumed",
    scan=_scan_pm, published=_published_80_20, has_patients=True,
    options={"positive": Option("high_and_pathologic", "which prefixes are positive: H and P "
                                "(as published) or P only", allowed=("high_and_pathologic", "pathologic"))},
    option_classes={"positive": PM_CLASSES},
    typical_images=400, colour=True)
