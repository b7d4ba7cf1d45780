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

import logging
import os

import numpy as np
import torch

from medtransfer.features import load_features
from medtransfer.metrics import episode_ci
from medtransfer.protocols.episodes import _check_match, episodes_digest
from medtransfer.results import Predictions, make_row, write_rows

log = logging.getLogger(__name__)
# Cap on gathered feature values held at once (float32): ~64 MB.
_CHUNK_VALUES = 16_000_000


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
