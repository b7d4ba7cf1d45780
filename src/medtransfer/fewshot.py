"""Few-shot evaluation with prototypical networks on cached features.

Episodes are drawn once per (dataset, n_way, n_support, n_query, seed) from the
index's *test* images, as in the published protocol, and stored as index positions;
every model is scored on the same stored episodes (the published runs drew fresh,
unseeded episodes per model). Scoring gathers the cached features of all episodes
with batched tensor ops (no backbone passes, no Python loop per episode).
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np
import torch

from medtransfer.common import atomic_path
from medtransfer.features import load_features
from medtransfer.metrics import episode_ci

log = logging.getLogger(__name__)
# Cap on gathered feature values held at once (float32): ~64 MB.
_CHUNK_VALUES = 16_000_000


def _check_settings(n_way: int, n_support: int, n_query: int, episodes: int) -> None:
    for name, value, low in (("n_way", n_way, 2), ("n_support", n_support, 1),
                             ("n_query", n_query, 1), ("episodes", episodes, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _advice(counts: np.ndarray, n_way: int, n_query: int) -> str:
    """What setting would fit: the largest n_support, else fewer queries or ways."""
    nth = int(np.sort(counts)[::-1][n_way - 1]) if len(counts) >= n_way else 0
    if nth - n_query >= 1:
        return f"use n_support <= {nth - n_query}"
    enough = int((counts >= n_query + 1).sum())
    return (f"use n_query <= {max(nth - 1, 0)} with n_support = 1, or n_way <= {enough} "
            f"(the classes with at least {n_query + 1} test images)")


def _eligible_classes(labels: np.ndarray, names: list[str], n_way: int, n_support: int, n_query: int) -> np.ndarray:
    """Classes with at least n_support + n_query test images; error if fewer than n_way."""
    need = n_support + n_query
    counts = np.bincount(labels, minlength=len(names))
    eligible = np.flatnonzero(counts >= need)
    short = {names[c]: int(counts[c]) for c in np.flatnonzero(counts < need)}
    if len(eligible) < n_way:
        raise ValueError(
            f"{n_way}-way {n_support}-shot episodes with {n_query} queries need {need} test images in at "
            f"least {n_way} classes, but classes {short} (name: test images) have fewer and only "
            f"{len(eligible)} class(es) qualify; {_advice(counts, n_way, n_query)}")
    if short:
        log.warning("few-shot episodes leave out classes %s (name: test images): fewer than %d test images",
                    short, need)
    return eligible


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
        pick = np.argsort(rng.random((len(ep), len(members))), axis=1)[:, :need]
        out[ep, way] = members[pick]
    return chosen, out


def sample_episodes(
    *, index: str | os.PathLike, out: str | os.PathLike, n_way: int, n_support: int,
    n_query: int = 15, episodes: int = 600, seed: int = 0,
) -> None:
    """Draw the episodes of one (dataset, setting, seed) from the test images of ``index``.

    Stores index positions (E, n_way, n_support + n_query): per class, the first
    ``n_support`` are the support set and the rest the queries (disjoint by construction).
    """
    from medtransfer.data.index import class_names, read_index

    _check_settings(n_way, n_support, n_query, episodes)
    frame = read_index(index)
    names = class_names(frame)
    test = np.flatnonzero(frame["split"].to_numpy(str) == "test")
    labels = frame["label"].to_numpy(np.int64)[test]
    eligible = _eligible_classes(labels, names, n_way, n_support, n_query)
    chosen, positions = draw_episodes(labels, test, eligible, n_way=n_way, need=n_support + n_query,
                                      episodes=episodes, seed=seed)
    with atomic_path(out) as tmp:
        np.savez(tmp, positions=positions, classes=chosen, n_way=n_way, n_support=n_support, n_query=n_query,
                 seed=seed, n_images=len(frame), class_names=np.array(names, dtype=str))


def episodes_digest(positions: np.ndarray) -> str:
    """sha256 of the stored positions: two predictions files used the same episodes iff equal."""
    return hashlib.sha256(np.ascontiguousarray(positions, dtype=np.int64).tobytes()).hexdigest()


def _check_match(ep: dict, labels: np.ndarray, split: np.ndarray, features: str, episodes: str) -> None:
    if int(ep["n_images"]) != len(labels):
        raise ValueError(
            f"episodes {episodes} were drawn from an index of {int(ep['n_images'])} images but features "
            f"{features} hold {len(labels)}; re-run sample_episodes on this dataset's index")
    pos = ep["positions"]
    if not (labels[pos] == ep["classes"][:, :, None]).all() or not (split[pos] == "test").all():
        raise ValueError(
            f"episodes {episodes} do not match the labels/test split of {features} (another dataset or "
            "index version?); re-run sample_episodes on this dataset's index")


def prototype_accuracy(features: torch.Tensor, positions: np.ndarray, n_support: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode accuracy and query predictions (E, n_way * n_query) of prototypical nets.

    ``features`` (N, D); ``positions`` (E, n_way, n_support + n_query). Squared Euclidean
    distance ||q||^2 - 2 q.p + ||p||^2; ||q||^2 is the same for every prototype, so the
    arg-min only needs the last two terms (one batched matmul).
    """
    e_total, n_way, need = positions.shape
    n_query = need - n_support
    truth = torch.arange(n_way).repeat_interleave(n_query)
    chunk = max(1, _CHUNK_VALUES // (n_way * need * features.shape[1]))
    accs, preds = [], []
    for start in range(0, e_total, chunk):
        pos = torch.from_numpy(positions[start:start + chunk])
        protos = features[pos[:, :, :n_support]].mean(2)
        queries = features[pos[:, :, n_support:]].flatten(1, 2)
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
    from medtransfer.results import Predictions, make_row, write_rows

    fs = load_features(features)
    with np.load(episodes, allow_pickle=False) as data:
        ep = {k: data[k] for k in data.files}
    _check_match(ep, fs.labels, fs.split, str(features), str(episodes))
    n_way, n_support, n_query = int(ep["n_way"]), int(ep["n_support"]), int(ep["n_query"])
    acc, pred = prototype_accuracy(torch.from_numpy(np.ascontiguousarray(fs.features, dtype=np.float32)),
                                   ep["positions"], n_support)
    ci = episode_ci(acc)
    setting = f"{n_support}shot"
    details = {"n_way": n_way, "n_support": n_support, "n_query": n_query, "episodes": ci.n,
               "episode_seed": int(ep["seed"]), "ci": "1.96*std/sqrt(episodes)",
               "classifier": "prototype_sq_euclidean"}
    model, dataset = str(fs.meta.get("model", "")), str(fs.meta.get("dataset", ""))
    row = make_row(model=model, dataset=dataset, protocol="fewshot", setting=setting, metric="accuracy",
                   value=ci.value, ci_low=ci.ci_low, ci_high=ci.ci_high, n=ci.n, seed=seed, meta=fs.meta,
                   details=details)
    Predictions(model=model, dataset=dataset, protocol="fewshot", setting=setting, pairing="episodes",
                arrays={"episode_acc": acc, "query_pred": pred, "episodes_sha256": episodes_digest(ep["positions"]),
                        "n_way": n_way, "n_support": n_support, "n_query": n_query}).save(predictions)
    write_rows([row], rows)
