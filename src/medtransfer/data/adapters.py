"""Dataset adapters: a download of each published dataset (or users' own data) -> the index.

One adapter per dataset key. The registry ``ADAPTERS`` carries, next to the code that
scans a download, what a user needs to get the data right: class names in label order,
where to download it and under which licence, the folder layout expected under the
dataset root, the published label and split rules, patient ids and the options taken.
``describe(kind)`` renders that as text; every layout error quotes it.

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

import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtransfer.data.demo import DEMO_KINDS
from medtransfer.data.index import (
    PUBLISHED_SEED, SPLITS, check_index, first_of_shuffle, index_from_csv,
    index_columns, patient_split, published_split, read_table, write_index,
)

log = logging.getLogger(__name__)

# CheXpert's published cut: the first 134,049 of the 223,414 shuffled train.csv rows are
# train (about 60%). On a CSV of another length (a tiny test tree, a different release)
# the cut scales by this fraction unless the ``train_rows`` option fixes it.
CHEXPERT_TRAIN_ROWS = 134_049
CHEXPERT_ROWS = 223_414
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SHOW = 3  # how many offending names an error message quotes


@dataclass(frozen=True)
class Option:
    """One adapter option: ``allowed`` lists the values, or ``check`` validates free ones."""

    default: Any
    doc: str
    allowed: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    expects: str = ""


@dataclass(frozen=True)
class Adapter:
    """A dataset key's metadata and the function that scans a download into rows.

    ``scan(root, options)`` returns columns ``path, label, label_name, patient, keep``
    (and ``split`` when the data has its own), rows in the order the published code
    shuffled; ``keep`` is False for rows the label rule drops after the published split.
    ``published(frame, options)`` returns the published split of all rows and its rule.
    """

    kind: str
    title: str
    classes: tuple[str, ...]
    source: str
    licence: str
    layout: str
    label_rule: str
    published_rule: str
    patient_rule: str
    scan: Callable[[Path, dict[str, Any]], pd.DataFrame]
    published: Callable[[pd.DataFrame, dict[str, Any]], tuple[np.ndarray, str]]
    options: dict[str, Option] = field(default_factory=dict)
    option_classes: dict[str, dict[Any, tuple[str, ...]]] = field(default_factory=dict)
    has_patients: bool = False
    has_given_split: bool = False
    listed_in: str | None = None  # the file that lists images: check they exist
    from_csv: bool = False  # indexed by index.index_from_csv (users' CSV, the demo datasets)

    def class_names(self, options: dict[str, Any] | None = None) -> tuple[str, ...]:
        """Class names in label order under ``options`` (empty: taken from the data)."""
        if not self.option_classes:
            return self.classes
        (name, table), = self.option_classes.items()  # one option picks the class names
        return table[(options or {}).get(name, self.options[name].default)]

    def resolve_options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults filled in; an unknown name or a bad value is an error listing the allowed."""
        given = dict(options or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            takes = ", ".join(sorted(self.options)) or "no options"
            raise ValueError(f"{self.kind}: unknown option(s) {unknown}; {self.kind} takes {takes}. "
                             f"Fix the dataset's options in the config.")
        return {name: _check_option(self.kind, name, opt, given.get(name, opt.default))
                for name, opt in self.options.items()}


def _check_option(kind: str, name: str, opt: Option, value: Any) -> Any:
    if opt.allowed is not None and (value not in opt.allowed or type(value) is not type(opt.default)):
        raise ValueError(f"{kind}: option {name}={value!r} is not allowed; use one of "
                         f"{list(opt.allowed)} (default {opt.default!r})")
    if opt.check is not None and not opt.check(value):
        raise ValueError(f"{kind}: option {name}={value!r} is not valid; expected {opt.expects}")
    return value


# ---------------------------------------------------------------------------- errors


def describe(kind: str) -> str:
    """Human text for ``kind``: where to download it, the layout expected, labels, splits."""
    a = get_adapter(kind)
    classes = a.class_names()
    lines = [f"{a.kind}: {a.title}", f"  download: {a.source}", f"  licence: {a.licence}",
             "  expected layout under the dataset root:"]
    lines += [f"    {line}" for line in a.layout.strip().splitlines()]
    lines.append("  classes (label order): " + (", ".join(f"{i} {c}" for i, c in enumerate(classes))
                                                 or "taken from the data"))
    lines += [f"  labels: {a.label_rule}", f"  published split: {a.published_rule}",
              f"  patient ids: {a.patient_rule}"]
    for name, opt in a.options.items():
        values = f"; one of {list(opt.allowed)}" if opt.allowed else f"; {opt.expects}"
        lines.append(f"  option {name} (default {opt.default!r}{values}): {opt.doc}")
    return "\n".join(lines)


def _layout_error(kind: str, path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{kind}: expected {what} {path} does not exist; the download is "
                             f"missing or not in the expected layout.\n{describe(kind)}")


def _need_file(kind: str, path: Path) -> Path:
    if not path.is_file():
        raise _layout_error(kind, path, "file")
    return path


def _need_dir(kind: str, path: Path) -> Path:
    if not path.is_dir():
        raise _layout_error(kind, path, "folder")
    return path


def _unknown_labels(kind: str, where: str | Path, bad: Iterable[Any], allowed: Iterable[Any]) -> ValueError:
    bad = sorted({str(b) for b in bad})
    return ValueError(f"{kind}: unknown label value(s) {bad[:10]} in {where}; expected one of "
                      f"{list(allowed)}. Check that this is the original download.\n{describe(kind)}")


def _first(values: Iterable[Any]) -> list[str]:
    return [str(v) for v in list(values)[:SHOW]]


# ---------------------------------------------------------------------------- file helpers


def _list_files(kind: str, folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Sorted names of the image files in ``folder`` (hidden files skipped, e.g. macOS ``._x``).

    Other files are left out with a logged warning that names them, never silently.
    """
    _need_dir(kind, folder)
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
    images = [n for n in names if n.lower().endswith(suffixes)]
    if len(images) < len(names):
        others = [n for n in names if not n.lower().endswith(suffixes)]
        log.warning("%s: %d file(s) in %s are not images (%s) and are left out, e.g. %s",
                    kind, len(others), folder, ", ".join(suffixes), others[:SHOW])
    return images


def _list_dirs(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _missing(paths: pd.Series) -> np.ndarray:
    """Mask of ``paths`` that do not exist: one listing per distinct folder, no per-file stat."""
    parts = paths.str.rpartition(os.sep)
    existing: set[str] = set()
    for folder in parts[0].unique():
        try:
            names = os.listdir(folder or os.curdir)
        except (FileNotFoundError, NotADirectoryError):
            continue
        existing.update(names if not folder else (folder + os.sep + n for n in names))
    return ~paths.isin(existing).to_numpy()


def _check_exist(kind: str, frame: pd.DataFrame, source: str) -> None:
    gone = frame["path"][_missing(frame["path"])]
    if len(gone):
        raise FileNotFoundError(
            f"{kind}: {len(gone)} of {len(frame)} images listed in {source} do not exist, e.g. "
            f"{_first(gone)}; the download is incomplete or not unpacked in the expected layout: "
            f"re-extract it.\n{describe(kind)}")


def _join(folder: Path, names: pd.Series | list[str]) -> pd.Series:
    """Paths as strings, built by vectorised concatenation (no Path object per row)."""
    return str(folder) + os.sep + pd.Series(names, dtype=str).reset_index(drop=True)


def _rows(paths: pd.Series, labels: Any, classes: tuple[str, ...], patient: Any = "") -> pd.DataFrame:
    labels = np.asarray(labels, dtype=int)
    return pd.DataFrame({"path": paths.to_numpy(), "label": labels,
                         "label_name": np.asarray(classes, dtype=object)[labels],
                         "patient": patient, "keep": True})


def _read_table(kind: str, path: Path, expected: str, **kwargs: Any) -> pd.DataFrame:
    """A dataset CSV as strings; missing, empty or unparsable: an error naming the file."""
    try:
        return read_table(_need_file(kind, path), expected, **kwargs)
    except ValueError as err:
        raise ValueError(f"{kind}: {err}\n{describe(kind)}") from err


def _read_csv(kind: str, path: Path, columns: list[str], **kwargs: Any) -> pd.DataFrame:
    """Read the ``columns`` of a dataset CSV as strings; a missing column is a layout error."""
    frame = _read_table(kind, path, f"a header row naming at least the columns {', '.join(columns)}", **kwargs)
    lacking = [c for c in columns if c not in frame.columns]
    if lacking:
        raise ValueError(f"{kind}: {path} lacks column(s) {lacking}; it has {list(frame.columns)[:20]}. "
                         f"Use the original file.\n{describe(kind)}")
    return frame[columns]


# ---------------------------------------------------------------------------- published splits


def _published_80_20(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    return published_split(len(frame)), f"published:80/20,seed={PUBLISHED_SEED}"


def _published_chestx(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    # 80/20 of all Data_Entry_2017.csv rows; the single-finding filter comes after.
    return published_split(len(frame)), f"published:80/20_of_all_rows,seed={PUBLISHED_SEED}"


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


def _published_given(frame: pd.DataFrame, options: dict[str, Any]) -> tuple[np.ndarray, str]:
    return frame["split"].to_numpy(dtype=object), "published:official_train_test"


# ---------------------------------------------------------------------------- scanners


BACH_CLASSES = ("Normal", "Benign", "InSitu", "Invasive")


def _scan_class_folders(kind: str, parent: Path, classes: tuple[str, ...],
                        suffixes: tuple[str, ...]) -> pd.DataFrame:
    """Rows ``file, label`` for ``parent/<class>/<file>``; an unknown folder is an error."""
    _need_dir(kind, parent)
    unknown = sorted(set(_list_dirs(parent)) - set(classes))
    if unknown:
        raise _unknown_labels(kind, f"the class folders of {parent}", unknown, classes)
    rows = [(name, label) for label, cls in enumerate(classes) if (parent / cls).is_dir()
            for name in _list_files(kind, parent / cls, suffixes)]
    return pd.DataFrame(rows, columns=["file", "label"]).astype({"label": int})


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


CHEXPERT_CLASSES = ("no_pleural_effusion", "pleural_effusion")
CHEXPERT_DIRS = ("CheXpert-v1.0", "CheXpert-v1.0-small")
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


AMD_CLASSES = ("Non-AMD", "AMD")


def _scan_amd(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    parent = root / "Training400"
    found = _scan_class_folders("ichallenge_amd", parent, AMD_CLASSES, (".jpg", ".jpeg"))
    found = found.sort_values("file", kind="stable")  # A0001.jpg... N0311.jpg, the assumed CSV order
    folders = pd.Series(AMD_CLASSES, dtype=str).iloc[found["label"]].to_numpy()
    paths = str(parent) + os.sep + pd.Series(folders) + os.sep + found["file"].to_numpy()
    return _rows(paths, found["label"], AMD_CLASSES, _stems(found["file"]))


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


def _stems(files: pd.Series) -> np.ndarray:
    return files.str.rpartition(".")[0].to_numpy()


def _scan_imagefolder(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    folders = _list_dirs(root)
    classes = tuple(options["classes"] or folders)
    if not folders:
        raise _layout_error("imagefolder", root / "<class_name>", "class folder")
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise _unknown_labels("imagefolder", f"the class folders of {root}", unknown, classes)
    files = {c: _list_files("imagefolder", root / c, IMAGE_SUFFIXES) if c in folders else [] for c in classes}
    paths = pd.Series([str(root / c / f) for c in classes for f in files[c]], dtype=str)
    labels = [i for i, c in enumerate(classes) for _ in files[c]]
    _check_nonempty("imagefolder", classes, labels, f"{root}/<class_name>")
    return _rows(paths, labels, classes)


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


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _scan_cifar10(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    """CIFAR-10's python batches: ``data_batch_1..5`` train, ``test_batch`` test; one row per
    image, its path ``<batch>#<row>`` (decoded by ``sources.cifar_image``)."""
    from medtransfer.data.sources import CIFAR_BATCHES, read_cifar_batch

    folder = _need_dir("cifar10", root / "cifar-10-batches-py")
    parts = []
    for name in CIFAR_BATCHES:
        batch = read_cifar_batch(_need_file("cifar10", folder / name))
        labels = batch["labels"]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
            raise _unknown_labels("cifar10", folder / name, labels[(labels < 0) | (labels > 9)], range(10))
        rows = _rows(pd.Series([f"{folder / name}#{i}" for i in range(len(labels))], dtype=str), labels,
                     CIFAR10_CLASSES)
        parts.append(rows.assign(split="test" if name == "test_batch" else "train"))
    return pd.concat(parts, ignore_index=True)


# ---------------------------------------------------------------------------- registry


def _no_scan(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    raise AssertionError("CSV-backed kinds are indexed by _csv_index")  # never called


def _is_class_list(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and len(value) > 0
                             and all(isinstance(v, str) for v in value) and len(set(value)) == len(value))


def _is_row_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


CLASSES_OPTION = Option(None, "class names in label order; default: sorted names found in the data",
                        check=_is_class_list, expects="null or a list of distinct class names")

ADAPTERS: dict[str, Adapter] = {a.kind: a for a in [
    Adapter(
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
        scan=_scan_bach, published=_published_bach),
    Adapter(
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
        listed_in="Data_Entry_2017.csv"),
    Adapter(
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
        }),
    Adapter(
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
        listed_in="trainLabels.csv and retinopathy_solution.csv (or testLabels.csv)"),
    Adapter(
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
        scan=_scan_amd, published=_published_80_20, has_patients=True),
    Adapter(
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
        option_classes={"positive": PM_CLASSES}),
    Adapter(
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
        scan=_scan_montgomery, published=_published_80_20, has_patients=True),
    Adapter(
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
        scan=_scan_shenzhen, published=_published_80_20, has_patients=True),
    Adapter(
        kind="imagefolder", title="your own images, one folder per class",
        classes=(), source="your own data", licence="yours",
        layout="<class_name>/*.{png,jpg,jpeg,tif,tiff,bmp} (one folder per class; hidden files skipped)",
        label_rule="the folder; classes in sorted name order unless the option classes sets it",
        published_rule="80/20, seed-42 shuffle of the files sorted by class then name",
        patient_rule="none (split: patient is refused; use the csv kind with a patient column)",
        scan=_scan_imagefolder, published=_published_80_20,
        options={"classes": CLASSES_OPTION}),
    Adapter(
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
        scan=_scan_stoic, published=_published_80_20, has_patients=True, listed_in="metadata/reference.csv"),
    Adapter(
        kind="cifar10", title="CIFAR-10 (60,000 32x32 natural images; the ImageNet-like control)",
        classes=CIFAR10_CLASSES,
        source="https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)",
        licence="free for research; cite Krizhevsky 2009",
        layout="cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch (the official python "
               "pickles, read without running code), batches.meta",
        label_rule="the batch's labels (0 airplane ... 9 truck)",
        published_rule="the official split: data_batch_1-5 train (50,000), test_batch test (10,000); "
                       "few-shot 2-way and 5-way as published (two dataset entries with fewshot.n_way 2 and 5)",
        patient_rule="none (natural images)",
        scan=_scan_cifar10, published=_published_given, has_given_split=True),
    Adapter(
        kind="csv", title="your own images listed in a CSV",
        classes=(), source="your own data (pass csv=...)", licence="yours",
        layout="a CSV with columns path,label[,split,patient]; relative paths are relative to "
               "the dataset root, or to the CSV's folder when no root is given",
        label_rule="the label column (names or integers), sorted order unless the option classes sets it",
        published_rule="the CSV's split column when present, else 80/20 seed-42 shuffle of its rows",
        patient_rule="the patient column when present",
        scan=_no_scan, published=_published_80_20, from_csv=True,
        options={"classes": CLASSES_OPTION}, has_patients=True, has_given_split=True, listed_in="the CSV"),
] + [
    Adapter(
        kind=kind, title=f"generated demo stand-in ({', '.join(classes)})",
        classes=classes, source="generated by the workflow (rule make_demo_dataset, medtransfer.data.demo)",
        licence="synthetic, no restrictions",
        layout="labels.csv (columns path,label,split,patient) and images/ beside it",
        label_rule="the label column (class names)", published_rule="the split column of labels.csv",
        patient_rule="the patient column", scan=_no_scan, published=_published_80_20, from_csv=True,
        has_patients=True, has_given_split=True, listed_in="labels.csv")
    for kind, classes in DEMO_KINDS.items()
]}

DATASET_KINDS: tuple[str, ...] = tuple(ADAPTERS)


def get_adapter(kind: str) -> Adapter:
    if kind not in ADAPTERS:
        raise ValueError(f"unknown dataset kind {kind!r}; use one of {list(DATASET_KINDS)}")
    return ADAPTERS[kind]


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


def _check_nonempty(kind: str, classes: tuple[str, ...] | list[str], labels: pd.Series | list[int],
                    where: str) -> None:
    """Every class of ``classes`` (label order) needs an image among ``labels``."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
    empty = [c for c, n in zip(classes, counts) if n == 0]
    if empty:
        raise ValueError(f"{kind}: class(es) {empty} have no images in {where} after the label rule; "
                         f"every class needs images: check the download is complete.\n{describe(kind)}")


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
