import math

import numpy as np
import pytest

from medtransfer.compare import compare_models
from medtransfer.linear import write_predictions
from medtransfer.results import make_row, read_rows, write_rows

N = 200


def _rows(tmp_path, model, protocol="linear", setting="many-shot", dataset="ds"):
    meta = {"weights_sha256": f"sha-{model}", "split": "given", "precision": "fp32", "preprocessing": "p"}
    path = tmp_path / f"{model}-{protocol}.csv"
    write_rows([make_row(model=model, dataset=dataset, protocol=protocol, setting=setting, metric="accuracy",
                         value=0.5, n=N, seed=0, meta=meta)], path)
    return path


def _many_shot(tmp_path, model, correct, labels=None, positions=None):
    """Predictions where exactly the images in ``correct`` are classified right."""
    labels = np.arange(N) % 2 if labels is None else labels
    pred = np.where(correct, labels, 1 - labels)
    probs = np.stack([np.where(pred == 0, 0.8, 0.2), np.where(pred == 1, 0.8, 0.2)], axis=1)
    path = tmp_path / f"{model}.npz"
    write_predictions(path, probs=probs, labels=labels,
                      positions=np.arange(N) if positions is None else positions, classes=np.array(["a", "b"]))
    return path


def _compare(tmp_path, preds, protocol="linear", name="cmp", **kw):
    setting = kw.pop("setting", "many-shot")
    rows = {m: _rows(tmp_path, m, protocol, setting) for m in preds}
    out = tmp_path / f"{name}.csv"
    compare_models(predictions=preds, rows_meta=rows, out=out, protocol=protocol, dataset="ds",
                   n_bootstrap=400, **kw)
    return out, read_rows([out]).set_index("model")


def _detail(frame, model, key):
    return dict(kv.split("=") for kv in frame.loc[model, "details"].split(";"))[key]


def test_clearly_worse_model_differs_and_best_gets_zero(tmp_path):
    rng = np.random.default_rng(0)
    preds = {"good": _many_shot(tmp_path, "good", rng.random(N) < 0.9),
             "poor": _many_shot(tmp_path, "poor", rng.random(N) < 0.6)}
    out, frame = _compare(tmp_path, preds)
    assert (frame["metric"] == "accuracy_diff_vs_best").all() and (frame["setting"] == "many-shot").all()
    assert frame.loc["good", ["value", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    assert _detail(frame, "good", "best") == "good" and _detail(frame, "good", "differs") == "False"
    assert frame.loc["poor", "value"] < -0.2 and frame.loc["poor", "ci_high"] < 0
    assert _detail(frame, "poor", "differs") == "True" and float(_detail(frame, "poor", "p")) < 0.01
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
    assert _detail(frame, "b", "differs") == "False"


def test_zero_resamples_give_values_without_intervals(tmp_path):
    rng = np.random.default_rng(5)
    preds = {"a": _many_shot(tmp_path, "a", rng.random(N) < 0.9), "b": _many_shot(tmp_path, "b", rng.random(N) < 0.5)}
    rows = {m: _rows(tmp_path, m) for m in preds}
    compare_models(predictions=preds, rows_meta=rows, out=tmp_path / "z.csv", protocol="linear", dataset="ds",
                   n_bootstrap=0)
    frame = read_rows([tmp_path / "z.csv"]).set_index("model")
    assert frame.loc["b", "value"] < 0 and frame["ci_low"].isna().all()
    assert _detail(frame, "b", "p") == "nan" and _detail(frame, "b", "differs") == "False"


def test_other_metrics_are_paired_too(tmp_path):
    rng = np.random.default_rng(2)
    preds = {"a": _many_shot(tmp_path, "a", rng.random(N) < 0.8), "b": _many_shot(tmp_path, "b", rng.random(N) < 0.8)}
    _, frame = _compare(tmp_path, preds, metric="auroc")
    assert (frame["metric"] == "auroc_diff_vs_best").all() and (frame["value"] <= 0).all()


def test_few_shot_pairs_episodes(tmp_path):
    rng = np.random.default_rng(3)
    acc_a = rng.uniform(0.6, 0.9, 100)
    acc_b = acc_a - rng.uniform(0.0, 0.1, 100)
    preds = {}
    for name, acc in (("a", acc_a), ("b", acc_b)):
        preds[name] = tmp_path / f"{name}-fs.npz"
        write_predictions(preds[name], episode_acc=acc, episodes_sha256="same")
    rows = {m: _rows(tmp_path, m, "few-shot", "2-way 20-shot") for m in preds}
    out = tmp_path / "fs.csv"
    # the workflow passes the path name of the protocol
    compare_models(predictions=preds, rows_meta=rows, out=out, protocol="fewshot", dataset="ds")
    frame = read_rows([out]).set_index("model")
    assert (frame["protocol"] == "few-shot").all()
    d = acc_b - acc_a
    half = 1.96 * d.std() / math.sqrt(100)
    assert frame.loc["b", ["value", "ci_low", "ci_high"]].tolist() == pytest.approx(
        [d.mean(), d.mean() - half, d.mean() + half])
    assert (frame["setting"] == "2-way 20-shot").all() and _detail(frame, "b", "differs") == "True"
    assert float(_detail(frame, "a", "p")) == 1.0
    write_predictions(preds["b"], episode_acc=acc_b, episodes_sha256="other")
    with pytest.raises(ValueError, match="different episodes"):
        _compare(tmp_path, preds, protocol="few-shot", setting="2-way 20-shot")


def test_different_test_images_are_refused(tmp_path):
    correct = np.ones(N, bool)
    preds = {"a": _many_shot(tmp_path, "a", correct),
             "b": _many_shot(tmp_path, "b", correct, positions=np.arange(N) + 1)}
    with pytest.raises(ValueError, match=r"models 'a' and 'b' were scored on different test images \('positions'"):
        _compare(tmp_path, preds)


def test_bad_arguments_raise(tmp_path):
    preds = {"a": _many_shot(tmp_path, "a", np.ones(N, bool))}
    rows = {"a": _rows(tmp_path, "a")}
    kw = dict(out=tmp_path / "o.csv", dataset="ds")
    with pytest.raises(ValueError, match="unknown protocol 'probe'"):
        compare_models(predictions=preds, rows_meta=rows, protocol="probe", **kw)
    with pytest.raises(ValueError, match="must name the same"):
        compare_models(predictions=preds, rows_meta={"b": rows["a"]}, protocol="linear", **kw)
    with pytest.raises(ValueError, match="metric 'auroc' cannot be compared for few-shot"):
        compare_models(predictions=preds, rows_meta=rows, protocol="few-shot", metric="auroc", **kw)
    with pytest.raises(ValueError, match="no rows for protocol 'finetune'"):
        compare_models(predictions=preds, rows_meta=rows, protocol="finetune", **kw)
    with pytest.raises(ValueError, match=r"rows of model\(s\) \['a'\], not 'z'"):
        compare_models(predictions={"z": preds["a"]}, rows_meta={"z": rows["a"]}, protocol="linear", **kw)
