"""The linear probe (many-shot): multinomial logistic regression on frozen features.

Objective (scikit-learn's, divided by ``C * N`` for conditioning; same optimum)::

    mean_i CE(x_i W^T + b, y_i) + 1 / (2 C N) * ||W||^2      (bias unpenalised)

solved by a float32 L-BFGS written for *batches of independent problems*: each problem
keeps its own curvature history, step length and stopping test, and leaves the batch
when it stops, so no C value pays for another's iterations (the "joint problem with one
shared line search" of docs/performance.md is what is slow on a CPU). Default strategy on
every device: all C values of the grid as one batch, each started from zero. The
batch turns the memory-bound (N x d) @ (d x C) products of one problem into one
compute-bound product for all. bench/linear.py on the 2-core CPU (N=4000, d=2048,
5 classes, 45 C values, selection + refit): 1.8 s batched, 2.8 s for a warm-started
one-C-at-a-time path (``strategy="sequential"``, kept for memory-tight cases; its path
runs over the sorted grid, so it is deterministic given the grid), 46.9 s for the
published-style scikit-learn loop, all selecting the same C. Every C is solved independently of
the grid order, and the refit on the full training set always starts from zero.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medtransfer.data.index import stratified_split
from medtransfer.features import load_features
from medtransfer.metrics import selection_score
from medtransfer.protocols import MANYSHOT
from medtransfer.results import write_classification
from medtransfer.runtime import resolve_device

log = logging.getLogger(__name__)

STRATEGIES = ("batched", "sequential")


# ---------------------------------------------------------------- data helpers


def c_grid(c_values: list[float] | None = None, grid_points: int = 45) -> np.ndarray:
    """The C values to search, sorted ascending (strong to weak regularisation).

    Default: ``1 / logspace(-6, 5, grid_points)``, i.e. C from 1e6 down to 1e-5.
    """
    if c_values is None:
        if grid_points < 1:
            raise ValueError(f"grid_points must be >= 1, got {grid_points}")
        cs = 1.0 / np.logspace(-6, 5, grid_points)
    else:
        cs = np.asarray(list(c_values), dtype=np.float64)
    if cs.size == 0 or not np.all(np.isfinite(cs)) or np.any(cs <= 0):
        raise ValueError(f"C values must be a non-empty list of positive finite numbers, got {list(cs)}")
    return np.unique(cs)


# Rows upcast to float64 at once for the standardiser's sums: 4,096 x 2,048 x 8 B = 64 MB.
_ROWS = 4096


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of ``x`` (float64 sums over chunks of rows, so no float64 copy of ``x``);
    a constant feature gets std 1 (it becomes 0)."""
    n = len(x)
    mean = sum(x[lo:lo + _ROWS].sum(0, dtype=np.float64) for lo in range(0, n, _ROWS)) / n
    var = sum(((x[lo:lo + _ROWS] - mean) ** 2).sum(0) for lo in range(0, n, _ROWS)) / n
    std = np.sqrt(var)
    return mean.astype(np.float32), np.where(std > 0, std, 1.0).astype(np.float32)


def _to_tensor(x: np.ndarray, mean: np.ndarray, std: np.ndarray, device: str, *,
               inplace: bool = False) -> torch.Tensor:
    """``(x - mean) / std`` as a float32 tensor on ``device``; ``inplace``: in ``x``'s own memory
    (an array the caller no longer needs: 1.4 GB less for CheXpert's training features)."""
    x = np.asarray(x, dtype=np.float32)
    t = torch.from_numpy(x if inplace and x.flags.writeable else x.copy())
    return t.sub_(torch.from_numpy(mean)).div_(torch.from_numpy(std)).to(device).contiguous()


# ---------------------------------------------------------------- the objective


class LogisticObjective:
    """Mean cross-entropy + ``lam/2 ||W||^2`` for K stacked problems on the same data.

    A problem's parameters are one row ``theta = [W (C x d) row-major, b (C)]``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_classes: int) -> None:
        self.x, self.n_classes = x, n_classes
        self.n, self.d = x.shape
        self.y = y.to(x.device).long()
        self.onehot = torch.nn.functional.one_hot(self.y, n_classes).to(x.dtype).unsqueeze(1)

    @property
    def size(self) -> int:
        return self.n_classes * (self.d + 1)

    def logits(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """(n, K, C) logits of ``x`` for each of the K parameter rows."""
        k, c, d = theta.shape[0], self.n_classes, self.d
        w = theta[:, : c * d].reshape(k * c, d)
        return (x @ w.T).view(len(x), k, c) + theta[:, c * d:]

    def __call__(self, theta: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective (float64, K) and gradient (K, p) of every row of ``theta``."""
        k, cd = theta.shape[0], self.n_classes * self.d
        z = self.logits(self.x, theta)
        lse = torch.logsumexp(z, dim=2)
        nll = lse - z.gather(2, self.y.view(-1, 1, 1).expand(-1, k, 1)).squeeze(2)
        w = theta[:, :cd]
        # Sums in float64: near the optimum the decrease per step is below float32
        # resolution of the objective, and the line search must still see it.
        f = nll.double().mean(0) + 0.5 * lam.double() * (w.double() ** 2).sum(1)
        g_logits = (torch.exp(z - lse.unsqueeze(2)) - self.onehot) / self.n
        g_w = (g_logits.reshape(self.n, -1).T @ self.x).view(k, cd) + lam.unsqueeze(1) * w
        return f, torch.cat([g_w, g_logits.sum(0)], dim=1)


# ---------------------------------------------------------------- batched L-BFGS


@dataclass
class LbfgsResult:
    """Per-problem solution and diagnostics; ``status`` is converged/max_iter/line_search."""

    theta: torch.Tensor
    iters: np.ndarray
    grad_max: np.ndarray
    status: list[str]

    @property
    def converged(self) -> np.ndarray:
        return np.array([s == "converged" for s in self.status])


class _History:
    """Circular L-BFGS memory for a batch of problems that all step together."""

    def __init__(self, m: int, k: int, p: int, like: torch.Tensor) -> None:
        self.s = like.new_zeros(m, k, p)
        self.y = like.new_zeros(m, k, p)
        self.rho = like.new_zeros(m, k)
        self.gamma = like.new_ones(k)
        self.count, self.head, self.m = 0, 0, m

    def keep(self, rows: torch.Tensor) -> None:
        self.s, self.y = self.s[:, rows], self.y[:, rows]
        self.rho, self.gamma = self.rho[:, rows], self.gamma[rows]

    def push(self, s: torch.Tensor, y: torch.Tensor) -> None:
        sy, yy = (s * y).sum(1), (y * y).sum(1)
        # Strong convexity gives s.y > 0; a pair that violates it numerically is dropped
        # (rho = 0 makes it a no-op in the two-loop recursion).
        ok = sy > 1e-10 * yy.clamp_min(1e-30)
        self.s[self.head], self.y[self.head] = s, y
        self.rho[self.head] = torch.where(ok, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        self.gamma = torch.where(ok, sy / yy.clamp_min(1e-30), self.gamma)
        self.head, self.count = (self.head + 1) % self.m, min(self.count + 1, self.m)

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        """-H g by the two-loop recursion, vectorised over problems."""
        q, alphas = -g.clone(), []
        slots = [(self.head - 1 - i) % self.m for i in range(self.count)]
        for j in slots:
            a = self.rho[j] * (self.s[j] * q).sum(1)
            q -= a.unsqueeze(1) * self.y[j]
            alphas.append(a)
        q *= self.gamma.unsqueeze(1)
        for j, a in zip(reversed(slots), reversed(alphas)):
            b = self.rho[j] * (self.y[j] * q).sum(1)
            q += (a - b).unsqueeze(1) * self.s[j]
        return q


def _line_search(fun, theta, lam, f, g, d, t0, max_ls: int = 25):
    """Backtracking from ``t0`` per problem: Armijo, or its derivative form near the optimum.

    The derivative form (Hager-Zhang's approximate Wolfe test) accepts a step whose
    directional derivative has dropped enough while f did not rise beyond rounding;
    it keeps float32 solves progressing where f differences are at noise level.
    Returns new theta, f, g and a mask of problems that found a step.
    """
    gd = (g * d).sum(1).double()
    t = t0.clone()
    new_theta, new_f, new_g = theta.clone(), f.clone(), g.clone()
    todo = torch.ones(len(theta), dtype=torch.bool, device=theta.device)
    for _ in range(max_ls):
        rows = todo.nonzero().squeeze(1)
        trial = theta[rows] + t[rows].unsqueeze(1) * d[rows]
        f_t, g_t = fun(trial, lam[rows])
        armijo = f_t <= f[rows] + 1e-4 * t[rows].double() * gd[rows]
        approx = (f_t <= f[rows] + 1e-6 * f[rows].abs()) & ((g_t * d[rows]).sum(1).double() <= -0.8 * gd[rows])
        ok = armijo | approx
        acc = rows[ok]
        new_theta[acc], new_f[acc], new_g[acc] = trial[ok], f_t[ok], g_t[ok]
        todo[acc] = False
        if not todo.any():
            break
        t[todo] *= 0.5
    return new_theta, new_f, new_g, ~todo


def lbfgs(fun, theta0: torch.Tensor, lam: torch.Tensor, *, max_iter: int = 1000,
          tol: float = 1e-4, memory: int = 10) -> LbfgsResult:
    """Minimise K independent problems at once; ``fun(theta, lam) -> (f, g)`` row-wise.

    A problem stops when ``max|g| <= tol`` (scipy's ``gtol``, as scikit-learn uses it),
    when no step decreases it (``line_search``) or after ``max_iter`` iterations.
    """
    k, p = theta0.shape
    out = theta0.clone()
    iters, grad_max, status = np.zeros(k, np.int64), np.zeros(k), ["max_iter"] * k
    ids = torch.arange(k, device=theta0.device)
    theta, lam = theta0.clone(), lam.clone()
    f, g = fun(theta, lam)
    hist = _History(memory, k, p, theta0)
    found = torch.ones(k, dtype=torch.bool, device=theta0.device)
    for it in range(max_iter + 1):
        gmax = g.abs().amax(1)
        stop = (gmax <= tol) | ~found
        if it == max_iter:
            stop = torch.ones_like(stop)
        if stop.any():
            for row in stop.nonzero().squeeze(1).tolist():
                pid = int(ids[row])
                out[pid], iters[pid], grad_max[pid] = theta[row], it, float(gmax[row])
                status[pid] = ("converged" if gmax[row] <= tol else
                               "line_search" if not found[row] else "max_iter")
            keep = (~stop).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            ids, theta, lam, f, g = ids[keep], theta[keep], lam[keep], f[keep], g[keep]
            hist.keep(keep)
        d = hist.direction(g)
        # First step: no curvature known yet, so scale by 1/|g|_1 (as torch.optim.LBFGS).
        t0 = (torch.ones_like(lam) if hist.count else (1.0 / g.abs().sum(1)).clamp(max=1.0))
        new_theta, f, new_g, found = _line_search(fun, theta, lam, f, g, d, t0)
        hist.push(new_theta - theta, new_g - g)
        theta, g = new_theta, new_g
    return LbfgsResult(out, iters, grad_max, status)


# ---------------------------------------------------------------- fitting and selection


@dataclass
class Fit:
    """Solutions for a sorted C grid and their diagnostics."""

    c_values: np.ndarray
    solver: LbfgsResult


def fit_path(obj: LogisticObjective, c_values: np.ndarray, *, strategy: str,
             max_iter: int, tol: float) -> Fit:
    """Solve every C of the (ascending) grid; ``sequential``: one at a time, warm-started."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    lams = torch.tensor(1.0 / (c_values * obj.n), dtype=obj.x.dtype, device=obj.x.device)
    start = obj.x.new_zeros(1, obj.size)
    if strategy == "batched":
        return Fit(c_values, lbfgs(obj, start.expand(len(c_values), -1), lams, max_iter=max_iter, tol=tol))
    parts = []
    for i in range(len(c_values)):
        res = lbfgs(obj, start, lams[i:i + 1], max_iter=max_iter, tol=tol)
        start = res.theta
        parts.append(res)
    theta = torch.cat([r.theta for r in parts])
    return Fit(c_values, LbfgsResult(theta, np.concatenate([r.iters for r in parts]),
                                     np.concatenate([r.grad_max for r in parts]),
                                     [s for r in parts for s in r.status]))


def select_c(c_values: np.ndarray, val_scores: np.ndarray) -> int:
    """Index of the best val score; ties go to the smallest C (stronger regularisation)."""
    order = np.argsort(c_values, kind="stable")
    return int(order[np.argmax(val_scores[order])])


@dataclass
class ProbeResult:
    """What the linear probe selected and predicted; ``sweep`` is per C of the grid."""

    c: float
    val_score: float
    test_probs: np.ndarray
    refit: LbfgsResult
    sweep: Fit
    val_scores: np.ndarray
    n_val: int
    strategy: str
    device: str


def _log_unconverged(kind: str, c_values: np.ndarray, res: LbfgsResult, max_iter: int) -> None:
    for c, s, it, gm in zip(c_values, res.status, res.iters, res.grad_max):
        if s != "converged":
            log.warning("linear probe %s fit with C=%.3g did not converge (%s after %d iterations, "
                        "max|grad|=%.2e; max_iter=%d)", kind, c, s, it, gm, max_iter)


def linear_probe(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *, n_classes: int,
    c_values: np.ndarray, val_fraction: float = 0.2, seed: int = 0, device: str = "cpu",
    strategy: str | None = None, max_iter: int = 1000, tol: float = 1e-4, metric: str = "accuracy",
    copy: bool = True,
) -> ProbeResult:
    """Select C by ``metric`` on a seeded 80/20 split of the training set, refit cold on all of it.

    ``copy=False`` (as scikit-learn's ``copy_X``) standardises ``x_train`` and ``x_test`` in
    place for the refit, so the peak holds the features once plus the selection split.
    """
    strategy = strategy or "batched"
    cs = c_grid(list(c_values))
    tr, va = stratified_split(y_train, val_fraction, seed)
    part = x_train[tr]  # a copy (fancy indexing): standardised in its own memory
    mean, std = standardiser(part)
    obj = LogisticObjective(_to_tensor(part, mean, std, device, inplace=True), torch.from_numpy(y_train[tr]),
                            n_classes)
    del part
    sweep = fit_path(obj, cs, strategy=strategy, max_iter=max_iter, tol=tol)
    _log_unconverged("selection", cs, sweep.solver, max_iter)
    z_val = obj.logits(_to_tensor(x_train[va], mean, std, device, inplace=True), sweep.solver.theta)
    val_scores = selection_score(z_val.argmax(2).cpu().numpy(), y_train[va], metric)
    del obj, z_val
    best = select_c(cs, val_scores)
    mean, std = standardiser(x_train)
    full = LogisticObjective(_to_tensor(x_train, mean, std, device, inplace=not copy), torch.from_numpy(y_train),
                             n_classes)
    refit = fit_path(full, cs[best:best + 1], strategy="batched", max_iter=max_iter, tol=tol).solver
    _log_unconverged("refit", cs[best:best + 1], refit, max_iter)
    z_test = _to_tensor(x_test, mean, std, device, inplace=not copy)
    probs = torch.softmax(full.logits(z_test, refit.theta)[:, 0], dim=1)
    return ProbeResult(float(cs[best]), float(val_scores[best]), probs.cpu().numpy(),
                       refit, sweep, val_scores, len(va), strategy, device)


# ---------------------------------------------------------------- outputs


def _details(res: ProbeResult, n_grid: int, max_iter: int) -> dict[str, Any]:
    r = res.refit
    return {
        "C": res.c, "val_score": res.val_score, "converged": bool(r.converged[0]), "iters": int(r.iters[0]),
        "grad_max": float(r.grad_max[0]), "stop": r.status[0], "max_iter": max_iter, "grid_points": n_grid,
        "sweep_unconverged": int((~res.sweep.solver.converged).sum()),
        "solver": f"lbfgs-float32-{res.strategy}", "device": res.device.split(":")[0],
    }


def evaluate_linear(
    *, features: str | os.PathLike, rows: str | os.PathLike, predictions: str | os.PathLike,
    c_values: list[float] | None = None, grid_points: int = 45, val_fraction: float = 0.2,
    seed: int = 0, device: str = "auto", n_bootstrap: int = 1000, max_iter: int = 1000,
    metric: str = "accuracy",
) -> None:
    """Linear probe of one (model, dataset) feature file: rows CSV + test predictions .npz.

    C is selected by the dataset's headline ``metric`` on the val part (as published).
    Features are standardised with statistics of the training part only. ``c_values``
    overrides the default grid of ``grid_points`` values from 1e6 to 1e-5.
    """
    fs = load_features(features)
    device = resolve_device(device)
    cs = c_grid(c_values, grid_points)
    x_tr, y_tr = fs.part("train")
    x_te, y_te = fs.part("test")
    res = linear_probe(x_tr, y_tr, x_te, n_classes=fs.num_classes, c_values=cs, val_fraction=val_fraction,
                       seed=seed, device=device, max_iter=max_iter, metric=metric, copy=False)
    classes = list(fs.meta.get("classes", [])) or [str(i) for i in range(fs.num_classes)]
    write_classification(
        rows=rows, predictions=predictions, protocol="linear", setting=MANYSHOT, probs=res.test_probs,
        labels=y_te, positions=np.flatnonzero(fs.split == "test"), classes=classes, meta=fs.meta, seed=seed,
        n_bootstrap=n_bootstrap, details=_details(res, len(cs), max_iter),
        extras={"sweep_c": cs, "sweep_val_score": res.val_scores, "selection_metric": metric,
                "sweep_iters": res.sweep.solver.iters, "sweep_grad_max": res.sweep.solver.grad_max,
                "sweep_status": np.array(res.sweep.solver.status, dtype=str), "selected_c": res.c},
    )
