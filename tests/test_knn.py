"""The weighted kNN probe: a hand-computed example, an independent loop, rows and predictions."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from medtransfer.features import FeatureSet, save_features
from medtransfer.protocols.knn import evaluate_knn, knn_probs
from medtransfer.results import Predictions, details, read_rows

META = {"model": "m", "dataset": "d", "weights_sha256": "ab" * 32, "weights_demo": True, "split": "given",
        "precision": "fp32", "preprocessing": "p"}


def _loop(train, labels, test, n_classes, k, temperature):
    """One test image at a time, plain numpy: the definition."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = []
    for q in test:
        sims = train @ (q / np.linalg.norm(q))
        nearest = np.argsort(-sims, kind="stable")[:k]
        votes = np.zeros(n_classes)
        for i in nearest:
            votes[labels[i]] += math.exp(sims[i] / temperature)
        out.append(votes / votes.sum())
    return np.array(out)


def test_hand_computed_vote():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    probs = knn_probs(train, labels, torch.tensor([[2.0, 0.0]]), n_classes=2, k=2, temperature=0.5)
    # neighbours: [1,0] (cos 1) and [1,1] (cos 1/sqrt2); weights e^2 and e^(sqrt2)
    w0, w1 = math.exp(1 / 0.5), math.exp((1 / math.sqrt(2)) / 0.5)
    assert probs[0].tolist() == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)], rel=1e-6)


@pytest.mark.parametrize("k, temperature", [(1, 0.07), (5, 0.07), (20, 1.0), (500, 0.1)])
def test_equals_the_per_image_loop(k, temperature):
    rng = np.random.default_rng(k)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(15, 8))
    labels = rng.integers(0, 3, 60)
    probs = knn_probs(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(test),
                      n_classes=3, k=k, temperature=temperature)
    np.testing.assert_allclose(probs.numpy(), _loop(train, labels, test, 3, min(k, 60), temperature),
                               rtol=1e-5, atol=1e-6)


def _full_sort(train, labels, test, *, n_classes, k, temperature):
    """The earlier implementation: every similarity row sorted whole (stable), the first k kept."""
    train = torch.nn.functional.normalize(train.float(), dim=1)
    out = []
    for start in range(0, len(test), 1024):
        query = torch.nn.functional.normalize(test[start:start + 1024].float(), dim=1)
        sims, order = (query @ train.T).sort(dim=1, descending=True, stable=True)
        weights = (sims[:, :k] / temperature).exp()
        votes = torch.zeros(len(query), n_classes, dtype=weights.dtype)
        votes.scatter_add_(1, labels[order[:, :k]], weights)
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)


@pytest.mark.slow  # a scale test: about a minute on 2 cores
def test_top_k_selection_equals_the_full_sort_exactly_on_20000_by_20000(monkeypatch):
    """Pooled-feature-like data with exact ties: duplicated training images, test images that
    are training images, and a corner of coarse grid features whose ties straddle the k-th place."""
    import medtransfer.protocols.knn as knn

    monkeypatch.setattr(knn, "_BLOCK_VALUES", 20_000 * 700)  # test chunks of 700 rows: the last one short
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20_000, 32)).astype(np.float32)
    train[::10] = train[1::10]  # 2,000 duplicated images
    test = rng.normal(size=(20_000, 32)).astype(np.float32)
    test[:1000] = train[rng.choice(20_000, 1000)]
    train[-500:], test[-500:] = (rng.integers(0, 3, size=(500, 32)).astype(np.float32) for _ in range(2))
    train, test, labels = torch.from_numpy(train), torch.from_numpy(test), torch.from_numpy(rng.integers(0, 4, 20_000))
    ours = knn_probs(train, labels, test, n_classes=4, k=20, temperature=0.07)
    assert torch.equal(ours, _full_sort(train, labels, test, n_classes=4, k=20, temperature=0.07))
    grid = rng.integers(0, 3, size=(50, 6)).astype(np.float32)  # ties across the cut in every row
    sims = torch.from_numpy(grid) @ torch.from_numpy(rng.integers(0, 3, size=(6, 2000)).astype(np.float32))
    values, columns = knn.nearest(sims, 20)
    full_values, full_columns = sims.sort(dim=1, descending=True, stable=True)
    assert torch.equal(values, full_values[:, :20]) and torch.equal(columns, full_columns[:, :20])


def test_bad_settings_are_named():
    x = torch.ones(2, 2)
    with pytest.raises(ValueError, match="k >= 1 and temperature > 0, got k=0"):
        knn_probs(x, torch.zeros(2, dtype=torch.long), x, n_classes=2, k=0, temperature=0.1)
    with pytest.raises(ValueError, match="temperature=-1"):
        knn_probs(x, torch.zeros(2, dtype=torch.long), x, n_classes=2, k=1, temperature=-1)


def test_rows_and_predictions(tmp_path):
    x, y = make_classification(n_samples=300, n_features=16, n_informative=6, n_classes=3, random_state=1)
    split = np.array(["train"] * 200 + ["test"] * 100)
    features = tmp_path / "f.npz"
    save_features(features, FeatureSet(x.astype(np.float32), y, split, {**META, "classes": ["a", "b", "c"]}))
    rows, preds = tmp_path / "r.csv", tmp_path / "p.npz"
    evaluate_knn(features=features, rows=rows, predictions=preds, k=7, temperature=0.1, device="cpu",
                 n_bootstrap=50)
    frame = read_rows([rows]).set_index("metric")
    assert list(frame.index) == ["accuracy", "balanced_accuracy", "auroc"]
    assert (frame["protocol"] == "knn").all() and (frame["setting"] == "manyshot").all()
    assert frame.loc["accuracy", "value"] > 0.6 and frame.loc["accuracy", "n"] == 100
    assert details(frame.iloc[0])["k"] == 7 and details(frame.iloc[0])["temperature"] == 0.1
    pred = Predictions.load(preds)
    assert (pred.model, pred.protocol, pred.pairing) == ("m", "knn", "images")
    assert list(pred["positions"]) == list(range(200, 300))
    expected = _loop(x[:200], y[:200], x[200:], 3, 7, 0.1)
    np.testing.assert_allclose(pred["probs"], expected, rtol=1e-4, atol=1e-6)
    again = tmp_path / "again.csv"
    evaluate_knn(features=features, rows=again, predictions=tmp_path / "q.npz", k=7, temperature=0.1,
                 device="cpu", n_bootstrap=50)
    assert again.read_bytes() == rows.read_bytes()
