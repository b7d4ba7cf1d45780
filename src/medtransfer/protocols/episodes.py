"""The few-shot episodes: drawn once per (dataset, n_way, n_support, n_query, seed) from a pool
of the index's images, stored as index positions and shared by every model (see
``protocols.fewshot``). Torch-free: the job that draws them imports no torch.
"""

from __future__ import annotations

import hashlib
import logging
import os

import numpy as np

from medtransfer.data.index import class_names, read_index
from medtransfer.writers import save_npz

log = logging.getLogger(__name__)
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
