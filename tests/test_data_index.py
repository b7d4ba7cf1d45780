"""Split rules of the index: the published shuffle reproduced exactly, patient grouping."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medtransfer.data.index import (
    first_of_shuffle,
    index_from_csv,
    patient_split,
    published_split,
    read_index,
    write_index,
)


@pytest.mark.parametrize("n", [5, 10, 138, 400, 662])
def test_published_split_matches_the_published_pandas_code(n: int) -> None:
    # What github.com/jonahanton/SSL_medicalimaging datasets/custom_*_dataset.py do.
    table = pd.DataFrame({"row": range(n)}).sample(frac=1, random_state=42).reset_index(drop=True)
    cut = int(math.floor(0.8 * n))
    expected = np.full(n, "test", dtype=object)
    expected[table["row"].iloc[:cut].to_numpy()] = "train"
    assert (published_split(n) == expected).all()


def test_published_split_floors_the_train_count() -> None:
    # Shenzhen: 662 images -> 529 train (round would give 530).
    assert (published_split(662) == "train").sum() == 529
    assert (published_split(138) == "train").sum() == 110


def test_first_of_shuffle_rejects_a_bad_count() -> None:
    assert (first_of_shuffle(10, 3) == "train").sum() == 3
    with pytest.raises(ValueError, match="cannot put 11 of 10 rows in train"):
        first_of_shuffle(10, 11)


def _patients(n_patients: int = 400, seed: int = 0) -> tuple[pd.Series, pd.Series]:
    rng = np.random.RandomState(seed)
    per = rng.randint(1, 4, size=n_patients)
    patients = pd.Series(np.repeat([f"p{i:04d}" for i in range(n_patients)], per))
    labels = pd.Series(np.repeat(rng.randint(0, 3, size=n_patients), per))
    return patients, labels


def test_patient_split_groups_and_stratifies() -> None:
    patients, labels = _patients()
    split = pd.Series(patient_split(patients, labels, seed=7))
    per_patient = split.groupby(patients).nunique()
    assert (per_patient == 1).all()  # no patient in both splits
    share = (split == "train").groupby(labels).mean()
    assert ((share > 0.75) & (share < 0.85)).all(), share


def test_patient_split_is_deterministic_and_seeded() -> None:
    patients, labels = _patients()
    a, b = patient_split(patients, labels, seed=1), patient_split(patients, labels, seed=1)
    assert (a == b).all()
    assert (a != patient_split(patients, labels, seed=2)).any()


def test_patient_split_needs_every_patient_id() -> None:
    with pytest.raises(ValueError, match="needs a patient id for every image"):
        patient_split(pd.Series(["a", ""]), pd.Series([0, 1]))


def test_index_from_csv_still_round_trips(tmp_path) -> None:
    csv = tmp_path / "data.csv"
    pd.DataFrame({"path": [f"img{i}.png" for i in range(10)], "label": ["b", "a"] * 5}).to_csv(csv, index=False)
    frame = index_from_csv(csv)
    assert frame["split_rule"].iloc[0] == "published:80/20,seed=42"
    assert (frame["split"] == "train").sum() == 8
    assert list(frame.loc[frame["label"] == 0, "label_name"].unique()) == ["a"]
    write_index(frame, tmp_path / "index.csv")
    pd.testing.assert_frame_equal(read_index(tmp_path / "index.csv"), frame, check_dtype=False)


@pytest.mark.parametrize(("content", "problem"), [
    (b"", r"is empty \(0 bytes\)"),
    (b"path,label\n", r"has no data rows"),
    (b"path,label\n\"a.png,0\n", r"cannot be parsed as CSV"),
])
def test_broken_user_csv_and_index_name_the_file(tmp_path, content: bytes, problem: str) -> None:
    (tmp_path / "data.csv").write_bytes(content)
    expected = r"; expected a CSV with columns path,label\[,split,patient\]\..*fix or rewrite"
    with pytest.raises(ValueError, match=rf"data\.csv {problem}[^;]*" + expected):
        index_from_csv(tmp_path / "data.csv")
    (tmp_path / "index.csv").write_bytes(content)
    expected = r"; expected a CSV with columns path,label,.*re-run the index rule"
    with pytest.raises(ValueError, match=rf"index\.csv {problem}[^;]*" + expected):
        read_index(tmp_path / "index.csv")
