"""The finetune protocol (many-shot): backbone + new linear head, all weights trained.

Published settings (docs/protocols.md): cross-entropy, SGD momentum 0.9 Nesterov, cosine
annealing stepped per iteration over all steps, 5,000 steps of batch 64, lr 1e-2,
weight decay 1e-8, RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip, optional
lr x wd search, early stopping on val every 200 steps with patience 3 and a *real*
restore of the best weights (the published restore kept a reference to the live
state dict, so it restored nothing).

Training reads the decoded uint8 cache (no JPEG decoding) and augments on the device:
crops of the cached centre images, or of the whole images when a full cache
(``data.cache.build_full_cache``) is given; evaluation uses the cached centre images,
as every other protocol does.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medtransfer.data.augment import augment, crop_params, full_batch, full_batch_array, random_resized_crop_full  # noqa: F401
from medtransfer.data.batches import DeviceBatches
from medtransfer.data.cache import load_full_cache, load_indexed_cache, read_rows
from medtransfer.data.index import class_names, stratified_split
from medtransfer.features import run_meta
from medtransfer.features.extract import to_model_input
from medtransfer.metrics import selection_score
from medtransfer.progress import Progress
from medtransfer.protocols import MANYSHOT
from medtransfer.results import write_classification
from medtransfer.runtime import PRECISIONS, autocast, resolve_device, seed_everything
from medtransfer.weights.backbones import load_weights, normalise

log = logging.getLogger(__name__)

LR_GRID = (1e-1, 1e-2, 1e-3, 1e-4)
# Search weight decays are these values divided by the lr (docs/protocols.md).
WD_OVER_LR_GRID = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


@dataclass(frozen=True)
class TrainConfig:
    """One training run's settings; ``eval_every``/``patience`` only act with early stopping.

    No defaults for the recipe: it comes from the resolved config (its defaults live in
    config/schema.yaml), through :func:`evaluate_finetune`.
    """

    steps: int
    batch_size: int
    lr: float
    weight_decay: float
    early_stopping: bool
    eval_every: int
    patience: int
    precision: str = "fp32"
    seed: int = 0
    metric: str = "accuracy"  # val metric of the search and early stopping
    deterministic: bool = False  # deterministic kernels (GPU reproducibility; slower)


@dataclass
class RunResult:
    """How a finished run went; the model holds the weights kept (best on val, or final)."""

    best_step: int
    stopped_early: bool
    steps_run: int
    val_score: float
    losses: list[float] = field(default_factory=list)
    diverged: bool = False


# ---------------------------------------------------------------- early stopping


class EarlyStopping:
    """Tracks the best val score and keeps a *copy* of the weights that reached it.

    ``update`` returns True once ``patience`` evaluations in a row brought no improvement
    (ties keep the earlier, shorter-trained weights).
    """

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 evaluation, got {patience}")
        self.patience, self.bad = patience, 0
        self.best_score, self.best_step = -math.inf, 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def update(self, score: float, step: int, model: nn.Module) -> bool:
        if score > self.best_score:
            self.best_score, self.best_step, self.bad = score, step, 0
            # clone(): state_dict() returns views of the live parameters
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is None:
            raise RuntimeError("no evaluation was recorded, so there are no best weights to restore")
        model.load_state_dict(self.best_state)


# ---------------------------------------------------------------- data and augmentation


class BatchStream:
    """Endless seeded batches of positions: a fresh permutation every pass over the data."""

    def __init__(self, positions: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        self.positions, self.batch_size, self.rng = positions, batch_size, rng
        self.buffer = np.empty(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while len(self.buffer) < self.batch_size:
            self.buffer = np.concatenate([self.buffer, self.rng.permutation(self.positions)])
        batch, self.buffer = self.buffer[: self.batch_size], self.buffer[self.batch_size:]
        return batch


@dataclass
class Data:
    """The cached images, labels and the positions of each part of the split."""

    images: np.ndarray  # (N, S, S, 3) uint8 memmap, index order
    labels: np.ndarray
    train: np.ndarray  # positions used to update the weights
    val: np.ndarray  # positions for early stopping / search (may be empty)
    test: np.ndarray
    full: tuple[np.ndarray, np.ndarray] | None = None  # whole images (N, H, W, 3) and sizes (N, 2)


# ---------------------------------------------------------------- model


class Classifier(nn.Module):
    """Backbone (fc = identity) followed by a new linear head."""

    def __init__(self, backbone: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        # the last BatchNorm sets the pooled width (ResNet-50 2048, ResNet-18 512, DenseNet-121 1024)
        width = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_model(weights: str | os.PathLike, num_classes: int, cfg: TrainConfig, device: str):
    """Fresh backbone from ``weights`` + head seeded by ``cfg.seed``; returns (model, weights meta)."""
    backbone, wmeta = load_weights(weights)
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    model = Classifier(backbone, num_classes)
    fmt = torch.channels_last if cfg.precision == "bf16" else torch.contiguous_format
    return model.to(device, memory_format=fmt), wmeta


@torch.no_grad()
def predict(model: nn.Module, data: Data, positions: np.ndarray, wmeta, device: str,
            precision: str, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities (n, C) of the cached centre images, model in eval mode."""

    was_training = model.training
    model.eval()
    out = []
    chunks = [positions[start:start + batch_size] for start in range(0, len(positions), batch_size)]
    batches = DeviceBatches(lambda pos: read_rows(data.images, pos), chunks, device,
                            max_bytes=batch_size * int(np.prod(data.images.shape[1:])))
    with autocast(device, precision):
        for _, batch in batches:
            x = to_model_input(batch, wmeta, precision == "bf16")
            out.append(torch.softmax(model(x).float(), dim=1))
    model.train(was_training)
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, 0), np.float32)


# ---------------------------------------------------------------- training


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    """SGD (momentum 0.9, Nesterov) with cosine annealing to 0 over all steps."""
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True,
                          weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps)


def _train_step(model, opt, sched, data: Data, pos: np.ndarray, batch: torch.Tensor, rng, wmeta,
                device, cfg) -> torch.Tensor:
    x = normalise(_train_batch(data, pos, batch, rng), wmeta)
    if cfg.precision == "bf16":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(data.labels[pos]).to(device, non_blocking=True)
    with autocast(device, cfg.precision):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()  # per iteration: the cosine runs over all steps
    return loss.detach()


def _train_batch(data: Data, pos: np.ndarray, batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Augmented float images from the uint8 (B, h, w, 3) ``batch`` of ``pos`` (on the device):
    crops of the whole images when a full cache is given, else of the centre images."""
    x = batch.permute(0, 3, 1, 2)
    if data.full is None:
        return augment(x, rng)
    return random_resized_crop_full(x, np.asarray(data.full[1][pos], dtype=np.int64), data.images.shape[1], rng)


def train_batches(data: Data, stream: BatchStream, steps: int, device: str) -> "DeviceBatches":
    """The uint8 training batches of ``steps`` steps on ``device``, gathered ahead by a thread
    (through pinned memory on a GPU, medtransfer.data.batches)."""
    positions = (stream.next() for _ in range(steps))  # drawn in the gathering thread: its own generator
    if data.full is None:
        return DeviceBatches(lambda pos: read_rows(data.images, pos), positions, device,
                             max_bytes=stream.batch_size * int(np.prod(data.images.shape[1:])))
    side = max(data.full[0].shape[1:3])
    return DeviceBatches(lambda pos: full_batch_array(*data.full, pos)[0], positions, device,
                         max_bytes=stream.batch_size * side * side * 3)


def _val_score(model, data: Data, wmeta, device: str, cfg: TrainConfig) -> float:
    """The val score by the dataset's headline metric (the published selection rule)."""
    probs = predict(model, data, data.val, wmeta, device, cfg.precision, cfg.batch_size)
    return float(selection_score(probs.argmax(1), data.labels[data.val], cfg.metric))


def train_run(model: nn.Module, data: Data, wmeta, device: str, cfg: TrainConfig) -> RunResult:
    """Train with ``cfg``; with early stopping, restore the best val weights at the end.

    Every ``eval_every`` steps (and at the last) the loss is checked: a non-finite loss
    ends the run as ``diverged`` (checked only there, to avoid a GPU sync per step).
    """
    rng = np.random.default_rng(cfg.seed)  # augmentation, on this thread
    # the batches' order: a generator of its own, drawn in the thread that gathers them ahead
    stream = BatchStream(data.train, cfg.batch_size, np.random.default_rng([cfg.seed, 1]))
    opt, sched = make_optimizer(model, cfg)
    stopper = EarlyStopping(cfg.patience) if cfg.early_stopping else None
    model.train()  # BatchNorm uses batch statistics and updates its running ones
    losses, stopped, diverged, step = [], False, False, 0
    progress = Progress(f"finetune lr={cfg.lr:g} wd={cfg.weight_decay:g}", cfg.steps, unit="steps")
    for step, (pos, batch) in enumerate(train_batches(data, stream, cfg.steps, device), start=1):
        losses.append(_train_step(model, opt, sched, data, pos, batch, rng, wmeta, device, cfg))
        progress.update()
        if step % cfg.eval_every and step != cfg.steps:
            continue
        if not torch.isfinite(losses[-1]):
            diverged = True
            log.warning("finetune lr=%g wd=%g diverged (non-finite loss) by step %d", cfg.lr, cfg.weight_decay, step)
            break
        if stopper and stopper.update(_val_score(model, data, wmeta, device, cfg), step, model):
            stopped = step < cfg.steps
            break
    losses = torch.stack(losses).float().cpu().tolist()
    if stopper is None or stopper.best_state is None:
        val = _val_score(model, data, wmeta, device, cfg) if len(data.val) else float("nan")
        return RunResult(step, False, step, val, losses, diverged)
    stopper.restore(model)
    return RunResult(stopper.best_step, stopped, step, stopper.best_score, losses, diverged)


# ---------------------------------------------------------------- search and entry point


def search_grid(lr_grid: list[float] | None, wd_grid: list[float] | None) -> list[tuple[float, float]]:
    """(lr, weight decay) pairs; weight decay = value / lr for each value of ``wd_grid``."""
    lrs = list(LR_GRID if lr_grid is None else lr_grid)
    wds = list(WD_OVER_LR_GRID if wd_grid is None else wd_grid)
    if not lrs or not wds or any(v <= 0 for v in lrs) or any(v < 0 for v in wds):
        raise ValueError(f"lr_grid must hold positive and wd_grid non-negative values, got {lrs} and {wds}")
    return [(lr, wd / lr) for lr in lrs for wd in wds]


def search_hparams(weights, data: Data, num_classes: int, device: str, cfg: TrainConfig,
                   grid: list[tuple[float, float]]) -> tuple[TrainConfig, list[float]]:
    """Train each (lr, wd) on the train part, score on val; best first in grid order wins ties."""
    scores = []
    for lr, wd in grid:
        run_cfg = replace(cfg, lr=lr, weight_decay=wd)
        model, wmeta = build_model(weights, num_classes, run_cfg, device)
        scores.append(train_run(model, data, wmeta, device, run_cfg).val_score)
        log.info("finetune search lr=%g wd=%g: val %s %.4f", lr, wd, cfg.metric, scores[-1])
    lr, wd = grid[int(np.argmax(scores))]
    return replace(cfg, lr=lr, weight_decay=wd), scores


def _split(frame, images: np.ndarray, val_fraction: float, seed: int, hold_out: bool,
           full: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[Data, Data]:
    """(search data: train part + val part, final data: val held out only if ``hold_out``)."""
    labels = frame["label"].to_numpy(np.int64)
    split = frame["split"].to_numpy(str)
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    tr, va = stratified_split(labels[train], val_fraction, seed)
    parted = Data(images, labels, train[tr], train[va], test, full)
    final = parted if hold_out else Data(images, labels, train, np.empty(0, np.int64), test, full)
    return parted, final


def _check_args(precision: str, steps: int, batch_size: int, eval_every: int) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 2), ("eval_every", eval_every, 1)):
        if value < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")


def evaluate_finetune(
    *, weights: str | os.PathLike, cache: str | os.PathLike, index: str | os.PathLike,
    rows: str | os.PathLike, predictions: str | os.PathLike, model: str, dataset: str,
    steps: int = 5000, batch_size: int = 64, lr: float = 1e-2, weight_decay: float = 1e-8,
    search: bool = False, lr_grid: list[float] | None = None, wd_grid: list[float] | None = None,
    early_stopping: bool = True, eval_every: int = 200, patience: int = 3, val_fraction: float = 0.2,
    seed: int = 0, device: str = "auto", precision: str = "fp32", n_bootstrap: int = 1000,
    metric: str = "accuracy", deterministic: bool = False, full_cache: str | os.PathLike | None = None,
) -> None:
    """Finetune one (model, dataset), write the three metric rows and the test predictions.

    ``wd_grid`` values are divided by the lr (published convention). With early stopping
    the val part (``val_fraction`` of train, stratified, seeded) is held out of training;
    without it and without search the final run trains on all training images.
    ``full_cache`` (``data.cache.build_full_cache``): training crops come from the whole
    images; without it, from the centre cache ``cache``.
    """
    _check_args(precision, steps, batch_size, eval_every)
    device = resolve_device(device)
    frame, images = load_indexed_cache(cache, index)
    classes = class_names(frame)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      early_stopping=early_stopping, eval_every=eval_every, patience=patience,
                      precision=precision, seed=seed, metric=metric,
                      deterministic=deterministic)
    full = load_full_cache(full_cache, frame=frame) if full_cache else None
    parted, final = _split(frame, images, val_fraction, seed, hold_out=early_stopping, full=full)
    scores: list[float] = []
    if search:
        cfg, scores = search_hparams(weights, parted, len(classes), device, cfg, search_grid(lr_grid, wd_grid))
    net, wmeta = build_model(weights, len(classes), cfg, device)
    result = train_run(net, final, wmeta, device, cfg)
    probs = predict(net, final, final.test, wmeta, device, precision, batch_size)
    meta = run_meta(model=model, dataset=dataset, weights_meta=wmeta, index=frame, precision=precision,
                    size=images.shape[1], seed=seed)
    _write(rows, predictions, probs, final, classes, meta, cfg, result, scores, n_bootstrap)


def _augment_name(final: Data) -> str:
    if final.full is None:
        return "rrc0.08-1_bicubic+hflip_of_centre_crop"
    hw = final.full[1][final.train]
    return f"rrc0.08-1_bicubic_aa+hflip_of_full_image_short{int(hw.min())}_long_max{int(hw.max())}"


def _details(cfg: TrainConfig, result: RunResult, final: Data, scores: list[float]) -> dict:
    return {
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "best_step": result.best_step,
        "stopped_early": result.stopped_early, "diverged": result.diverged, "steps_run": result.steps_run,
        "steps": cfg.steps, "batch_size": cfg.batch_size, "early_stopping": cfg.early_stopping,
        "val_score": result.val_score, "selection_metric": cfg.metric, "train_images": len(final.train),
        "val_images": len(final.val), "search_runs": len(scores),
        "search_best_val_score": max(scores) if scores else None,
        "augment": _augment_name(final), "optimizer": "sgd_nesterov0.9_cosine",
    }


def _write(rows, predictions, probs, final: Data, classes, meta, cfg, result, scores, n_bootstrap) -> None:

    write_classification(
        rows=rows, predictions=predictions, protocol="finetune", setting=MANYSHOT, probs=probs,
        labels=final.labels[final.test], positions=final.test, classes=classes, meta=meta, seed=cfg.seed,
        n_bootstrap=n_bootstrap, details=_details(cfg, result, final, scores),
        extras={"losses": np.array(result.losses, dtype=np.float32), "search_val_score": np.array(scores),
                "lr": cfg.lr, "weight_decay": cfg.weight_decay, "best_step": result.best_step},
    )
