"""Chest radiographs and CT: chestx (NIH ChestX-ray14), chexpert, the NLM TB sets
(montgomerycxr, shenzhencxr) and stoic (COVID-19 CT, its middle axial slice)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.adapters.base import (
    Adapter,
    Option,
    _first,
    _join,
    _list_files,
    _need_dir,
    _published_80_20,
    _read_csv,
    _rows,
    _stems,
    _unknown_labels,
    describe,
)
from medtransfer.data.index import PUBLISHED_SEED, first_of_shuffle, published_split

CHESTX_CLASSES = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax")
CHESTX_FINDINGS = frozenset(CHESTX_CLASSES) | {"Consolidation", "Edema", "Emphysema", "Fibrosis", "Hernia",
                                               "No Finding", "Pleural_Thickening", "Pneumonia"}
CHESTX_CSV = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")


def _scan_chestx(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    csv = next((root / n for n in CHESTX_CSV if (root / n).is_file()), root / CHESTX_CSV[0])
    table = _read_csv("chestx", csv, ["Image Index", "Finding Labels", "Patient ID"])
    _need_dir("chestx", root / "images")
    findings = table["Finding Labels"].str.split("|").explode()
    unknown = set(findings) - CHESTX_FINDINGS
    if unknown:
        raise _unknown_labels("chestx", f"{csv} (Finding Labels)", unknown, sorted(CHESTX_FINDINGS))
    # Only single findings among the 7 classes; No Finding, Pneumonia and multi-finding drop.
    label = table["Finding Labels"].map({c: i for i, c in enumerate(CHESTX_CLASSES)})
    keep = label.notna().to_numpy()
    frame = _rows(_join(root / "images", table["Image Index"]), label.fillna(0), CHESTX_CLASSES,
                  table["Patient ID"].to_numpy())
    frame["keep"] = keep
    return frame


def _published_chestx(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    # 80/20 of all Data_Entry_2017.csv rows; the single-finding filter comes after.
    return published_split(len(frame)), f"published:80/20_of_all_rows,seed={PUBLISHED_SEED}"


CHESTX = Adapter(
    kind="chestx", title="NIH ChestX-ray14 (112,120 frontal radiographs; ~25.8k kept)",
    classes=CHESTX_CLASSES,
    source="https://nihcc.app.box.com/v/ChestXray-NIHCC (or kaggle.com/datasets/nih-chest-xrays/data)",
    licence="public, NIH Clinical Center; cite Wang et al. 2017 and acknowledge the NIH CC",
    layout="Data_Entry_2017.csv (Data_Entry_2017_v2020.csv also accepted; columns include "
           "Image Index, Finding Labels, Patient ID)\n"
           "images/*.png (merge the 12 images_0XX/images folders: mv images_0XX/images/* images/)",
    label_rule="only rows with a single finding among the 7 classes; No Finding, Pneumonia "
               "and multi-finding rows are dropped",
    published_rule="80/20 seed-42 shuffle of ALL rows of Data_Entry_2017.csv in file order, "
                   "THEN the label filter (as published)",
    patient_rule="Patient ID column",
    scan=_scan_chestx, published=_published_chestx, has_patients=True,
    listed_in="Data_Entry_2017.csv",
    typical_images=25_800, colour=False)


CHEXPERT_CLASSES = ("no_pleural_effusion", "pleural_effusion")
CHEXPERT_DIRS = ("CheXpert-v1.0", "CheXpert-v1.0-small")
# CheXpert's published cut: the first 134,049 of the 223,414 shuffled train.csv rows are
# train (about 60%). On a CSV of another length (a tiny test tree, a different release)
# the cut scales by this fraction unless the ``train_rows`` option fixes it.
CHEXPERT_TRAIN_ROWS = 134_049
CHEXPERT_ROWS = 223_414
CHEXPERT_VALUES = {"1.0": 1.0, "1": 1.0, "0.0": 0.0, "0": 0.0, "-1.0": -1.0, "-1": -1.0, "": np.nan}


def _scan_chexpert(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    base = next((root / d for d in CHEXPERT_DIRS if (root / d / "train.csv").is_file()), root / CHEXPERT_DIRS[0])
    csv = base / "train.csv"
    table = _read_csv("chexpert", csv, ["Path", "Pleural Effusion"])
    raw = table["Pleural Effusion"].str.strip()
    unknown = set(raw) - set(CHEXPERT_VALUES)
    if unknown:
        raise _unknown_labels("chexpert", f"{csv} (Pleural Effusion)", unknown, ["1.0", "0.0", "-1.0", "empty"])
    value = raw.map(CHEXPERT_VALUES)
    # Empty = not mentioned in the report: negative, as the published code's fillna(0).
    positive = (value == 1.0) | ((value == -1.0) & (options["uncertain"] == "ones"))
    patient = table["Path"].str.extract(r"/(patient\d+)/", expand=False)
    if patient.isna().any():
        raise ValueError(f"chexpert: Path values in {csv} lack a patientNNNNN folder, e.g. "
                         f"{_first(table['Path'][patient.isna()])}; expected "
                         f"CheXpert-v1.0/train/patientNNNNN/studyN/viewN_frontal.jpg\n{describe('chexpert')}")
    frame = _rows(str(root) + os.sep + table["Path"], positive.astype(int), CHEXPERT_CLASSES, patient.to_numpy())
    # The study folder and the view (file name view<N>_frontal/_lateral) pair the views of one study.
    frame["view_group"] = table["Path"].str.extract(r"/(patient\d+/study\d+)/", expand=False).to_numpy()
    frame["view"] = table["Path"].str.extract(r"_(frontal|lateral)\.\w+$", expand=False).to_numpy()
    return frame


def _published_chexpert(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    n = len(frame)
    n_train = options["train_rows"] or int(round(n * CHEXPERT_TRAIN_ROWS / CHEXPERT_ROWS))
    if not 0 < n_train < n:
        raise ValueError(f"chexpert: train_rows={n_train} must be between 1 and {n - 1} "
                         f"(train.csv has {n} rows); set the option train_rows or leave it unset")
    if options["shuffle"]:
        return (first_of_shuffle(n, n_train, PUBLISHED_SEED),
                f"published:first_{n_train}_of_shuffle,seed={PUBLISHED_SEED}")
    split = np.where(np.arange(n) < n_train, "train", "test").astype(object)
    return split, f"published:first_{n_train}_rows"


def _is_row_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


CHEXPERT = Adapter(
    kind="chexpert", title="CheXpert v1.0, Pleural Effusion vs rest (223,414 train.csv rows)",
    classes=CHEXPERT_CLASSES,
    source="https://stanfordmlgroup.github.io/competitions/chexpert/ (registration; "
           "CheXpert-v1.0-small also accepted)",
    licence="Stanford University School of Medicine CheXpert Dataset Research Use Agreement",
    layout="CheXpert-v1.0/train.csv (columns Path, ..., Pleural Effusion, ...; values 1, 0, -1, empty)\n"
           "CheXpert-v1.0/train/patientNNNNN/studyN/viewN_{frontal,lateral}.jpg (Path is "
           "relative to the dataset root)",
    label_rule="binary Pleural Effusion: 1 positive, 0 and empty (not mentioned) negative, "
               "-1 uncertain by the option uncertain; all rows, frontal and lateral",
    published_rule="seed-42 shuffle of train.csv rows, first 134,049 train, rest test (the "
                   "published code shuffles before the cut); valid.csv unused",
    patient_rule="patientNNNNN from Path",
    scan=_scan_chexpert, published=_published_chexpert, has_patients=True,
    listed_in="train.csv",
    options={
        "uncertain": Option("ones", "-1 (uncertain) becomes positive (ones, U-Ones, as in the "
                            "published few-shot runs) or negative (zeros, what its linear and "
                            "finetune runs did by accident)", allowed=("ones", "zeros")),
        "train_rows": Option(None, "rows of the shuffled train.csv that are train; default "
                             "134,049 on the real 223,414-row CSV, scaled by that fraction on "
                             "another length", check=_is_row_count, expects="null or a positive integer"),
        "shuffle": Option(True, "shuffle train.csv with seed 42 before the cut, as the published "
                          "code did; false takes the first rows in file order", allowed=(True, False)),
    },
    multiview=True, typical_images=CHEXPERT_ROWS, colour=False)


CXR_CLASSES = ("normal", "abnormal")


def _scan_suffix_labelled(kind: str, folder: Path, prefix: str) -> pd.DataFrame:
    """NLM TB sets: ``<prefix>_NNNN_L.png`` where L is 0 normal, 1 tuberculosis."""
    files = pd.Series(_list_files(kind, folder, (".png",)), dtype=str)
    label = files.str.extract(rf"^{prefix}_\d+_([01])\.png$", flags=re.IGNORECASE, expand=False)
    if label.isna().any():
        raise _unknown_labels(kind, f"the file names in {folder}", files[label.isna()],
                              [f"{prefix}_NNNN_0.png (normal)", f"{prefix}_NNNN_1.png (abnormal)"])
    return _rows(_join(folder, files), label.astype(int), CXR_CLASSES, _stems(files))


def _scan_montgomery(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    return _scan_suffix_labelled("montgomerycxr", root / "MontgomerySet" / "CXR_png", "MCUCXR")


def _scan_shenzhen(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    return _scan_suffix_labelled("shenzhencxr", root / "ChinaSet_AllFiles" / "CXR_png", "CHNCXR")


MONTGOMERYCXR = Adapter(
    kind="montgomerycxr", title="NLM Montgomery County TB chest X-rays (138)",
    classes=CXR_CLASSES,
    source="https://openi.nlm.nih.gov/faq#faq-tb-coll (NLM-MontgomeryCXRSet.zip)",
    licence="public (U.S. National Library of Medicine); cite Jaeger et al. 2014",
    layout="MontgomerySet/CXR_png/MCUCXR_NNNN_L.png (L: 0 normal, 1 tuberculosis)\n"
           "MontgomerySet/ClinicalReadings/*.txt (not read)",
    label_rule="the file-name suffix: _0 normal 0, _1 abnormal 1",
    published_rule="80/20, seed-42 shuffle of the sorted file names, first floor(80%) train "
                   "(the published code shuffled Kaggle's montgomery_metadata.csv, assumed sorted)",
    patient_rule="the file stem: one radiograph per patient",
    scan=_scan_montgomery, published=_published_80_20, has_patients=True,
    typical_images=138, colour=False)


SHENZHENCXR = Adapter(
    kind="shenzhencxr", title="NLM Shenzhen TB chest X-rays (662)",
    classes=CXR_CLASSES,
    source="https://openi.nlm.nih.gov/faq#faq-tb-coll (ChinaSet_AllFiles.zip)",
    licence="public (U.S. National Library of Medicine); cite Jaeger et al. 2014",
    layout="ChinaSet_AllFiles/CXR_png/CHNCXR_NNNN_L.png (L: 0 normal, 1 tuberculosis)\n"
           "ChinaSet_AllFiles/ClinicalReadings/*.txt (not read)",
    label_rule="the file-name suffix: _0 normal 0, _1 abnormal 1",
    published_rule="80/20, seed-42 shuffle of the sorted file names, first floor(80%) train "
                   "(the published code shuffled Kaggle's shenzhen_metadata.csv, assumed sorted)",
    patient_rule="the file stem: one radiograph per patient",
    scan=_scan_shenzhen, published=_published_80_20, has_patients=True,
    typical_images=662, colour=False)


STOIC_CLASSES = ("no_covid", "covid")


def _scan_stoic(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    """STOIC 2021: one CT volume per patient, ``data/mha/<PatientID>.mha``; the label is
    ``probCOVID`` (0/1) of ``metadata/reference.csv``, rows in that CSV's order."""
    table = root / "metadata" / "reference.csv"
    frame = _read_csv("stoic", table, ["PatientID", "probCOVID"])
    label = frame["probCOVID"].str.strip()
    bad = ~label.isin(["0", "1"])
    if bad.any():
        raise _unknown_labels("stoic", f"the probCOVID column of {table}", label[bad], ["0", "1"])
    patient = frame["PatientID"].str.strip()
    return _rows(_join(_need_dir("stoic", root / "data" / "mha"), patient + ".mha"), label.astype(int),
                 STOIC_CLASSES, patient.to_numpy())


STOIC = Adapter(
    kind="stoic", title="STOIC 2021 COVID-19 CT (2,000 public volumes; middle axial slice)",
    classes=STOIC_CLASSES,
    source="https://registry.opendata.aws/stoic2021-training/ (s3://stoic2021-training)",
    licence="CC BY-NC 4.0",
    layout="metadata/reference.csv (columns PatientID, probCOVID, probSevere)\n"
           "data/mha/<PatientID>.mha (one CT volume per patient; read with SimpleITK)",
    label_rule="probCOVID: 1 covid, 0 no_covid (RT-PCR); the image is the middle axial slice "
               "(z index depth // 2), HU window [-1000, 250] mapped to 0..255",
    published_rule="80/20 seed-42 shuffle of reference.csv rows in file order, first floor(80%) train",
    patient_rule="PatientID (one volume per patient)",
    scan=_scan_stoic, published=_published_80_20, has_patients=True, listed_in="metadata/reference.csv",
    typical_images=2_000, colour=False)
