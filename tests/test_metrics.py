import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from medtransfer.metrics import (
    bootstrap_metrics,
    episode_ci,
    metric_from_counts,
    resample_counts,
)
from medtransfer.results import metric_rows


def _probs(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


def _point(metric, probs, labels):
    return float(metric_from_counts(metric, probs, labels, np.ones((1, len(labels)), np.int64))[0])


@pytest.mark.parametrize("c", [2, 4])
def test_point_values_match_sklearn(c):
    probs, labels = _probs(300, c)
    pred = probs.argmax(1)
    assert _point("accuracy", probs, labels) == pytest.approx(accuracy_score(labels, pred))
    assert _point("balanced_accuracy", probs, labels) == pytest.approx(balanced_accuracy_score(labels, pred))
    expected = (roc_auc_score(labels, probs[:, 1]) if c == 2
                else roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    assert _point("auroc", probs, labels) == pytest.approx(expected)


def test_auroc_counts_ties_as_half():
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.8, 0.2], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])
    assert _point("auroc", probs, labels) == pytest.approx(roc_auc_score(labels, probs[:, 1]))


def test_counts_equal_explicit_resampling():
    """A count row gives the same metric as materialising that resample."""
    probs, labels = _probs(120, 3, seed=1)
    counts = next(resample_counts(len(labels), 3, seed=5))
    for row in counts:
        idx = np.repeat(np.arange(len(labels)), row)
        got = metric_from_counts("auroc", probs, labels, row[None])[0]
        want = roc_auc_score(labels[idx], probs[idx], multi_class="ovr", labels=[0, 1, 2])
        assert got == pytest.approx(want)
        got = metric_from_counts("balanced_accuracy", probs, labels, row[None])[0]
        assert got == pytest.approx(balanced_accuracy_score(labels[idx], probs[idx].argmax(1)))


def test_bootstrap_is_seeded_and_brackets_the_value():
    probs, labels = _probs(200, 3)
    a = bootstrap_metrics(probs, labels, n_bootstrap=300, seed=3)
    b = bootstrap_metrics(probs, labels, n_bootstrap=300, seed=3)
    c = bootstrap_metrics(probs, labels, n_bootstrap=300, seed=4)
    assert a == b
    assert a["accuracy"].ci_low != c["accuracy"].ci_low
    for v in a.values():
        assert v.ci_low <= v.value <= v.ci_high and v.n == 200 and v.note == ""
    # the 95% interval of a proportion from 200 samples is roughly +-0.07
    assert 0.08 < a["accuracy"].ci_high - a["accuracy"].ci_low < 0.2


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_absent_class_gives_nan_auroc_with_reason():
    probs, labels = _probs(60, 3)
    labels = np.where(labels == 2, 0, labels)
    out = bootstrap_metrics(probs, labels, n_bootstrap=50, class_names=["a", "b", "tumour"])
    assert math.isnan(out["auroc"].value) and math.isnan(out["auroc"].ci_low)
    assert "tumour" in out["auroc"].note and "absent" in out["auroc"].note
    assert out["balanced_accuracy"].value == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))
    assert "present classes" in out["balanced_accuracy"].note


def test_zero_resamples_give_values_without_intervals():
    probs, labels = _probs(30, 3)
    out = bootstrap_metrics(probs, labels, n_bootstrap=0)
    assert out["accuracy"].value == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert all(math.isnan(v.ci_low) and math.isnan(v.ci_high) for v in out.values())


def test_non_finite_probabilities_give_nan_with_reason():
    probs, labels = _probs(20, 2)
    probs[3] = np.nan
    out = bootstrap_metrics(probs, labels, n_bootstrap=10)
    assert all(math.isnan(v.value) and "non-finite" in v.note for v in out.values())


def test_episode_ci_known_answer():
    acc = np.array([0.5, 1.0, 0.75, 0.75])
    v = episode_ci(acc)
    half = 1.96 * np.std(acc) / 2.0
    assert (v.value, v.ci_low, v.ci_high, v.n) == pytest.approx((0.75, 0.75 - half, 0.75 + half, 4))


def test_metric_rows_carry_meta_and_notes():
    probs, labels = _probs(50, 2)
    values = bootstrap_metrics(probs, labels, n_bootstrap=20)
    meta = {"model": "m", "dataset": "d", "weights_sha256": "abc", "precision": "fp32"}
    rows = metric_rows(values, meta=meta, protocol="linear", setting="manyshot", seed=0, details={"C": 1})
    assert [r["metric"] for r in rows] == ["accuracy", "balanced_accuracy", "auroc"]
    assert all(r["weights_sha256"] == "abc" and r["details"] == '{"C": 1}' and r["n"] == 50 for r in rows)


def test_errors_name_the_bad_value():
    probs, labels = _probs(10, 2)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        metric_from_counts("f1", probs, labels, np.ones((1, 10), np.int64))
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.1"):
        bootstrap_metrics(probs, labels + 1)
    with pytest.raises(ValueError, match="n_bootstrap must be >= 0"):
        bootstrap_metrics(probs, labels, n_bootstrap=-1)
    with pytest.raises(ValueError, match="expected probs"):
        bootstrap_metrics(probs[:5], labels)
