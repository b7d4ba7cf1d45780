import math

import numpy as np
import pytest

from medtransfer.reporting.compare import compare_models, holm
from medtransfer.results import Predictions, details, make_row, read_rows, write_rows

N = 200


def _rows(tmp_path, model, protocol="linear", setting="manyshot", dataset="ds"):
    meta = {"weights_sha256": f"sha-{model}", "split": "given", "precision": "fp32", "preprocessing": "p"}
    path = tmp_path / f"{model}-{protocol}.csv"
    write_rows([make_row(model=model, dataset=dataset, protocol=protocol, setting=setting, metric="accuracy",
                         value=0.5, n=N, seed=0, meta=meta)], path)
    return path


def _many_shot(tmp_path, model, correct, labels=None, positions=None, protocol="linear"):
    """Predictions where exactly the images in ``correct`` are classified right."""
    labels = np.arange(N) % 2 if labels is None else labels
    pred = np.where(correct, labels, 1 - labels)
    probs = np.stack([np.where(pred == 0, 0.8, 0.2), np.where(pred == 1, 0.8, 0.2)], axis=1)
    path = tmp_path / f"{model}-{protocol}.npz"
    Predictions(model=model, dataset="ds", protocol=protocol, setting="manyshot", pairing="images", arrays=dict(
        probs=probs, labels=labels, positions=np.arange(N) if positions is None else positions,
        classes=np.array(["a", "b"]))).save(path)
    return path


def _episodes(tmp_path, model, acc, digest="same"):
    path = tmp_path / f"{model}-fs.npz"
    Predictions(model=model, dataset="ds", protocol="fewshot", setting="20shot", pairing="episodes",
                arrays={"episode_acc": acc, "episodes_sha256": digest}).save(path)
    return path


def _compare(tmp_path, preds, protocol="linear", name="cmp", **kw):
    setting = kw.pop("setting", "manyshot")
    rows = [_rows(tmp_path, m, protocol, setting) for m in preds]
    out = tmp_path / f"{name}.csv"
    # any order: the files name their models
    compare_models(predictions=list(preds.values())[::-1], rows=rows, out=out, protocol=protocol, dataset="ds",
                   n_bootstrap=kw.pop("n_bootstrap", 400), **kw)
    return out, read_rows([out]).set_index("model")


def _detail(frame, model, key):
    return details(frame.loc[model, "details"])[key]


def test_clearly_worse_model_differs_and_best_gets_zero(tmp_path):
    rng = np.random.default_rng(0)
    preds = {"good": _many_shot(tmp_path, "good", rng.random(N) < 0.9),
             "poor": _many_shot(tmp_path, "poor", rng.random(N) < 0.6)}
    out, frame = _compare(tmp_path, preds)
    assert (frame["metric"] == "accuracy_diff_vs_best").all() and (frame["setting"] == "manyshot").all()
    assert frame.loc["good", ["value", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    assert _detail(frame, "good", "best") == "good" and _detail(frame, "good", "differs") is False
    assert frame.loc["poor", "value"] < -0.2 and frame.loc["poor", "ci_high"] < 0
    assert _detail(frame, "poor", "differs") is True and _detail(frame, "poor", "p") < 0.01
    assert _detail(frame, "poor", "p_holm") == _detail(frame, "poor", "p")  # a family of one
    assert frame.loc["poor", "weights_sha256"] == "sha-poor" and frame.loc["poor", "n"] == N
    again, _ = _compare(tmp_path, preds, name="again")
    assert out.read_bytes() == again.read_bytes()


def test_bootstrap_is_paired(tmp_path):
    """Two models that differ on one image: a paired CI is tiny, an unpaired one would be ~+-0.1."""
    correct = np.random.default_rng(1).random(N) < 0.7
    flipped = correct.copy()
    flipped[np.flatnonzero(correct)[0]] = False
    preds = {"a": _many_shot(tmp_path, "a", correct), "b": _many_shot(tmp_path, "b", flipped)}
    _, frame = _compare(tmp_path, preds)
    assert frame.loc["b", "value"] == pytest.approx(-1 / N)
    assert frame.loc["b", "ci_low"] >= -0.02 and frame.loc["b", "ci_high"] <= 0.0
    assert _detail(frame, "b", "differs") is False


def test_zero_resamples_give_values_without_intervals(tmp_path):
    rng = np.random.default_rng(5)
    preds = {"a": _many_shot(tmp_path, "a", rng.random(N) < 0.9), "b": _many_shot(tmp_path, "b", rng.random(N) < 0.5)}
    _, frame = _compare(tmp_path, preds, n_bootstrap=0)
    assert frame.loc["b", "value"] < 0 and frame["ci_low"].isna().all()
    assert math.isnan(_detail(frame, "b", "p")) and _detail(frame, "b", "differs") is False


def test_other_metrics_are_paired_too(tmp_path):
    rng = np.random.default_rng(2)
    preds = {"a": _many_shot(tmp_path, "a", rng.random(N) < 0.8), "b": _many_shot(tmp_path, "b", rng.random(N) < 0.8)}
    _, frame = _compare(tmp_path, preds, metric="auroc")
    assert (frame["metric"] == "auroc_diff_vs_best").all() and (frame["value"] <= 0).all()


def test_few_shot_pairs_episodes(tmp_path):
    rng = np.random.default_rng(3)
    acc_a = rng.uniform(0.6, 0.9, 100)
    acc_b = acc_a - rng.uniform(0.0, 0.1, 100)
    preds = {name: _episodes(tmp_path, name, acc) for name, acc in (("a", acc_a), ("b", acc_b))}
    _, frame = _compare(tmp_path, preds, protocol="fewshot", setting="20shot")
    assert (frame["protocol"] == "fewshot").all()
    d = acc_b - acc_a
    half = 1.96 * d.std() / math.sqrt(100)
    assert frame.loc["b", ["value", "ci_low", "ci_high"]].tolist() == pytest.approx(
        [d.mean(), d.mean() - half, d.mean() + half])
    assert (frame["setting"] == "20shot").all() and _detail(frame, "b", "differs") is True
    assert _detail(frame, "a", "p") == 1.0
    _episodes(tmp_path, "b", acc_b, digest="other")
    with pytest.raises(ValueError, match="different episodes"):
        _compare(tmp_path, preds, protocol="fewshot", setting="20shot")


def test_different_test_images_are_refused(tmp_path):
    correct = np.ones(N, bool)
    preds = {"a": _many_shot(tmp_path, "a", correct),
             "b": _many_shot(tmp_path, "b", correct, positions=np.arange(N) + 1)}
    with pytest.raises(ValueError, match=r"models 'a' and 'b' were scored on different test images \('positions'"):
        _compare(tmp_path, preds)


def test_bad_arguments_raise(tmp_path):
    preds = [_many_shot(tmp_path, "a", np.ones(N, bool))]
    rows = [_rows(tmp_path, "a")]
    kw = dict(out=tmp_path / "o.csv", dataset="ds")
    with pytest.raises(ValueError, match="unknown protocol 'probe'"):
        compare_models(predictions=preds, rows=rows, protocol="probe", **kw)
    with pytest.raises(ValueError, match="must name the same"):
        compare_models(predictions=preds, rows=[_rows(tmp_path, "b")], protocol="linear", **kw)
    with pytest.raises(ValueError, match="metric 'auroc' cannot be compared for fewshot"):
        compare_models(predictions=preds, rows=rows, protocol="fewshot", metric="auroc", **kw)
    with pytest.raises(ValueError, match="holds linear/ds predictions, not finetune/ds"):
        compare_models(predictions=preds, rows=rows, protocol="finetune", **kw)
    with pytest.raises(ValueError, match="no rows for protocol 'finetune'"):
        compare_models(predictions=[_many_shot(tmp_path, "a", np.ones(N, bool), protocol="finetune")], rows=rows,
                       protocol="finetune", **kw)
    with pytest.raises(ValueError, match="two predictions files for model 'a'"):
        compare_models(predictions=preds * 2, rows=rows, protocol="linear", **kw)
    with pytest.raises(ValueError, match="not a medtransfer predictions file"):
        np.savez(tmp_path / "raw.npz", probs=np.ones((2, 2)))
        compare_models(predictions=[tmp_path / "raw.npz"], rows=rows, protocol="linear", **kw)


def test_holm_matches_the_step_down_rule():
    # m = 3: sorted p 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone), NaN untouched
    out = holm({"a": 0.04, "b": 0.01, "c": 0.02, "d": float("nan")})
    assert out["b"] == pytest.approx(0.03) and out["c"] == pytest.approx(0.04) and out["a"] == pytest.approx(0.04)
    assert math.isnan(out["d"])
    assert holm({"a": 0.6, "b": 0.5}) == {"a": 1.0, "b": 1.0}


def test_holm_correction_can_undo_a_nominal_difference(tmp_path):
    """Several models each nominally below 0.05 against the best are not all 'differs' after Holm."""
    rng = np.random.default_rng(7)
    best = rng.random(N) < 0.8
    preds = {"best": _many_shot(tmp_path, "best", best)}
    for i in range(4):
        worse = best.copy()
        worse[np.flatnonzero(best)[i * 3:(i * 3) + 9]] = False  # 9 fewer right: p around 0.01
        preds[f"m{i}"] = _many_shot(tmp_path, f"m{i}", worse)
    _, frame = _compare(tmp_path, preds, n_bootstrap=2000)
    raw = {m: _detail(frame, m, "p") for m in preds if m != "best"}
    adjusted = {m: _detail(frame, m, "p_holm") for m in raw}
    assert adjusted == pytest.approx(holm(raw))
    assert all(adjusted[m] >= raw[m] for m in raw)
    assert all(_detail(frame, m, "differs") == (adjusted[m] < 0.05) for m in raw)


def test_per_image_values_lower_is_better(tmp_path):
    """Reconstruction LPIPS: the lowest mean wins and the others' differences are positive."""
    rng = np.random.default_rng(8)
    base = rng.uniform(0.2, 0.4, 40)
    paths = []
    for model, shift in (("close", 0.0), ("far", 0.1), ("near", 0.001)):
        path = tmp_path / f"{model}-rec.npz"
        Predictions(model=model, dataset="ds", protocol="reconstruction", setting="dip", pairing="values",
                    arrays={"positions": np.arange(40), "lpips_mean": base + shift + rng.normal(0, 1e-4, 40),
                            "psnr": 30 - 10 * (base + shift)}).save(path)
        paths.append(path)
    rows = [_rows(tmp_path, m, "reconstruction", "dip") for m in ("close", "far", "near")]
    out = tmp_path / "rec.csv"
    compare_models(predictions=paths, rows=rows, out=out, protocol="reconstruction", dataset="ds",
                   metric="lpips_mean", n_bootstrap=300)
    frame = read_rows([out]).set_index("model")
    assert _detail(frame, "far", "best") == "close" and frame.loc["close", "value"] == 0.0
    assert frame.loc["far", "value"] == pytest.approx(0.1, abs=1e-3) and frame.loc["far", "ci_low"] > 0
    assert _detail(frame, "far", "differs") is True
    compare_models(predictions=paths, rows=rows, out=out, protocol="reconstruction", dataset="ds",
                   metric="psnr", n_bootstrap=300)  # higher PSNR is better: same winner
    assert _detail(read_rows([out]).set_index("model"), "far", "best") == "close"
    with pytest.raises(ValueError, match="lack per-image values of 'ssim'"):
        compare_models(predictions=paths, rows=rows, out=out, protocol="reconstruction", dataset="ds",
                       metric="ssim")
