import logging

import numpy as np
import pandas as pd
import pytest
import torch

from medtransfer.features import FeatureSet, save_features
from medtransfer.metrics import episode_ci
from medtransfer.protocols.episodes import sample_episodes
from medtransfer.protocols.fewshot import evaluate_fewshot, prototype_accuracy
from medtransfer.results import details, read_rows

META = {"model": "toy", "dataset": "dots", "weights_sha256": "beef", "split": "given",
        "precision": "fp32", "preprocessing": "none", "seed": 0}


def _index(tmp_path, labels, split, names=None):
    names = names or [f"class{i}" for i in range(int(max(labels)) + 1)]
    frame = pd.DataFrame({
        "path": [f"img{i}.png" for i in range(len(labels))], "label": labels,
        "label_name": [names[v] for v in labels], "split": split, "patient": "", "split_rule": "given",
    })
    path = tmp_path / "index.csv"
    frame.to_csv(path, index=False)
    return path, names


def _dataset(tmp_path, per_class=(40, 40, 40, 40), n_train=20, d=8, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(per_class)] + [np.arange(n_train) % len(per_class)])
    split = np.array(["test"] * sum(per_class) + ["train"] * n_train)
    order = rng.permutation(len(labels))  # interleave train and test rows
    labels, split = labels[order], split[order]
    index, names = _index(tmp_path, labels, split)
    x = 5.0 * np.eye(len(per_class), d)[labels] + spread * rng.normal(size=(len(labels), d))
    feats = tmp_path / "features.npz"
    save_features(feats, FeatureSet(x.astype(np.float32), labels.astype(np.int64), split,
                                    {**META, "classes": names}))
    return index, feats, labels, split


def _episodes(tmp_path, index, name="ep.npz", **kw):
    out = tmp_path / name
    kw.setdefault("pool", "test")  # the toy datasets hold most images in test
    sample_episodes(index=index, out=out, **kw)
    with np.load(out) as data:
        return out, {k: data[k] for k in data.files}


def test_episodes_are_disjoint_seeded_and_from_the_pool(tmp_path):
    index, _, labels, split = _dataset(tmp_path)
    _, ep = _episodes(tmp_path, index, n_way=3, n_support=5, n_query=7, episodes=50, seed=1)
    pos = ep["positions"]
    assert pos.shape == (50, 3, 12) and (split[pos] == "test").all()
    assert (labels[pos] == ep["classes"][:, :, None]).all()
    assert all(len(set(row)) == 3 for row in ep["classes"])  # distinct classes per episode
    assert all(len(np.unique(p)) == 36 for p in pos)  # support and queries disjoint
    _, again = _episodes(tmp_path, index, "again.npz", n_way=3, n_support=5, n_query=7, episodes=50, seed=1)
    _, other = _episodes(tmp_path, index, "other.npz", n_way=3, n_support=5, n_query=7, episodes=50, seed=2)
    np.testing.assert_array_equal(pos, again["positions"])
    assert not np.array_equal(pos, other["positions"])
    # every eligible class gets drawn
    assert set(np.unique(ep["classes"])) == {0, 1, 2, 3}


def test_short_classes_fail_with_dataset_class_count_and_setting(tmp_path, caplog):
    index, *_ = _dataset(tmp_path, per_class=(40, 40, 10, 40))
    with pytest.raises(ValueError, match=r"dataset 'toy': 3-way 5-shot with 15 queries \(pool: test\) needs 20 "
                                         r"images per class, but class\(es\) \{'class2': 10\}.*drop_short_classes"):
        sample_episodes(index=index, out=tmp_path / "x.npz", n_way=3, n_support=5, n_query=15, pool="test",
                        dataset="toy")
    assert not (tmp_path / "x.npz").exists()
    with caplog.at_level(logging.WARNING, logger="medtransfer.protocols.episodes"):
        _, ep = _episodes(tmp_path, index, n_way=3, n_support=5, n_query=15, episodes=20, drop_short_classes=True)
    assert 2 not in set(np.unique(ep["classes"])) and "class2" in caplog.text
    assert list(ep["dropped_classes"]) == ["class2"]
    with pytest.raises(ValueError, match=r"class\(es\) \{'class2': 10\}.*use pool: all .*n_query <= 9"):
        sample_episodes(index=index, out=tmp_path / "x.npz", n_way=4, n_support=5, n_query=15, pool="test",
                        drop_short_classes=True)
    index, *_ = _dataset(tmp_path, per_class=(40, 40, 30, 40))
    with pytest.raises(ValueError, match=r"\{'class2': 30\}.*use pool: all .*n_support <= 15"):
        sample_episodes(index=index, out=tmp_path / "x.npz", n_way=4, n_support=20, n_query=15, pool="test")


def test_dropped_classes_are_recorded_in_the_row(tmp_path):
    index, feats, *_ = _dataset(tmp_path, per_class=(40, 40, 10, 40))
    eps, _ = _episodes(tmp_path, index, n_way=2, n_support=5, n_query=15, episodes=10, drop_short_classes=True)
    evaluate_fewshot(features=feats, episodes=eps, rows=tmp_path / "r.csv", predictions=tmp_path / "p.npz")
    info = details(read_rows([tmp_path / "r.csv"]).iloc[0])
    assert info["dropped_classes"] == ["class2"] and info["pool"] == "test"


@pytest.mark.parametrize("pool", ["train", "test", "all"])
def test_episodes_come_from_the_pool(tmp_path, pool):
    index, feats, labels, split = _dataset(tmp_path, per_class=(12, 12), n_train=40)
    # 20 train images per class, 12 test: 5 + 10 fit the train pool and all, not test
    if pool == "test":
        with pytest.raises(ValueError, match=r"pool: test\) needs 15"):
            _episodes(tmp_path, index, n_way=2, n_support=5, n_query=10, episodes=30, pool=pool)
        return
    eps, ep = _episodes(tmp_path, index, n_way=2, n_support=5, n_query=10, episodes=30, pool=pool)
    pos = ep["positions"]
    if pool == "train":
        assert (split[pos] == "train").all()
    else:
        assert set(split[pos.ravel()]) == {"train", "test"}
    evaluate_fewshot(features=feats, episodes=eps, rows=tmp_path / "r.csv", predictions=tmp_path / "p.npz")
    assert details(read_rows([tmp_path / "r.csv"]).iloc[0])["pool"] == pool


def test_a_large_common_offset_does_not_change_the_predictions():
    """Distances are shift-invariant; float32 must not lose that to a large offset (ReLU-like features)."""
    rng = np.random.default_rng(6)
    feats = rng.normal(size=(300, 32)) * 0.01
    positions = np.stack([rng.choice(300, size=(4, 8), replace=False) for _ in range(40)])
    shifted = torch.tensor(feats + 1000.0, dtype=torch.float32)
    want, _ = prototype_accuracy(shifted.double(), positions, n_support=3)  # same inputs, float64
    got, _ = prototype_accuracy(shifted, positions, n_support=3)
    np.testing.assert_array_equal(got, want)


def test_bad_sizes_are_named(tmp_path):
    index, *_ = _dataset(tmp_path)
    with pytest.raises(ValueError, match="n_way must be an integer >= 2"):
        sample_episodes(index=index, out=tmp_path / "x.npz", n_way=1, n_support=5)
    with pytest.raises(ValueError, match="few-shot pool 'val' is not one of"):
        sample_episodes(index=index, out=tmp_path / "x.npz", n_way=2, n_support=5, pool="val")


def test_separable_features_score_perfectly(tmp_path):
    index, feats, *_ = _dataset(tmp_path)
    eps, _ = _episodes(tmp_path, index, n_way=4, n_support=5, episodes=30)
    rows, preds = tmp_path / "rows.csv", tmp_path / "preds.npz"
    evaluate_fewshot(features=feats, episodes=eps, rows=rows, predictions=preds)
    row = read_rows([rows]).iloc[0]
    assert (row["protocol"], row["setting"], row["metric"]) == ("fewshot", "5shot", "accuracy")
    assert details(row)["n_way"] == 4
    assert row["value"] == 1.0 and row["n"] == 30 and row["weights_sha256"] == "beef"
    with np.load(preds) as p:
        assert p["episode_acc"].shape == (30,) and p["query_pred"].shape == (30, 60)
    again = tmp_path / "again.csv"
    evaluate_fewshot(features=feats, episodes=eps, rows=again, predictions=tmp_path / "again.npz")
    assert rows.read_bytes() == again.read_bytes()


def test_random_features_score_chance_and_ci_is_published_formula(tmp_path):
    index, _, labels, split = _dataset(tmp_path, d=16)
    noise = np.random.default_rng(3).normal(size=(len(labels), 16)).astype(np.float32)
    feats = tmp_path / "noise.npz"
    save_features(feats, FeatureSet(noise, labels.astype(np.int64), split, META))
    eps, _ = _episodes(tmp_path, index, n_way=2, n_support=5, n_query=10, episodes=300)
    rows, preds = tmp_path / "rows.csv", tmp_path / "preds.npz"
    evaluate_fewshot(features=feats, episodes=eps, rows=rows, predictions=preds)
    row = read_rows([rows]).iloc[0]
    assert 0.45 < row["value"] < 0.55
    with np.load(preds) as p:
        ci = episode_ci(p["episode_acc"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.ci_low, ci.ci_high))


def test_vectorised_scoring_matches_a_per_episode_loop():
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(200, 6))
    positions = np.stack([rng.choice(200, size=(3, 7), replace=False) for _ in range(25)])
    acc, pred = prototype_accuracy(torch.tensor(feats, dtype=torch.float32), positions, n_support=3)
    for e, pos in enumerate(positions):
        protos = feats[pos[:, :3]].mean(1)
        queries = feats[pos[:, 3:]].reshape(-1, 6)
        want = ((queries[:, None] - protos[None]) ** 2).sum(2).argmin(1)
        np.testing.assert_array_equal(pred[e], want)
        assert acc[e] == pytest.approx((want == np.repeat(np.arange(3), 4)).mean())


def test_mismatched_features_are_refused(tmp_path):
    index, feats, labels, split = _dataset(tmp_path)
    eps, _ = _episodes(tmp_path, index, n_way=2, n_support=5, episodes=5)
    short = tmp_path / "short.npz"
    save_features(short, FeatureSet(np.zeros((10, 8), np.float32), labels[:10], split[:10], META))
    with pytest.raises(ValueError, match="index of 180 images but features .* hold 10"):
        evaluate_fewshot(features=short, episodes=eps, rows=tmp_path / "r.csv", predictions=tmp_path / "p.npz")
    shuffled = tmp_path / "shuffled.npz"
    save_features(shuffled, FeatureSet(np.zeros((180, 8), np.float32), labels[::-1].copy(), split, META))
    with pytest.raises(ValueError, match="do not match the labels"):
        evaluate_fewshot(features=shuffled, episodes=eps, rows=tmp_path / "r.csv", predictions=tmp_path / "p.npz")


@pytest.mark.parametrize("rows, m, need, key_values", [(600, 40, 35, 2_000_000), (600, 35, 35, 100),
                                                       (300, 20_000, 35, 50_000), (7, 3000, 1, 3000)])
def test_episode_images_are_the_full_sort_draw_in_chunks(rows, m, need, key_values, monkeypatch):
    """The partial selection over chunks of keys picks what a full argsort of all keys at once did."""
    import medtransfer.protocols.episodes as episodes

    monkeypatch.setattr(episodes, "_KEY_VALUES", key_values)
    full = np.argsort(np.random.default_rng(5).random((rows, m)), axis=1)[:, :need]
    np.testing.assert_array_equal(episodes._smallest_keys(np.random.default_rng(5), rows, m, need), full)
