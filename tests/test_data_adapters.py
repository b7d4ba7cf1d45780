"""Dataset adapters on tiny fake downloads in each dataset's real layout.

Real file names and CSV headers, 8x8 images written with PIL: labels per the published
rules, class counts, the published splits, patient grouping and every error message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from fakes import (
    BACH_COUNTS,
    CHESTX_FINDINGS,
    TB_SETS,
    make_amd,
    make_bach,
    make_chestx,
    make_chexpert,
    make_dr,
    make_imagefolder,
    make_pm,
    make_tb,
    make_user_csv,
    tiny_image,
)
from medtransfer.data.adapters import ADAPTERS, DATASET_KINDS, MULTIVIEW_KINDS, build_index, describe, index_dataset
from medtransfer.data.adapters.chest import CHEXPERT_ROWS, CHEXPERT_TRAIN_ROWS
from medtransfer.data.demo import DEMO_KINDS, generate
from medtransfer.data.index import INDEX_COLUMNS, first_of_shuffle, published_split, read_index
from medtransfer.resources import TYPICAL_IMAGES


def _train_share(frame: pd.DataFrame) -> float:
    return float((frame["split"] == "train").mean())


def _no_shared_patients(frame: pd.DataFrame) -> bool:
    return bool((frame.groupby("patient")["split"].nunique() == 1).all())


# ---------------------------------------------------------------------------- bach


def test_bach_labels_counts_and_published_split_in_csv_order(tmp_path: Path) -> None:
    rows = make_bach(tmp_path)
    frame = build_index("bach", tmp_path)
    assert list(frame.columns) == INDEX_COLUMNS
    assert [Path(p).name for p in frame["path"]] == [f for f, _ in rows]
    assert frame.groupby("label_name").size().to_dict() == {c: n for c, (_, n) in BACH_COUNTS.items()}
    assert (frame["label_name"] == [c for _, c in rows]).all()
    assert dict(zip(frame["label_name"], frame["label"])) == {"Normal": 0, "Benign": 1, "InSitu": 2, "Invasive": 3}
    assert (frame["split"] == published_split(10)).all() and (frame["split"] == "train").sum() == 8
    assert set(frame["split_rule"]) == {"published:80/20,seed=42"}
    assert (frame["patient"] == "").all()


def test_bach_without_truth_refuses_the_published_split_but_splits_at_random(tmp_path: Path) -> None:
    make_bach(tmp_path, truth=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)bach: split 'published' needs .*Photos/microscopy_ground_truth"
                                                r"\.csv, which does not exist.*use split: random.*zenodo"):
        build_index("bach", tmp_path)
    frame = build_index("bach", tmp_path, split="random", seed=42)
    names = [Path(p).name for p in frame["path"]]
    assert names == sorted(names) and len(names) == 10
    assert (frame["split"] == published_split(10, seed=42)).all()
    assert set(frame["split_rule"]) == {"random:80/20,seed=42"}
    assert "split: published is refused" in describe("bach")


@pytest.mark.parametrize(("text", "problem"), [
    ("", r"is empty \(0 bytes\)"),
    ("n001.tif\nb001.tif\n", r"has 1 column"),
    ('n001.tif,"Normal\n', r"cannot be parsed as CSV"),
])
def test_bach_broken_truth_names_the_file_and_the_columns(tmp_path: Path, text: str, problem: str) -> None:
    make_bach(tmp_path)
    (tmp_path / "ICIAR2018_BACH_Challenge" / "Photos" / "microscopy_ground_truth.csv").write_text(text)
    with pytest.raises(ValueError, match=rf"(?s)bach: .*microscopy_ground_truth\.csv {problem}.*expected .*no header "
                                         r"and two columns, file name and class.*zenodo"):
        build_index("bach", tmp_path)


def test_bach_truth_must_agree_with_folders(tmp_path: Path) -> None:
    make_bach(tmp_path)
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    (photos / "Normal" / "n001.tif").rename(photos / "Benign" / "n001.tif")
    with pytest.raises(ValueError, match=r"bach: 1 images are in a class folder .* e\.g\. \['n001.tif'\]"):
        build_index("bach", tmp_path)


def test_bach_truth_lists_missing_image(tmp_path: Path) -> None:
    make_bach(tmp_path)
    (tmp_path / "ICIAR2018_BACH_Challenge" / "Photos" / "InSitu" / "is002.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images listed in .*microscopy_ground_truth.csv.*is002.tif"):
        build_index("bach", tmp_path)


def test_bach_unknown_label_in_truth_and_unknown_folder(tmp_path: Path) -> None:
    make_bach(tmp_path)
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    truth = photos / "microscopy_ground_truth.csv"
    truth.write_text(truth.read_text().replace("Benign", "Benigne"))
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['Benigne'\].*expected one of"):
        build_index("bach", tmp_path)
    truth.unlink()
    (photos / "Tumour").mkdir()
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['Tumour'\] in the class folders"):
        build_index("bach", tmp_path)


def test_bach_refuses_a_patient_split(tmp_path: Path) -> None:
    make_bach(tmp_path)
    with pytest.raises(ValueError, match="split 'patient' needs patient ids and bach has none"):
        build_index("bach", tmp_path, split="patient")


# ---------------------------------------------------------------------------- chestx


def test_chestx_keeps_single_findings_and_splits_before_filtering(tmp_path: Path) -> None:
    rows = make_chestx(tmp_path)
    frame = build_index("chestx", tmp_path)
    keep = rows["Finding Labels"].isin(CHESTX_FINDINGS[:7]).to_numpy()
    assert len(frame) == keep.sum() == 28
    assert (frame["label_name"].to_numpy() == rows["Finding Labels"][keep].to_numpy()).all()
    assert frame.groupby("label").size().tolist() == [4] * 7
    # The published split is drawn over all 48 rows, then filtered.
    assert (frame["split"].to_numpy() == published_split(48)[keep]).all()
    assert (frame["split"].to_numpy() != published_split(28)).any()
    assert set(frame["split_rule"]) == {"published:80/20_of_all_rows,seed=42"}
    assert (frame["patient"] == rows["Patient ID"][keep].to_numpy()).all()


def test_chestx_patient_and_random_splits_use_kept_rows(tmp_path: Path) -> None:
    make_chestx(tmp_path)
    by_patient = build_index("chestx", tmp_path, split="patient", seed=3)
    assert len(by_patient) == 28 and _no_shared_patients(by_patient)
    assert set(by_patient["split_rule"]) == {"patient:80/20,seed=3"}
    rand = build_index("chestx", tmp_path, split="random", seed=5)
    assert (rand["split"].to_numpy() == published_split(28, seed=5)).all()


def test_chestx_unknown_finding_and_missing_image(tmp_path: Path) -> None:
    make_chestx(tmp_path)
    csv = tmp_path / "Data_Entry_2017.csv"
    text = csv.read_text()
    csv.write_text(text.replace("Mass,", "Tumor,", 1))
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['Tumor'\] in .*Finding Labels"):
        build_index("chestx", tmp_path)
    csv.write_text(text)
    (tmp_path / "images" / "00000008_000.png").unlink()  # a multi-finding row: dropped, not needed
    build_index("chestx", tmp_path)
    (tmp_path / "images" / "00000001_000.png").unlink()  # Atelectasis: kept
    with pytest.raises(FileNotFoundError, match=r"1 of 28 images listed in Data_Entry_2017.csv .*00000001_000.png"):
        build_index("chestx", tmp_path)


def test_chestx_wrong_csv_columns(tmp_path: Path) -> None:
    make_chestx(tmp_path)
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text(csv.read_text().replace("Patient ID", "Patient"))
    with pytest.raises(ValueError, match=r"(?s)lacks column\(s\) \[.Patient ID.\].*nihcc"):
        build_index("chestx", tmp_path)


def test_chestx_empty_class(tmp_path: Path) -> None:
    make_chestx(tmp_path)
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text(csv.read_text().replace(",Nodule,", ",Nodule|Mass,"))
    with pytest.raises(ValueError, match=r"class\(es\) \['Nodule'\] have no images"):
        build_index("chestx", tmp_path)


# ---------------------------------------------------------------------------- chexpert


def test_chexpert_uncertain_policy_both_ways(tmp_path: Path) -> None:
    table = make_chexpert(tmp_path)
    ones = build_index("chexpert", tmp_path)
    zeros = build_index("chexpert", tmp_path, options={"uncertain": "zeros"})
    value = table["Pleural Effusion"]
    assert (ones["label"].to_numpy() == value.isin(["1.0", "-1.0"]).to_numpy()).all()
    assert (zeros["label"].to_numpy() == (value == "1.0").to_numpy()).all()  # empty -> negative
    assert ones["label"].sum() == 18 and zeros["label"].sum() == 12
    assert set(ones["label_name"]) == {"no_pleural_effusion", "pleural_effusion"}
    assert ones["patient"].iloc[5] == "patient00002"


def test_chexpert_published_cut_is_scaled_and_overridable(tmp_path: Path) -> None:
    make_chexpert(tmp_path)
    n_train = round(30 * CHEXPERT_TRAIN_ROWS / CHEXPERT_ROWS)
    assert n_train == 18
    frame = build_index("chexpert", tmp_path)
    assert (frame["split"].to_numpy() == first_of_shuffle(30, 18, 42)).all()
    assert set(frame["split_rule"]) == {"published:first_18_of_shuffle,seed=42"}
    fixed = build_index("chexpert", tmp_path, options={"train_rows": 20})
    assert (fixed["split"] == "train").sum() == 20
    in_order = build_index("chexpert", tmp_path, options={"shuffle": False})
    assert (in_order["split"].iloc[:18] == "train").all() and (in_order["split"].iloc[18:] == "test").all()


def test_chexpert_patient_split(tmp_path: Path) -> None:
    make_chexpert(tmp_path)
    frame = build_index("chexpert", tmp_path, split="patient")
    assert _no_shared_patients(frame) and 0.5 < _train_share(frame) < 0.95


def test_chexpert_errors(tmp_path: Path) -> None:
    make_chexpert(tmp_path)
    with pytest.raises(ValueError, match=r"option uncertain='maybe' is not allowed; use one of \['ones', 'zeros'\]"):
        build_index("chexpert", tmp_path, options={"uncertain": "maybe"})
    with pytest.raises(ValueError, match=r"option train_rows=-3 is not valid; expected null or a positive integer"):
        build_index("chexpert", tmp_path, options={"train_rows": -3})
    with pytest.raises(ValueError, match=r"train_rows=30 must be between 1 and 29"):
        build_index("chexpert", tmp_path, options={"train_rows": 30})
    csv = tmp_path / "CheXpert-v1.0" / "train.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.loc[3, "Pleural Effusion"] = "2.0"
    table.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['2.0'\] in .*Pleural Effusion"):
        build_index("chexpert", tmp_path)


def test_chexpert_missing_images_are_counted(tmp_path: Path) -> None:
    table = make_chexpert(tmp_path)
    for path in table["Path"].iloc[:4]:
        (tmp_path / path).unlink()
    with pytest.raises(FileNotFoundError, match=r"4 of 30 images listed in train.csv .*patient00001/study1"):
        build_index("chexpert", tmp_path)


# ---------------------------------------------------------------------------- diabetic retinopathy


def test_dr_official_split_levels_and_patients(tmp_path: Path) -> None:
    make_dr(tmp_path)
    frame = build_index("diabetic_retinopathy", tmp_path)
    assert (frame["split"] == "train").sum() == 30 and (frame["split"] == "test").sum() == 20
    assert set(frame["split_rule"]) == {"published:official_train_test"}
    assert frame["label"].tolist()[:4] == [0, 0, 1, 1]
    assert frame["patient"].iloc[0] == "10" and frame["path"].iloc[0].endswith("train/10_left.jpeg")
    given = build_index("diabetic_retinopathy", tmp_path, split="given")
    assert (given["split"] == frame["split"]).all() and set(given["split_rule"]) == {"given"}


def test_dr_reads_kaggles_retinopathy_solution_csv(tmp_path: Path) -> None:
    make_dr(tmp_path, test_csv="retinopathy_solution.csv")
    frame = build_index("diabetic_retinopathy", tmp_path)
    test = frame[frame["split"] == "test"]
    assert len(test) == 20 and test["label"].tolist()[:4] == [0, 0, 1, 1]  # Public and Private rows
    assert test["path"].iloc[0].endswith("test/25_left.jpeg")
    # with both files present, Kaggle's is read
    pd.DataFrame({"image": ["25_left"], "level": ["9"]}).to_csv(tmp_path / "testLabels.csv", index=False)
    assert build_index("diabetic_retinopathy", tmp_path)["split"].tolist() == frame["split"].tolist()
    (tmp_path / "retinopathy_solution.csv").unlink()
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['9'\] in .*testLabels.csv"):
        build_index("diabetic_retinopathy", tmp_path)
    (tmp_path / "testLabels.csv").unlink()
    both = r"(?s)test labels as .*retinopathy_solution\.csv \(Kaggle's name\) or .*testLabels\.csv \(the published"
    with pytest.raises(FileNotFoundError, match=both + r" code's name\); neither exists.*kaggle"):
        build_index("diabetic_retinopathy", tmp_path)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", r"is empty \(0 bytes\)"),
    (b"\n\n", r"holds no CSV columns \(blank lines only\)"),
    (b"image,level\n", r"has no data rows \(only the header \['image', 'level'\]\)"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00garbage", r"cannot be parsed as CSV \(.utf-8. codec"),
    (b'image,level\n10_left,"0\n', r"cannot be parsed as CSV \(Error tokenizing"),
])
def test_dr_broken_labels_csv_names_the_file_and_the_columns(tmp_path: Path, content: bytes, problem: str) -> None:
    make_dr(tmp_path)
    (tmp_path / "trainLabels.csv").write_bytes(content)
    expected = r"; expected a CSV with a header row naming at least the columns image, level\. .*kaggle"
    with pytest.raises(ValueError, match=rf"(?s)diabetic_retinopathy: .*trainLabels\.csv {problem}[^;]*" + expected):
        build_index("diabetic_retinopathy", tmp_path)


def test_chestx_empty_csv_names_the_file(tmp_path: Path) -> None:
    make_chestx(tmp_path, n=12)
    (tmp_path / "Data_Entry_2017.csv").write_bytes(b"")
    with pytest.raises(ValueError, match=r"chestx: .*Data_Entry_2017\.csv is empty \(0 bytes\); expected .*"
                                         r"Image Index, Finding Labels, Patient ID"):
        build_index("chestx", tmp_path)


def test_dr_patient_split_keeps_both_eyes_together(tmp_path: Path) -> None:
    make_dr(tmp_path)
    frame = build_index("diabetic_retinopathy", tmp_path, split="patient", seed=1)
    assert _no_shared_patients(frame) and 0.65 < _train_share(frame) < 0.9


def test_dr_errors(tmp_path: Path) -> None:
    make_dr(tmp_path)
    csv = tmp_path / "testLabels.csv"
    table = pd.read_csv(csv, dtype=str)
    table.loc[0, "level"] = "7"
    table.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['7'\] in .*testLabels.csv \(level\)"):
        build_index("diabetic_retinopathy", tmp_path)
    table.loc[0, "level"] = "0"
    table.to_csv(csv, index=False)
    (tmp_path / "test" / "30_left.jpeg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 50 images listed in .* do not exist.*30_left.jpeg"):
        build_index("diabetic_retinopathy", tmp_path)


# ---------------------------------------------------------------------------- iChallenge


def test_amd_labels_from_folder(tmp_path: Path) -> None:
    make_amd(tmp_path)
    frame = build_index("ichallenge_amd", tmp_path)
    assert frame["label"].tolist() == [1] * 3 + [0] * 7
    assert frame["label_name"].iloc[0] == "AMD" and frame["patient"].iloc[0] == "A0001"
    assert (frame["split"] == published_split(10)).all()


def test_amd_unknown_folder_and_empty_class(tmp_path: Path) -> None:
    make_amd(tmp_path)
    (tmp_path / "Training400" / "Glaucoma").mkdir()
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['Glaucoma'\].*\['Non-AMD', 'AMD'\]"):
        build_index("ichallenge_amd", tmp_path)
    (tmp_path / "Training400" / "Glaucoma").rmdir()
    for path in (tmp_path / "Training400" / "AMD").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"class\(es\) \['AMD'\] have no images"):
        build_index("ichallenge_amd", tmp_path)


def test_pm_positive_option_both_ways(tmp_path: Path) -> None:
    make_pm(tmp_path)
    default = build_index("ichallenge_pm", tmp_path)
    assert default["label"].tolist() == [1] * 3 + [0] * 4 + [1] * 3
    assert default["label_name"].iloc[0] == "high_or_pathologic_myopia"
    pathologic = build_index("ichallenge_pm", tmp_path, options={"positive": "pathologic"})
    assert pathologic["label"].tolist() == [0] * 7 + [1] * 3
    assert pathologic["label_name"].iloc[0] == "normal_or_high_myopia"
    assert (default["split"] == pathologic["split"]).all()  # same rows, same shuffle
    with pytest.raises(ValueError, match=r"positive='P' is not allowed; use one of \['high_and_pathologic'"):
        build_index("ichallenge_pm", tmp_path, options={"positive": "P"})


def test_pm_unknown_prefix(tmp_path: Path) -> None:
    make_pm(tmp_path)
    tiny_image(tmp_path / "PALM-Training400" / "PALM-Training400" / "X0001.jpg")
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['X0001.jpg'\] in the file-name prefixes"):
        build_index("ichallenge_pm", tmp_path)


# ---------------------------------------------------------------------------- NLM TB sets


@pytest.mark.parametrize("kind", sorted(TB_SETS))
def test_tb_sets_label_from_suffix(tmp_path: Path, kind: str) -> None:
    make_tb(tmp_path, kind)
    frame = build_index(kind, tmp_path)
    assert len(frame) == 12 and frame["label"].sum() == 4
    assert frame.loc[frame["label"] == 1, "path"].str.endswith("_1.png").all()
    assert (frame["split"] == "train").sum() == 9  # floor(0.8 * 12)
    by_patient = build_index(kind, tmp_path, split="patient")
    assert by_patient.groupby("label")["split"].apply(lambda s: (s == "train").mean()).between(0.6, 0.95).all()


@pytest.mark.parametrize("kind", sorted(TB_SETS))
def test_tb_sets_bad_suffix(tmp_path: Path, kind: str) -> None:
    make_tb(tmp_path, kind)
    folder, prefix = TB_SETS[kind]
    tiny_image(tmp_path / folder / "CXR_png" / f"{prefix}_0099_2.png")
    with pytest.raises(ValueError, match=rf"unknown label value\(s\) \['{prefix}_0099_2.png'\]"):
        build_index(kind, tmp_path)


# ---------------------------------------------------------------------------- users' data


def test_imagefolder_sorted_classes_and_option_order(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    frame = build_index("imagefolder", tmp_path)
    assert len(frame) == 8 and frame["label_name"].tolist() == ["cat"] * 4 + ["dog"] * 4
    assert (frame["split"] == "train").sum() == 6
    ordered = build_index("imagefolder", tmp_path, options={"classes": ["dog", "cat"]})
    assert ordered.loc[ordered["label"] == 0, "label_name"].unique().tolist() == ["dog"]


def test_imagefolder_errors(tmp_path: Path) -> None:
    make_imagefolder(tmp_path)
    with pytest.raises(ValueError, match=r"unknown label value\(s\) \['dog'\].*\['cat'\]"):
        build_index("imagefolder", tmp_path, options={"classes": ["cat"]})
    with pytest.raises(ValueError, match=r"class\(es\) \['bird'\] have no images"):
        build_index("imagefolder", tmp_path, options={"classes": ["cat", "dog", "bird"]})
    with pytest.raises(ValueError, match=r"split 'patient' needs patient ids and imagefolder has none"):
        build_index("imagefolder", tmp_path, split="patient")
    with pytest.raises(ValueError, match=r"split 'given' needs data that carries its own"):
        build_index("imagefolder", tmp_path, split="given")
    with pytest.raises(FileNotFoundError, match=r"expected class folder .*<class_name>"):
        build_index("imagefolder", tmp_path / "cat")
    with pytest.raises(ValueError, match=r"option classes='cat' is not valid; expected null or a list"):
        build_index("imagefolder", tmp_path, options={"classes": "cat"})


def test_csv_uses_its_split_or_the_80_20_rule(tmp_path: Path) -> None:
    csv = make_user_csv(tmp_path)
    frame = build_index("csv", None, csv=csv)
    assert set(frame["split_rule"]) == {"given"} and (frame["split"] == "train").sum() == 6
    assert frame["path"].iloc[0] == str(tmp_path / "img" / "0.png")
    by_patient = build_index("csv", tmp_path, csv=csv, split="patient")
    assert _no_shared_patients(by_patient)
    csv = make_user_csv(tmp_path, split=False)
    frame = build_index("csv", None, csv=csv)
    assert set(frame["split_rule"]) == {"published:80/20,seed=42"} and (frame["split"] == "train").sum() == 8


def test_csv_errors(tmp_path: Path) -> None:
    csv = make_user_csv(tmp_path)
    with pytest.raises(ValueError, match=r"csv: no CSV given; pass csv="):
        build_index("csv", tmp_path)
    (tmp_path / "img" / "3.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 10 images listed in .*data.csv do not exist.*3.png"):
        build_index("csv", None, csv=csv)
    with pytest.raises(FileNotFoundError, match=r"dataset CSV .*nope.csv not found"):
        build_index("csv", None, csv=tmp_path / "nope.csv")


@pytest.mark.parametrize("split", ["given", "published"])
def test_demo_kind_keeps_its_class_order_and_split(tmp_path: Path, split: str) -> None:
    labels = generate("demo_cxr", tmp_path, n_images=12, size=32, seed=0)
    frame = build_index("demo_cxr", str(tmp_path), csv=tmp_path / "labels.csv", split=split)
    assert dict(zip(frame["label_name"], frame["label"])) == {"no_effusion": 0, "effusion": 1}
    assert (frame["split"] == labels["split"]).all() and set(frame["split_rule"]) == {"given"}


# ---------------------------------------------------------------------------- common behaviour


def test_registry_and_describe() -> None:
    assert DATASET_KINDS == tuple(ADAPTERS) and len(DATASET_KINDS) == 14
    for kind in DATASET_KINDS:
        text = describe(kind)
        assert text.startswith(f"{kind}: ") and "expected layout" in text and "download:" in text
    assert "0 Atelectasis, 1 Cardiomegaly" in describe("chestx")
    assert ADAPTERS["ichallenge_pm"].class_names({"positive": "pathologic"})[1] == "pathologic_myopia"


PUBLISHED_KINDS = [k for k in DATASET_KINDS if k != "imagefolder" and not ADAPTERS[k].from_csv]

# Fake downloads of the kinds whose index may carry views (stoic, cifar10: test_data_stoic_cifar.py).
FAKES = {"bach": make_bach, "chestx": make_chestx, "chexpert": make_chexpert, "diabetic_retinopathy": make_dr,
         "ichallenge_amd": make_amd, "ichallenge_pm": make_pm, "imagefolder": make_imagefolder,
         **{kind: lambda root, kind=kind: make_tb(root, kind) for kind in TB_SETS}}


@pytest.mark.parametrize("kind", sorted(FAKES))
def test_multiview_kinds_are_those_whose_index_carries_views(tmp_path: Path, kind: str) -> None:
    FAKES[kind](tmp_path)
    frame = build_index(kind, tmp_path)
    has_views = {"view_group", "view"} <= set(frame.columns) and frame["view_group"].notna().any()
    assert ADAPTERS[kind].multiview == has_views
    assert (kind in MULTIVIEW_KINDS) == has_views


def test_every_published_kind_has_a_documented_size_and_users_kinds_none() -> None:
    assert all(ADAPTERS[k].typical_images > 0 for k in PUBLISHED_KINDS)
    assert all(ADAPTERS[k].typical_images == 0 for k in DATASET_KINDS if k not in PUBLISHED_KINDS)
    assert set(TYPICAL_IMAGES) == set(PUBLISHED_KINDS)  # what the cluster requests and the cost plan read


@pytest.mark.parametrize("kind", sorted(DEMO_KINDS))
def test_demo_kinds_colour_matches_the_generated_images(tmp_path: Path, kind: str) -> None:
    labels = generate(kind, tmp_path, n_images=4, size=16, seed=0)
    with Image.open(tmp_path / labels["path"][0]) as img:
        assert ADAPTERS[kind].colour == (img.mode == "RGB"), img.mode


@pytest.mark.parametrize("kind", PUBLISHED_KINDS)
def test_wrong_layout_names_the_path_and_the_source(tmp_path: Path, kind: str) -> None:
    source = re.escape(ADAPTERS[kind].source.split()[0])
    with pytest.raises(FileNotFoundError, match=rf"(?s){kind}: expected (file|folder) {tmp_path}.*download: {source}"):
        build_index(kind, tmp_path)


def test_missing_root_unknown_kind_split_and_option(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)dataset root .*nowhere does not exist.*zenodo"):
        build_index("bach", tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"bach: no dataset root given"):
        build_index("bach", None)
    with pytest.raises(ValueError, match=r"unknown dataset kind 'chestxray'; use one of \['bach', 'chestx'"):
        build_index("chestxray", tmp_path)
    with pytest.raises(ValueError, match=r"unknown dataset kind"):
        describe("nope")
    with pytest.raises(ValueError, match=r"unknown split 'official'; use one of \['given', 'published'"):
        build_index("bach", tmp_path, split="official")
    with pytest.raises(ValueError, match=r"bach: unknown option\(s\) \['uncertain'\]; bach takes no options"):
        build_index("bach", tmp_path, options={"uncertain": "ones"})
    with pytest.raises(ValueError, match=r"chexpert: unknown option\(s\) \['positive'\]; chexpert takes shuffle"):
        build_index("chexpert", tmp_path, options={"positive": "pathologic"})


def test_same_seed_same_index_and_atomic_write(tmp_path: Path) -> None:
    make_dr(tmp_path)
    a = build_index("diabetic_retinopathy", tmp_path, split="random", seed=9)
    b = build_index("diabetic_retinopathy", tmp_path, split="random", seed=9)
    pd.testing.assert_frame_equal(a, b)
    c = build_index("diabetic_retinopathy", tmp_path, split="random", seed=10)
    assert (a["split"] != c["split"]).any()
    out = tmp_path / "out" / "index.csv"
    index_dataset(out, kind="diabetic_retinopathy", root=tmp_path, split="random", seed=9)
    back = read_index(out)
    assert back["split"].tolist() == a["split"].tolist() and back["patient"].iloc[0] == "10"
    assert not list(out.parent.glob(".*partial*"))
