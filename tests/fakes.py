"""The fakes the tests share: a toy backbone, cache and index, and tiny dataset trees.

Toys: ``toy_weights`` (a random backbone from a fixed seed), ``toy_index`` and ``toy_pngs``; the
images of a toy cache stay with each test, since what they show is what the test measures.
Trees: each dataset kind's real layout (file names, CSV headers, folders) with 8x8 images, in
``make_<kind>(root)``; ``tiny_image`` writes one image of them. Results: ``summary_table``, a
results table of three models on two published datasets. Lightning: ``lightning_class``, a class
that pickles under a Lightning name as a file written with Lightning installed names it.
"""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from PIL import Image

from medtransfer.data.index import write_index
from medtransfer.results import make_row, write_rows
from medtransfer.weights.backbones import WeightsMeta, build_backbone, save_weights

# ---------------------------------------------------------------------------- toy backbone, cache, index


def toy_weights(path: Path, arch: str = "resnet18", model: str = "toy", demo: bool = False) -> Path:
    """A random ``arch`` saved at ``path``; torch is seeded with 0 first, so every call writes the same net."""
    torch.manual_seed(0)
    save_weights(path, build_backbone(arch).state_dict(), WeightsMeta(arch=arch, model=model, demo=demo))
    return path


def toy_index(path: Path, labels: np.ndarray, n_train: int, paths: Sequence[str] | None = None,
              names: tuple[str, str] = ("a", "b")) -> Path:
    """An index of ``len(labels)`` images: the first ``n_train`` train, the rest test; label ``i`` is
    called ``names[i]``; paths ``i<k>.png`` (not read) unless given."""
    n = len(labels)
    frame = pd.DataFrame({"path": list(paths) if paths is not None else [f"i{i}.png" for i in range(n)],
                          "label": labels, "label_name": np.asarray(names)[labels],
                          "split": ["train"] * n_train + ["test"] * (n - n_train), "patient": "",
                          "split_rule": "given"})
    write_index(frame, path)
    return path


def toy_pngs(folder: Path, images: Sequence[np.ndarray], prefix: str = "i") -> list[str]:
    """Each uint8 HxWx3 array of ``images`` as ``folder/<prefix><k>.png``; their absolute paths."""
    paths = []
    for i, pixels in enumerate(images):
        Image.fromarray(pixels).save(folder / f"{prefix}{i}.png")
        paths.append(str(folder / f"{prefix}{i}.png"))
    return paths


# ---------------------------------------------------------------------------- dataset trees


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}


def tiny_image(path: Path, shade: int = 100) -> None:
    """An 8x8 grey image in the format its suffix names (PIL), its folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), shade).save(path, FORMATS[path.suffix.lower()])


BACH_COUNTS = {"Normal": ("n", 3), "Benign": ("b", 3), "InSitu": ("is", 2), "Invasive": ("iv", 2)}


# ------------------------------------------------------------------------ bach


def make_bach(root: Path, truth: bool = True) -> list[tuple[str, str]]:
    photos = root / "ICIAR2018_BACH_Challenge" / "Photos"
    rows = [(f"{p}{i:03d}.tif", c) for c, (p, n) in BACH_COUNTS.items() for i in range(1, n + 1)]
    for name, cls in rows:
        tiny_image(photos / cls / name)
    rows = rows[::-1]  # a CSV order unlike the sorted one, to see that the CSV sets it
    if truth:
        (photos / "microscopy_ground_truth.csv").write_text("".join(f"{f},{c}\n" for f, c in rows))
    return rows


# ---------------------------------------------------------------------- chestx


CHESTX_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                 "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")

CHESTX_FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumothorax",
                   "No Finding", "Pneumonia", "Cardiomegaly|Emphysema", "Effusion|Infiltration", "Hernia"]


def make_chestx(root: Path, n: int = 48) -> pd.DataFrame:
    rows = pd.DataFrame({"Image Index": [f"{i // 3 + 1:08d}_{i % 3:03d}.png" for i in range(n)],
                         "Finding Labels": [CHESTX_FINDINGS[i % len(CHESTX_FINDINGS)] for i in range(n)],
                         "Patient ID": [str(i // 2 + 1) for i in range(n)]})
    lines = [f"{r['Image Index']},{r['Finding Labels']},{i % 3},{r['Patient ID']},58,M,PA,2682,2749,0.143,0.143,\n"
             for i, r in rows.iterrows()]
    (root / "Data_Entry_2017.csv").write_text(CHESTX_HEADER + "".join(lines))
    for name in rows["Image Index"]:
        tiny_image(root / "images" / name)
    return rows


# -------------------------------------------------------------------- chexpert


CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia",
                   "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]

EFFUSION = ["1.0", "0.0", "-1.0", "", "1.0"]


def make_chexpert(root: Path, n: int = 30) -> pd.DataFrame:
    rows = []
    for i in range(n):
        view = "view1_frontal.jpg" if i % 2 == 0 else "view2_lateral.jpg"
        path = f"CheXpert-v1.0/train/patient{i // 4 + 1:05d}/study{i // 2 % 2 + 1}/{view}"
        rows.append({c: "" for c in CHEXPERT_HEADER} | {"Path": path, "Sex": "Female", "Age": "68",
                    "Frontal/Lateral": "Frontal" if i % 2 == 0 else "Lateral", "Pleural Effusion": EFFUSION[i % 5]})
        tiny_image(root / path)
    table = pd.DataFrame(rows, columns=CHEXPERT_HEADER)
    table.to_csv(root / "CheXpert-v1.0" / "train.csv", index=False)
    return table


# -------------------------------------------------------- diabetic retinopathy


def make_dr(root: Path, train_ids: int = 15, test_ids: int = 10, test_csv: str = "testLabels.csv") -> None:
    """Kaggle's layout; ``test_csv`` retinopathy_solution.csv writes it as Kaggle ships it."""
    start = 10
    for part, n in (("train", train_ids), ("test", test_ids)):
        images = [f"{start + i}_{eye}" for i in range(n) for eye in ("left", "right")]
        table = pd.DataFrame({"image": images, "level": [str(i // 2 % 5) for i in range(len(images))]})
        if part == "test" and test_csv == "retinopathy_solution.csv":
            table["Usage"] = ["Public", "Private"] * n
        table.to_csv(root / ("trainLabels.csv" if part == "train" else test_csv), index=False)
        for name in images:
            tiny_image(root / part / f"{name}.jpeg")
        start += n


# ------------------------------------------------------------------ iChallenge


def make_amd(root: Path, n_amd: int = 3, n_normal: int = 7) -> None:
    for i in range(1, n_amd + 1):
        tiny_image(root / "Training400" / "AMD" / f"A{i:04d}.jpg")
    for i in range(1, n_normal + 1):
        tiny_image(root / "Training400" / "Non-AMD" / f"N{i:04d}.jpg")


def make_pm(root: Path) -> None:
    for prefix, n in (("H", 3), ("N", 4), ("P", 3)):
        for i in range(1, n + 1):
            tiny_image(root / "PALM-Training400" / "PALM-Training400" / f"{prefix}{i:04d}.jpg")


# ----------------------------------------------------------------- NLM TB sets


TB_SETS = {"montgomerycxr": ("MontgomerySet", "MCUCXR"), "shenzhencxr": ("ChinaSet_AllFiles", "CHNCXR")}


def make_tb(root: Path, kind: str, n: int = 12) -> None:
    folder, prefix = TB_SETS[kind]
    for i in range(1, n + 1):
        tiny_image(root / folder / "CXR_png" / f"{prefix}_{i:04d}_{i % 3 == 0:d}.png")
    (root / folder / "CXR_png" / "Thumbs.db").write_bytes(b"\0")
    (root / folder / "ClinicalReadings").mkdir()


# ----------------------------------------------------------------- users' data


def make_imagefolder(root: Path) -> None:
    for i in range(4):
        tiny_image(root / "dog" / f"d{i}.jpg")
        tiny_image(root / "cat" / f"c{i}.PNG")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".hidden.png").write_bytes(b"")


def make_user_csv(root: Path, split: bool = True) -> Path:
    table = pd.DataFrame({"path": [f"img/{i}.png" for i in range(10)], "label": ["ill", "well"] * 5,
                          "patient": [f"p{i // 2}" for i in range(10)]})
    if split:
        table["split"] = ["train"] * 6 + ["test"] * 4
    for path in table["path"]:
        tiny_image(root / path)
    table.to_csv(root / "data.csv", index=False)
    return root / "data.csv"


# ---------------------------------------------------------------------------- stoic, cifar10


def make_stoic(root: Path, n: int = 10) -> dict[str, np.ndarray]:
    """``n`` volumes (5 x 12 x 10, int16 HU) and metadata/reference.csv, labels alternating."""
    (root / "data" / "mha").mkdir(parents=True)
    (root / "metadata").mkdir()
    rng = np.random.default_rng(0)
    volumes = {}
    for i in range(n):
        pid = str(100 + 7 * i)
        volume = rng.integers(-1400, 600, (5, 12, 10)).astype(np.int16)
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(root / "data" / "mha" / f"{pid}.mha"))
        volumes[pid] = volume
    pd.DataFrame({"PatientID": list(volumes), "probCOVID": [i % 2 for i in range(n)],
                  "probSevere": 0}).to_csv(root / "metadata" / "reference.csv", index=False)
    return volumes


def make_cifar(root: Path, per_batch: int = 10) -> dict[str, np.ndarray]:
    """The six official batches (protocol-2 pickles with bytes keys, as Python 2 wrote them)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    data = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": images,
                 b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        data[name] = images
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}, protocol=2))
    return data



# ---------------------------------------------------------------------------- a results table

SUMMARY_META = {"weights_sha256": "a" * 64, "weights_demo": False, "split": "given", "precision": "fp32",
                "preprocessing": "p"}
HEADLINE = {"chexpert": "accuracy", "diabetic_retinopathy": "balanced_accuracy"}


def summary_row(model: str, dataset: str, metric: str, value: float, protocol: str = "linear",
                setting: str = "manyshot", ci: float = 0.02, **details) -> dict:
    """One result row with the CI ``value +- ci``, n 100 and the given ``details``."""
    return make_row(model=model, dataset=dataset, protocol=protocol, setting=setting, metric=metric, value=value,
                    ci_low=value - ci, ci_high=value + ci, n=100, seed=0, meta=SUMMARY_META, details=details or None)


def summary_table(tmp_path: Path) -> Path:
    """Three models on two published datasets; pirl is separated from the best, moco-v2 is not."""
    rows = []
    values = {"chexpert": {"supervised": 0.75, "moco-v2": 0.74, "pirl": 0.60},
              "diabetic_retinopathy": {"supervised": 0.30, "moco-v2": 0.35, "pirl": 0.33}}
    for dataset, per_model in values.items():
        metric = HEADLINE[dataset]
        best = max(per_model, key=per_model.get)
        for model, value in per_model.items():
            rows.append(summary_row(model, dataset, metric, value))
            rows.append(summary_row(model, dataset, "auroc", value + 0.1))
            rows.append(summary_row(model, dataset, f"{metric}_diff_vs_best", value - per_model[best], best=best,
                                    differs=model == "pirl"))
    rows.append(summary_row("supervised", "chexpert", "accuracy", 0.70, protocol="fewshot", setting="20shot"))
    path = tmp_path / "table.csv"
    write_rows(rows, path)
    return path


# ---------------------------------------------------------------------------- Lightning classes


def lightning_class(monkeypatch, name: str, base: type = dict, **body) -> type:
    """A subclass of ``base`` importable as Lightning's ``name`` (``package.module.Class``) until
    ``monkeypatch.undo()``: pickling an instance names ``name`` exactly as a file written by
    Lightning does, and a plain unpickler rebuilds it through this class (running ``body``)."""
    module_name, _, qualname = name.rpartition(".")
    cls = type(qualname, (base,), {"__module__": module_name, "__qualname__": qualname, **body})
    parts = module_name.split(".")
    for i in range(1, len(parts) + 1):
        if ".".join(parts[:i]) not in sys.modules:
            monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    monkeypatch.setattr(sys.modules[module_name], qualname, cls, raising=False)
    return cls
