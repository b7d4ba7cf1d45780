import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from medtransfer.data.index import stratified_split
from medtransfer.features import FeatureSet, save_features
from medtransfer.protocols.linear import (
    LogisticObjective,
    c_grid,
    evaluate_linear,
    fit_path,
    linear_probe,
    select_c,
    standardiser,
)
from medtransfer.results import details, read_rows

META = {"model": "toy", "dataset": "blobs", "weights_sha256": "f00d", "split": "given",
        "precision": "fp32", "preprocessing": "none", "seed": 0}


def _feature_file(tmp_path, x, y, n_test, classes=None):
    split = np.array(["train"] * (len(y) - n_test) + ["test"] * n_test)
    meta = {**META, "classes": classes or [f"c{i}" for i in range(int(y.max()) + 1)]}
    path = tmp_path / "features.npz"
    save_features(path, FeatureSet(x.astype(np.float32), y.astype(np.int64), split, meta))
    return path


def _run(tmp_path, path, name="a", **kw):
    rows, preds = tmp_path / f"{name}.csv", tmp_path / f"{name}.npz"
    evaluate_linear(features=path, rows=rows, predictions=preds, device="cpu", n_bootstrap=50, **kw)
    return rows, preds


@pytest.mark.parametrize("c", [0.01, 1.0, 100.0])
def test_matches_sklearn_at_the_same_c(c):
    x, y = make_classification(n_samples=700, n_features=40, n_informative=12, n_classes=4, random_state=0)
    mean, std = standardiser(x[:500])
    xs = ((x - mean) / std).astype(np.float32)
    ref = LogisticRegression(C=c, solver="lbfgs", tol=1e-8, max_iter=10_000).fit(xs[:500], y[:500])
    obj = LogisticObjective(torch.from_numpy(xs[:500]), torch.from_numpy(y[:500]), 4)
    fit = fit_path(obj, np.array([c]), strategy="batched", max_iter=2000, tol=1e-6)
    assert fit.solver.status == ["converged"]
    ours = obj.logits(torch.from_numpy(xs[500:]), fit.solver.theta)[:, 0].argmax(1).numpy()
    assert abs((ours == y[500:]).mean() - ref.score(xs[500:], y[500:])) <= 0.005
    w = fit.solver.theta[0, :160].view(4, 40).numpy()
    assert np.abs(w - ref.coef_).max() < 1e-2 * max(1.0, np.abs(ref.coef_).max())


def test_strategies_solve_the_same_problems():
    x, y = make_classification(n_samples=300, n_features=20, n_classes=3, n_informative=6, random_state=1)
    obj = LogisticObjective(torch.tensor(x, dtype=torch.float32), torch.from_numpy(y), 3)
    cs = c_grid([1e-3, 1e-2, 0.1, 1.0, 10.0])
    a = fit_path(obj, cs, strategy="sequential", max_iter=1000, tol=1e-5)
    b = fit_path(obj, cs, strategy="batched", max_iter=1000, tol=1e-5)
    assert a.solver.converged.all() and b.solver.converged.all()
    torch.testing.assert_close(a.solver.theta, b.solver.theta, atol=2e-3, rtol=2e-3)


def test_separable_features_give_high_accuracy(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 16)) + 4.0 * np.eye(3, 16)[y]
    rows, preds = _run(tmp_path, _feature_file(tmp_path, x, y, n_test=100), grid_points=12)
    frame = read_rows([rows]).set_index("metric")
    assert frame.loc["accuracy", "value"] > 0.95 and frame.loc["auroc", "value"] > 0.99
    assert (frame["protocol"] == "linear").all() and (frame["setting"] == "manyshot").all()
    assert (frame["n"] == 100).all() and (frame["weights_sha256"] == "f00d").all()
    with np.load(preds) as p:
        assert p["probs"].shape == (100, 3) and list(p["classes"]) == ["c0", "c1", "c2"]
        np.testing.assert_array_equal(p["positions"], np.arange(200, 300))
        np.testing.assert_allclose(p["probs"].sum(1), 1.0, atol=1e-5)


def test_shuffled_labels_give_chance(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 800)
    x = rng.normal(size=(800, 16)) + 4.0 * np.eye(2, 16)[y]
    y = rng.permutation(y)  # the features still carry structure, but not about these labels
    rows, _ = _run(tmp_path, _feature_file(tmp_path, x, y, n_test=300), grid_points=12)
    frame = read_rows([rows]).set_index("metric")
    assert 0.4 < frame.loc["accuracy", "value"] < 0.6
    assert 0.4 < frame.loc["auroc", "value"] < 0.6


def test_same_seed_same_bytes_and_grid_order_does_not_matter(tmp_path):
    x, y = make_classification(n_samples=300, n_features=12, n_classes=3, n_informative=5, random_state=2)
    path = _feature_file(tmp_path, x, y, n_test=100)
    grid = list(c_grid(None, 10))
    a, pa = _run(tmp_path, path, "a", c_values=grid)
    b, _ = _run(tmp_path, path, "b", c_values=grid)
    r, pr = _run(tmp_path, path, "r", c_values=grid[::-1])
    assert a.read_bytes() == b.read_bytes() == r.read_bytes()
    with np.load(pa) as p, np.load(pr) as q:
        assert float(p["selected_c"]) == float(q["selected_c"])
        np.testing.assert_array_equal(p["probs"], q["probs"])


def test_refit_starts_cold_and_selection_is_recorded(tmp_path):
    x, y = make_classification(n_samples=300, n_features=12, n_classes=2, random_state=3)
    rows, preds = _run(tmp_path, _feature_file(tmp_path, x, y, n_test=100), grid_points=9)
    info = details(read_rows([rows]).iloc[0])
    assert info["converged"] is True and info["sweep_unconverged"] == 0 and info["grid_points"] == 9
    assert info["iters"] > 0 and 0 <= info["val_score"] <= 1
    with np.load(preds) as p:
        c = float(p["selected_c"])
        assert info["C"] == c
        # the selected C has the best val score, and no better one has a smaller C
        best = p["sweep_val_score"].max()
        assert p["sweep_val_score"][list(p["sweep_c"]).index(c)] == best
        assert c == p["sweep_c"][p["sweep_val_score"] == best].min()


def test_non_convergence_is_recorded_and_logged(tmp_path, caplog):
    x, y = make_classification(n_samples=300, n_features=12, n_classes=3, n_informative=5, random_state=4)
    with caplog.at_level(logging.WARNING, logger="medtransfer.protocols.linear"):
        rows, _ = _run(tmp_path, _feature_file(tmp_path, x, y, n_test=100), c_values=[1.0, 10.0], max_iter=2)
    info = details(read_rows([rows]).iloc[0])
    assert info["converged"] is False and info["stop"] == "max_iter" and info["sweep_unconverged"] == 2
    assert "did not converge" in caplog.text


def test_ties_go_to_the_smaller_c():
    cs = np.array([10.0, 0.1, 1.0])
    assert select_c(cs, np.array([5, 5, 5])) == 1
    assert select_c(cs, np.array([7, 5, 7])) == 2


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="positive finite"):
        c_grid([1.0, -2.0])
    with pytest.raises(ValueError, match=r"classes \{2: 1\}"):
        stratified_split(np.array([0, 0, 1, 1, 2]), 0.2, 0)
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(np.array([0, 0, 1, 1]), 1.5, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_joint_sweep_agrees_with_cpu():
    x, y = make_classification(n_samples=600, n_features=32, n_classes=4, n_informative=8, random_state=5)
    x = x.astype(np.float32)
    kw = dict(n_classes=4, c_values=c_grid(None, 15), seed=0)
    cpu = linear_probe(x[:400], y[:400], x[400:], device="cpu", **kw)
    gpu = linear_probe(x[:400], y[:400], x[400:], device="cuda", **kw)
    assert gpu.strategy == "batched" and gpu.c == cpu.c
    assert abs((gpu.test_probs.argmax(1) == y[400:]).mean() - (cpu.test_probs.argmax(1) == y[400:]).mean()) <= 0.005


def test_sequential_warm_path_does_not_depend_on_grid_order():
    x, y = make_classification(n_samples=300, n_features=12, n_classes=3, n_informative=5, random_state=6)
    x = x.astype(np.float32)
    grid = list(c_grid([1e-3, 1e-2, 0.1, 1.0]))
    kw = dict(n_classes=3, seed=0, device="cpu", strategy="sequential")
    a = linear_probe(x[:200], y[:200], x[200:], c_values=grid, **kw)
    b = linear_probe(x[:200], y[:200], x[200:], c_values=grid[::-1], **kw)
    assert a.c == b.c and a.strategy == "sequential"
    np.testing.assert_array_equal(a.test_probs, b.test_probs)


def test_standardising_in_place_changes_nothing_but_the_inputs(monkeypatch):
    """copy=False (what the stage uses, to hold CheXpert's features once) gives the same probe;
    the default leaves the caller's arrays alone; the chunked standardiser equals numpy's."""
    import medtransfer.protocols.linear as linear

    monkeypatch.setattr(linear, "_ROWS", 64)  # 400 rows: several chunks, the last one short
    x, y = make_classification(n_samples=500, n_features=20, n_informative=6, n_classes=3, random_state=0)
    x = (x + 10.0).astype(np.float32)
    x_tr, x_te, y_tr = x[:400].copy(), x[400:].copy(), y[:400]
    mean, std = linear.standardiser(x_tr)
    np.testing.assert_allclose(mean, x_tr.mean(0, dtype=np.float64), rtol=1e-6)
    np.testing.assert_allclose(std, x_tr.std(0, dtype=np.float64), rtol=1e-5)
    cs = linear.c_grid(grid_points=5)
    kept = linear.linear_probe(x_tr, y_tr, x_te, n_classes=3, c_values=cs)
    np.testing.assert_array_equal(x_tr, x[:400])
    np.testing.assert_array_equal(x_te, x[400:])
    in_place = linear.linear_probe(x_tr, y_tr, x_te, n_classes=3, c_values=cs, copy=False)
    assert in_place.c == kept.c and np.array_equal(in_place.test_probs, kept.test_probs)
    assert not np.array_equal(x_tr, x[:400])  # standardised where it lay
