"""Few-shot evaluation with prototypical networks on cached features.

Episodes are drawn once per (dataset, n_way, n_support, n_query, seed) from a pool of
the index's images and stored as index positions; every model is scored on the same
stored episodes (the published runs drew fresh, unseeded episodes per model). The pool
is a setting (``pool``): ``train`` (the published code drew from the training images, or
from train and test together; few-shot has no training step, so this is no leak),
``test`` or ``all``. The test split alone cannot hold 20 support + 15 query images per
class on the small datasets (docs/datasets.md). A class with too few images in the
pool is an error unless ``drop_short_classes`` allows leaving it out; dropped classes
are then recorded in the result row. Scoring gathers the cached features of all episodes
with batched tensor ops (no backbone passes, no Python loop per episode).
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch

from medtransfer.data.index import class_names, read_index
from medtransfer.features import load_features
from medtransfer.metrics import episode_ci
from medtransfer.results import Predictions, make_row, write_rows
from medtransfer.writers import save_npz

log = logging.getLogger(__name__)
# Cap on gathered feature values held at once (float32): ~64 MB.
_CHUNK_VALUES = 16_000_000
# Random keys drawn at once when picking episode images (float64): 16 MB.
_KEY_VALUES = 2_000_000


def _check_settings(n_way: int, n_support: int, n_query: int, episodes: int) -> None:
    for name, value, low in (("n_way", n_way, 2), ("n_support", n_support, 1),
                             ("n_query", n_query, 1), ("episodes", episodes, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


POOLS = ("train", "test", "all")


def _advice(counts: np.ndarray, n_way: int, n_query: int, pool: str) -> str:
    """What setting would fit: a larger pool, the largest n_support, else fewer queries or ways."""
    bigger = "" if pool == "all" else "pool: all (train and test), or "
    nth = int(np.sort(counts)[::-1][n_way - 1]) if len(counts) >= n_way else 0
    if nth - n_query >= 1:
        return f"use {bigger}n_support <= {nth - n_query}"
    enough = int((counts >= n_query + 1).sum())
    return (f"use {bigger}n_query <= {max(nth - 1, 0)} with n_support = 1, or n_way <= {enough} "
            f"(the classes with at least {n_query + 1} images in the pool)")


def _eligible_classes(labels: np.ndarray, names: list[str], *, n_way: int, n_support: int, n_query: int,
                      pool: str, dataset: str, drop_short_classes: bool) -> tuple[np.ndarray, dict[str, int]]:
    """Classes with at least n_support + n_query pool images, and the short ones left out.

    A short class is an error unless ``drop_short_classes``; fewer than n_way classes always is.
    """
    need = n_support + n_query
    counts = np.bincount(labels, minlength=len(names))
    eligible = np.flatnonzero(counts >= need)
    short = {names[c]: int(counts[c]) for c in np.flatnonzero(counts < need)}
    setting = f"{n_way}-way {n_support}-shot with {n_query} queries (pool: {pool})"
    if short and (not drop_short_classes or len(eligible) < n_way):
        raise ValueError(
            f"dataset {dataset!r}: {setting} needs {need} images per class, but class(es) {short} "
            f"(name: images in the pool) have fewer; {_advice(counts, n_way, n_query, pool)}"
            + ("" if drop_short_classes else ", or set drop_short_classes: true to leave them out "
               "(recorded in the result row)"))
    return eligible, short


def draw_episodes(labels: np.ndarray, positions: np.ndarray, eligible: np.ndarray, *, n_way: int,
                  need: int, episodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(E, n_way) class ids and (E, n_way, need) positions; images distinct within a class.

    Classes are drawn uniformly without replacement per episode, then, class by class,
    ``need`` distinct images per (episode, class) by sorting random keys (vectorised).
    """
    rng = np.random.default_rng(seed)
    chosen = eligible[np.argsort(rng.random((episodes, len(eligible))), axis=1)[:, :n_way]]
    out = np.empty((episodes, n_way, need), dtype=np.int64)
    for c in eligible:
        members = positions[labels == c]
        ep, way = np.nonzero(chosen == c)
        out[ep, way] = members[_smallest_keys(rng, len(ep), len(members), need)]
    return chosen, out


def _smallest_keys(rng: np.random.Generator, rows: int, m: int, need: int) -> np.ndarray:
    """(rows, need): per row, the columns of the ``need`` smallest of ``m`` random keys, smallest first.

    The same draw as ``argsort(rng.random((rows, m)))[:, :need]`` (the generator fills rows in
    order, so drawing them in chunks consumes the same stream), but a partial selection instead
    of a full sort, and keys for at most ~2 million values at once rather than 600 episodes x
    every image of the class (1 GB for CheXpert's larger class).
    """
    chunk = max(1, _KEY_VALUES // max(m, 1))
    out = np.empty((rows, need), dtype=np.int64)
    for lo in range(0, rows, chunk):
        keys = rng.random((min(chunk, rows - lo), m))
        part = np.argpartition(keys, need - 1, axis=1)[:, :need] if need < m else np.tile(np.arange(m), (len(keys), 1))
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
        out[lo:lo + len(keys)] = np.take_along_axis(part, order, axis=1)
    return out


def pool_positions(split: np.ndarray, pool: str) -> np.ndarray:
    """Index positions of the images episodes are drawn from."""
    if pool not in POOLS:
        raise ValueError(f"few-shot pool {pool!r} is not one of {POOLS}")
    return np.arange(len(split)) if pool == "all" else np.flatnonzero(split == pool)


def sample_episodes(
    *, index: str | os.PathLike, out: str | os.PathLike, n_way: int, n_support: int,
    n_query: int = 15, episodes: int = 600, pool: str = "train", drop_short_classes: bool = False,
    seed: int = 0, dataset: str = "",
) -> None:
    """Draw the episodes of one (dataset, setting, seed) from the ``pool`` images of ``index``.

    Stores index positions (E, n_way, n_support + n_query): per class, the first
    ``n_support`` are the support set and the rest the queries (disjoint by construction).
    """
    _check_settings(n_way, n_support, n_query, episodes)
    frame = read_index(index)
    names = class_names(frame)
    members = pool_positions(frame["split"].to_numpy(str), pool)
    labels = frame["label"].to_numpy(np.int64)[members]
    eligible, dropped = _eligible_classes(labels, names, n_way=n_way, n_support=n_support, n_query=n_query,
                                          pool=pool, dataset=dataset or str(index),
                                          drop_short_classes=drop_short_classes)
    if dropped:
        log.warning("few-shot episodes leave out classes %s (name: images in the pool)", dropped)
    chosen, positions = draw_episodes(labels, members, eligible, n_way=n_way, need=n_support + n_query,
                                      episodes=episodes, seed=seed)
    save_npz(out, positions=positions, classes=chosen, n_way=n_way, n_support=n_support, n_query=n_query,
             seed=seed, n_images=len(frame), class_names=np.array(names, dtype=str), pool=pool,
             dropped_classes=np.array(sorted(dropped), dtype=str))


def episodes_digest(positions: np.ndarray) -> str:
    """sha256 of the stored positions: two predictions files used the same episodes iff equal."""
    return hashlib.sha256(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest()


def _check_match(ep: dict, labels: np.ndarray, split: np.ndarray, features: str, episodes: str) -> None:
    if int(ep["n_images"]) != len(labels):
        raise ValueError(
            f"episodes {episodes} were drawn from an index of {int(ep['n_images'])} images but features "
            f"{features} hold {len(labels)}; re-run sample_episodes on this dataset's index")
    pos = ep["positions"]
    in_pool = np.isin(pos, pool_positions(split, str(ep["pool"])))
    if not (labels[pos] == ep["classes"][:, :, None]).all() or not in_pool.all():
        raise ValueError(
            f"episodes {episodes} do not match the labels/test split of {features} (another dataset or "
            "index version?); re-run sample_episodes on this dataset's index")


def prototype_accuracy(features: torch.Tensor, positions: np.ndarray, n_support: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracy and query predictions (E, n_way * n_query) of prototypical nets.

    ``features`` (N, D); ``positions`` (E, n_way, n_support + n_query). Squared Euclidean
    distance ||q||^2 - 2 q.p + ||p||^2; ||q||^2 is the same for every prototype, so the
    arg-min only needs the last two terms (one batched matmul). The gathered features are
    summed in float64 and each episode is centred on its mean prototype (distances do not
    change under a shift): features with a large common offset (ReLU features are all
    positive) would otherwise lose the differences between prototypes to float32
    rounding, in the prototype means and in ||p||^2 - 2 q.p.
    """
    e_total, n_way, need = positions.shape
    n_query = need - n_support
    truth = torch.arange(n_way).repeat_interleave(n_query)
    chunk = max(1, _CHUNK_VALUES // (n_way * need * features.shape[1]))
    accs, preds = [], []
    for start in range(0, e_total, chunk):
        pos = torch.from_numpy(positions[start:start + chunk])
        protos = features[pos[:, :, :n_support]].double().mean(2)
        centre = protos.mean(1, keepdim=True)
        protos = protos - centre
        queries = features[pos[:, :, n_support:]].flatten(1, 2).double() - centre
        dist = (protos * protos).sum(2).unsqueeze(1) - 2.0 * torch.bmm(queries, protos.transpose(1, 2))
        pred = dist.argmin(2)
        preds.append(pred)
        accs.append((pred == truth).double().mean(1))
    return torch.cat(accs).numpy(), torch.cat(preds).numpy().astype(np.int16)


def evaluate_fewshot(
    *, features: str | os.PathLike, episodes: str | os.PathLike, rows: str | os.PathLike,
    predictions: str | os.PathLike, seed: int = 0,
) -> None:
    """Score one model's features on the stored episodes: one accuracy row + per-episode .npz.

    ``seed`` is recorded in the row; the episodes themselves carry the seed they were drawn with.
    """
    fs = load_features(features)
    with np.load(episodes, allow_pickle=False) as data:
        ep = {k: data[k] for k in data.files}
    _check_match(ep, fs.labels, fs.split, str(features), str(episodes))
    n_way, n_support, n_query = int(ep["n_way"]), int(ep["n_support"]), int(ep["n_query"])
    used, positions = np.unique(ep["positions"], return_inverse=True)  # only the episodes' images are read
    acc, pred = prototype_accuracy(torch.from_numpy(fs.rows(used).astype(np.float32, copy=False)),
                                   positions.reshape(ep["positions"].shape), n_support)
    ci = episode_ci(acc)
    setting = f"{n_support}shot"
    details = {"n_way": n_way, "n_support": n_support, "n_query": n_query, "episodes": ci.n,
               "episode_seed": int(ep["seed"]), "pool": str(ep["pool"]),
               "dropped_classes": [str(c) for c in ep["dropped_classes"]], "ci": "1.96*std/sqrt(episodes)",
               "classifier": "prototype_sq_euclidean"}
    model, dataset = str(fs.meta.get("model", "")), str(fs.meta.get("dataset", ""))
    row = make_row(model=model, dataset=dataset, protocol="fewshot", setting=setting, metric="accuracy",
                   value=ci.value, ci_low=ci.ci_low, ci_high=ci.ci_high, n=ci.n, seed=seed, meta=fs.meta,
                   details=details)
    Predictions(model=model, dataset=dataset, protocol="fewshot", setting=setting, pairing="episodes",
                arrays={"episode_acc": acc, "query_pred": pred, "episodes_sha256": episodes_digest(ep["positions"]),
                        "n_way": n_way, "n_support": n_support, "n_query": n_query}).save(predictions)
    write_rows([row], rows)
