"""The dataset index: one row per image with its label, split and patient.

Every adapter (the published datasets, users' CSV or ImageFolder data, the demo
datasets) produces the same table, so everything downstream reads one format:

    path,label,label_name,split,patient,split_rule

Two optional columns, ``view_group`` and ``view``, follow where the data has several
views of one case (CheXpert: ``patientN/studyN`` and ``frontal``/``lateral``; EyePACS: the
patient id and ``left``/``right``); the invariance protocol pairs views by them.

``path`` is the image file, ``label`` an integer in ``0..C-1``, ``split`` is ``train``
or ``test``, ``patient`` may be empty, ``split_rule`` says how the split was made
(``given``, ``published``, ``patient:seed=42``...).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.writers import write_csv

INDEX_COLUMNS = ["path", "label", "label_name", "split", "patient", "split_rule"]
VIEW_COLUMNS = ["view_group", "view"]  # optional: present only for data with several views of a case
SPLITS = ("given", "published", "patient", "random")


def write_index(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    check_index(frame, str(path))
    write_csv(path, frame[index_columns(frame)])


def index_columns(frame: pd.DataFrame) -> list[str]:
    """The index columns of ``frame``: ``INDEX_COLUMNS`` plus the view columns when it has them."""
    return INDEX_COLUMNS + [c for c in VIEW_COLUMNS if c in frame.columns]


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    frame = read_table(path, f"columns {','.join(INDEX_COLUMNS)}", remedy="re-run the index rule",
                       dtype={"patient": str, "label_name": str, "path": str, "view_group": str, "view": str})
    check_index(frame, str(path))
    return frame


def read_table(path: str | os.PathLike, expected: str, *,
               remedy: str = "restore it from the original download", **kwargs) -> pd.DataFrame:
    """Read a CSV (strings, empty cells kept as ""), or raise a ValueError naming the file.

    pandas' own errors for an empty or broken file do not say which file; this one says
    which, what is wrong and what was ``expected`` (the columns). A header without rows
    is an error too. ``kwargs`` go to ``pandas.read_csv`` and override the defaults.
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, **{"dtype": str, "keep_default_na": False, **kwargs})
    except pd.errors.EmptyDataError:
        problem = "is empty (0 bytes)" if path.stat().st_size == 0 else "holds no CSV columns (blank lines only)"
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        problem = f"cannot be parsed as CSV ({str(err).strip()[:200]})"
    else:
        if len(frame):
            return frame
        problem = f"has no data rows (only the header {list(frame.columns)[:10]})"
    raise ValueError(f"{path} {problem}; expected a CSV with {expected}. The file is damaged or "
                     f"incomplete: {remedy}.")


def class_names(frame: pd.DataFrame) -> list[str]:
    pairs = frame[["label", "label_name"]].drop_duplicates().sort_values("label")
    return [str(n) for n in pairs["label_name"]]


def check_index(frame: pd.DataFrame, source: str) -> None:
    """Raise a clear error for a missing column, bad split name, gap in labels, empty class."""
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: index lacks columns {missing}; expected {INDEX_COLUMNS}")
    if frame.empty:
        raise ValueError(f"{source}: the dataset index is empty; check the dataset root and layout")
    bad = sorted(set(frame["split"]) - {"train", "test"})
    if bad:
        raise ValueError(f"{source}: unknown split values {bad}; use 'train' or 'test'")
    labels = sorted(int(v) for v in set(frame["label"]))
    if labels != list(range(len(labels))):
        raise ValueError(f"{source}: labels must be 0..C-1 with every class present, got {labels}")
    for part in ("train", "test"):
        if not (frame["split"] == part).any():
            raise ValueError(f"{source}: the {part} split is empty; check the split settings")


# The published code (github.com/jonahanton/SSL_medicalimaging, datasets/custom_*_dataset.py)
# shuffles with pandas ``DataFrame.sample(frac=1, random_state=42)`` and takes
# ``iloc[:int(math.floor(0.8 * n))]`` as train. pandas draws that order with
# ``np.random.RandomState(42).permutation(n)``, so these functions reproduce it exactly
# (floor, not round: 662 Shenzhen images give 529 train images, not 530).
PUBLISHED_SEED = 42
PUBLISHED_TRAIN_FRACTION = 0.8


def first_of_shuffle(n: int, n_train: int, seed: int = PUBLISHED_SEED) -> np.ndarray:
    """``train`` for the first ``n_train`` rows of the seeded shuffle of ``n`` rows, else ``test``.

    Entry ``i`` belongs to row ``i`` of the unshuffled input, so the caller keeps its order.
    """
    if not 0 <= n_train <= n:
        raise ValueError(f"cannot put {n_train} of {n} rows in train; use a count between 0 and {n}")
    order = np.random.RandomState(seed).permutation(n)
    split = np.full(n, "test", dtype=object)
    split[order[:n_train]] = "train"
    return split


def published_split(n: int, seed: int = PUBLISHED_SEED, train_fraction: float = PUBLISHED_TRAIN_FRACTION) -> np.ndarray:
    """The published 80/20 rule: shuffle the row order with ``seed``, first ``floor(80% n)`` train."""
    return first_of_shuffle(n, int(math.floor(train_fraction * n)), seed)


def patient_split(
    patients: pd.Series, labels: pd.Series, seed: int = 42, train_fraction: float = 0.8,
) -> np.ndarray:
    """Split by patient so no patient is in both train and test.

    Each patient gets its majority label (ties: the smaller label). Per label, patients
    are shuffled with ``seed`` and, in that order, put in train while that keeps the
    label's train share nearest ``train_fraction``, so each class keeps roughly that
    share (stratified where the grouping allows). Vectorised: fast on 65k patients.
    """
    frame = pd.DataFrame({"patient": patients.astype(str).to_numpy(), "label": labels.to_numpy()})
    if (frame["patient"] == "").any():
        raise ValueError("patient split needs a patient id for every image; this data has none "
                         "for some images: use split: published or random")
    counts = frame.groupby(["patient", "label"]).size().rename("n").reset_index()
    major = (counts.sort_values(["patient", "n", "label"], ascending=[True, False, True])
             .drop_duplicates("patient").set_index("patient")["label"])
    sizes = frame.groupby("patient").size()
    rng = np.random.RandomState(seed)
    train: list[str] = []
    for label in sorted(major.unique()):
        names = np.array(sorted(major.index[major == label]), dtype=object)
        rng.shuffle(names)
        n = sizes.loc[names].to_numpy()
        # A patient joins train when the middle of its images falls below the target, so
        # the share lands as close to ``train_fraction`` as the patient sizes allow.
        middle = np.cumsum(n) - n / 2
        train.extend(names[middle < train_fraction * n.sum()])
    return np.where(frame["patient"].isin(train), "train", "test").astype(object)


def apply_split(frame: pd.DataFrame, rule: str, seed: int, source: str) -> pd.DataFrame:
    """Fill ``split``/``split_rule`` by ``rule``; ``given`` keeps a split the data brought."""
    frame = frame.copy()
    if rule == "given":
        if "split" not in frame.columns or frame["split"].isin(["", None]).any():
            raise ValueError(f"{source}: split 'given' needs a split column with train/test on every row")
        frame["split_rule"] = "given"
    elif rule == "published":
        frame["split"] = published_split(len(frame))
        frame["split_rule"] = f"published:80/20,seed={PUBLISHED_SEED}"
    elif rule == "random":
        frame["split"] = published_split(len(frame), seed=seed)
        frame["split_rule"] = f"random:80/20,seed={seed}"
    elif rule == "patient":
        frame["split"] = patient_split(frame["patient"], frame["label"], seed=seed)
        frame["split_rule"] = f"patient:80/20,seed={seed}"
    else:
        raise ValueError(f"{source}: unknown split {rule!r}; expected one of {SPLITS}")
    return frame


def index_from_csv(csv: str | os.PathLike, root: str | os.PathLike | None = None, *,
                   split: str = "given", seed: int = 42, classes: list[str] | None = None) -> pd.DataFrame:
    """Users' own data: a CSV with ``path,label`` and optional ``split``, ``patient``.

    Relative paths are taken relative to ``root`` (default: the CSV's folder). Labels
    may be names or integers; names are numbered in sorted order unless ``classes``
    gives the order.
    """
    csv = Path(csv)
    if not csv.is_file():
        raise FileNotFoundError(f"dataset CSV {csv} not found; expected a CSV with columns path,label[,split,patient]")
    frame = read_table(csv, "columns path,label[,split,patient]", remedy="fix or rewrite the CSV")
    for col in ("path", "label"):
        if col not in frame.columns:
            raise ValueError(f"{csv}: missing column {col!r}; expected columns path,label[,split,patient]")
    base = Path(root) if root is not None else csv.parent
    _check_inside(frame["path"], base, csv)
    frame["path"] = [str(p if Path(p).is_absolute() else base / p) for p in frame["path"]]
    names = classes or sorted(set(frame["label"]), key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))
    unknown = sorted(set(frame["label"]) - set(names))
    if unknown:
        raise ValueError(f"{csv}: unknown labels {unknown}; the configured classes are {names}")
    frame["label_name"] = frame["label"]
    frame["label"] = frame["label"].map({n: i for i, n in enumerate(names)}).astype(int)
    if "patient" not in frame.columns:
        frame["patient"] = ""
    if split == "given" and "split" not in frame.columns:
        split = "published"
    frame = apply_split(frame, split, seed, str(csv))
    return frame[INDEX_COLUMNS]


def _check_inside(paths: pd.Series, base: Path, csv: Path) -> None:
    """Relative paths must stay under ``base``: ``../`` that climbs out of it is refused."""
    escaping = [(i, p) for i, p in enumerate(paths, start=2)
                if not Path(p).is_absolute() and os.path.normpath(p).split(os.sep)[0] == os.pardir]
    if escaping:
        shown = ", ".join(f"line {i}: {p!r}" for i, p in escaping[:5])
        raise ValueError(f"{csv}: {len(escaping)} relative image path(s) climb out of the dataset root {base} "
                         f"({shown}); relative paths must stay under the root: fix the CSV, or give "
                         "absolute paths for images kept elsewhere")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified (train, val) positions into ``labels``, each sorted."""
    from sklearn.model_selection import train_test_split  # about 1 s: kept out of the DAG build

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    values, counts = np.unique(labels, return_counts=True)
    if np.any(counts < 2):
        small = {int(v): int(c) for v, c in zip(values, counts) if c < 2}
        raise ValueError(f"classes {small} (label: training images) have fewer than 2 training images, "
                         "so a stratified train/val split is impossible; add images or drop the class")
    train, val = train_test_split(np.arange(len(labels)), test_size=val_fraction,
                                  random_state=seed, stratify=labels)
    return np.sort(train), np.sort(val)
