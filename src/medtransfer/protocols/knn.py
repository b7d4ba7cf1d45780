"""The weighted kNN probe (manyshot) on cached features, as in DINO's evaluation.

Features are L2-normalised, so a dot product is the cosine similarity. Each test image's
``k`` most similar training images vote for their class with weight
``exp(similarity / temperature)``; the class scores, divided by their sum, are the
predicted probabilities (so AUROC is defined), and the arg-max is the prediction.
No training, no hyperparameter search: k and the temperature come from the config
(docs/protocols.md, kNN probe). Ties in similarity go to the lower training position
(``nearest``: a top-k selection made exact for ties, so no full row is sorted).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from medtransfer.features import load_features
from medtransfer.protocols import MANYSHOT
from medtransfer.results import write_classification
from medtransfer.runtime import resolve_device

# Similarities held at once (float32): bounds the (chunk x n_train) block to 128 MB, so
# 45,000 CheXpert test images against 178,000 training ones stream through in chunks.
_BLOCK_VALUES = 32_000_000


def knn_probs(train: torch.Tensor, labels: torch.Tensor, test: torch.Tensor, *, n_classes: int, k: int,
              temperature: float, inplace: bool = False) -> torch.Tensor:
    """(n_test, n_classes) vote shares of the ``k`` nearest (cosine) training images.

    ``inplace``: normalise the float32 ``train`` in its own memory (the caller's copy, no second one).
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    k = min(k, len(train))
    train = train.float() if inplace else train.float().clone()
    train.div_(train.norm(dim=1, keepdim=True).clamp_min(1e-12))  # F.normalize's arithmetic, in place
    chunk = max(1, _BLOCK_VALUES // max(len(train), 1))
    out = []
    for start in range(0, len(test), chunk):
        query = torch.nn.functional.normalize(test[start:start + chunk].float(), dim=1)
        sims, order = nearest(query @ train.T, k)
        weights = (sims / temperature).exp()
        votes = torch.zeros(len(query), n_classes, dtype=weights.dtype, device=weights.device)
        votes.scatter_add_(1, labels[order], weights)
        out.append(votes / votes.sum(1, keepdim=True))
    return torch.cat(out)


def nearest(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest similarities of each row and their columns, most similar first, ties
    to the lower column: exactly the first ``k`` of a stable descending sort of the whole row.

    ``torch.topk`` selects in O(n) instead of sorting in O(n log n), but breaks ties as it
    likes; so its k are put in order (column, then a stable sort by similarity), and a row
    where the k-th value also occurs outside the selection (a tie across the cut) is
    resolved by the stable sort of that row alone.
    """
    values, columns = sims.topk(k, dim=1)
    columns, by_column = columns.sort(dim=1)
    values = values.gather(1, by_column)
    values, by_value = values.sort(dim=1, descending=True, stable=True)
    columns = columns.gather(1, by_value)
    kth = values[:, -1:]
    cut = ((sims == kth).sum(1) != (values == kth).sum(1)).nonzero().squeeze(1)
    for row in cut.tolist():  # rare: equal similarities straddle the k-th place
        values[row], columns[row] = (part[:k] for part in sims[row].sort(descending=True, stable=True))
    return values, columns


def evaluate_knn(
    *, features: str | os.PathLike, rows: str | os.PathLike, predictions: str | os.PathLike,
    k: int = 20, temperature: float = 0.07, seed: int = 0, device: str = "auto", n_bootstrap: int = 1000,
) -> None:
    """kNN probe of one (model, dataset) feature file: rows CSV + test predictions .npz."""
    fs = load_features(features)
    device = resolve_device(device)
    x_tr, y_tr = fs.part("train")
    x_te, y_te = fs.part("test")
    probs = knn_probs(torch.from_numpy(x_tr).to(device), torch.from_numpy(y_tr).to(device),
                      torch.from_numpy(x_te).to(device), n_classes=fs.num_classes, k=k, temperature=temperature,
                      inplace=True)
    classes = list(fs.meta.get("classes", [])) or [str(i) for i in range(fs.num_classes)]
    write_classification(
        rows=rows, predictions=predictions, protocol="knn", setting=MANYSHOT, probs=probs.cpu().numpy(),
        labels=y_te, positions=np.flatnonzero(fs.split == "test"), classes=classes, meta=fs.meta, seed=seed,
        n_bootstrap=n_bootstrap, details={"k": k, "k_used": min(k, len(x_tr)), "temperature": temperature,
                                          "similarity": "cosine", "vote": "exp(sim/T)"},
    )
