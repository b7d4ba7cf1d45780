"""Kinds that are no medical modality of their own: users' data (imagefolder, csv), the
natural-image control cifar10 and the workflow's generated demo_* datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medtransfer.data.adapters.base import (
    Adapter,
    Option,
    _check_nonempty,
    _layout_error,
    _list_dirs,
    _list_files,
    _need_dir,
    _need_file,
    _published_80_20,
    _published_given,
    _rows,
    _unknown_labels,
)
from medtransfer.data.demo import DEMO_KINDS
from medtransfer.data.sources import CIFAR_BATCHES, read_cifar_batch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _is_class_list(value: Any) -> bool:
    return value is None or (isinstance(value, (list, tuple)) and len(value) > 0
                             and all(isinstance(v, str) for v in value) and len(set(value)) == len(value))


CLASSES_OPTION = Option(None, "class names in label order; default: sorted names found in the data",
                        check=_is_class_list, expects="null or a list of distinct class names")


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


IMAGEFOLDER = Adapter(
    kind="imagefolder", title="your own images, one folder per class",
    classes=(), source="your own data", licence="yours",
    layout="<class_name>/*.{png,jpg,jpeg,tif,tiff,bmp} (one folder per class; hidden files skipped)",
    label_rule="the folder; classes in sorted name order unless the option classes sets it",
    published_rule="80/20, seed-42 shuffle of the files sorted by class then name",
    patient_rule="none (split: patient is refused; use the csv kind with a patient column)",
    scan=_scan_imagefolder, published=_published_80_20,
    options={"classes": CLASSES_OPTION},
    colour=True)


def _no_scan(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    raise AssertionError("CSV-backed kinds are indexed by _csv_index")  # never called


CSV = Adapter(
    kind="csv", title="your own images listed in a CSV",
    classes=(), source="your own data (pass csv=...)", licence="yours",
    layout="a CSV with columns path,label[,split,patient]; relative paths are relative to "
           "the dataset root, or to the CSV's folder when no root is given",
    label_rule="the label column (names or integers), sorted order unless the option classes sets it",
    published_rule="the CSV's split column when present, else 80/20 seed-42 shuffle of its rows",
    patient_rule="the patient column when present",
    scan=_no_scan, published=_published_80_20, from_csv=True,
    options={"classes": CLASSES_OPTION}, has_patients=True, has_given_split=True, listed_in="the CSV",
    colour=True)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _scan_cifar10(root: Path, options: dict[str, Any]) -> pd.DataFrame:
    """CIFAR-10's python batches: ``data_batch_1..5`` train, ``test_batch`` test; one row per
    image, its path ``<batch>#<row>`` (decoded by ``sources.cifar_image``)."""
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


CIFAR10 = Adapter(
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
    scan=_scan_cifar10, published=_published_given, has_given_split=True,
    typical_images=60_000, colour=True)


# What demo.generate writes: grey-scale PNG radiographs for demo_cxr, colour JPEG fundus
# photographs for demo_fundus (tests/test_data_adapters.py checks the generated images).
DEMO_COLOUR = {"demo_cxr": False, "demo_fundus": True}

DEMO = tuple(
    Adapter(
        kind=kind, title=f"generated demo stand-in ({', '.join(classes)})",
        classes=classes, source="generated by the workflow (rule make_demo_dataset, medtransfer.data.demo)",
        licence="synthetic, no restrictions",
        layout="labels.csv (columns path,label,split,patient) and images/ beside it",
        label_rule="the label column (class names)", published_rule="the split column of labels.csv",
        patient_rule="the patient column", scan=_no_scan, published=_published_80_20, from_csv=True,
        has_patients=True, has_given_split=True, listed_in="labels.csv", colour=DEMO_COLOUR[kind])
    for kind, classes in DEMO_KINDS.items()
)
