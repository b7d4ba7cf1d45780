"""Benchmark: the linear-probe C sweep, published-style scikit-learn loop vs ours.

Not a test. Both methods run in one process on the same synthetic standardised
features (defaults as in docs/performance.md: N=4000 training images,
d=2048, 5 classes) with the same seeded 80/20 split, the same 45-value grid, the same
``max_iter`` and gradient tolerance; each selects C on val, refits on the full training
set and scores the test set once.

    python bench/linear.py                     # CPU, and CUDA too when present
    python bench/linear.py --grid-points 9     # quicker

(a) scikit-learn LogisticRegression(lbfgs, float64), one cold fit per C (the published
    loop, without its warm starts and silenced warnings);
(b) medtransfer.protocols.linear.linear_probe: float32 L-BFGS, all C values as one batch of
    independent problems (the default on every device); with --sequential also the
    one-C-at-a-time warm-started path.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def synthetic(n: int, n_test: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Class-structured features with correlated dimensions, like pooled CNN features."""
    rng = np.random.default_rng(seed)
    latent_dim = 64
    means = rng.normal(0.0, 0.12, size=(classes, latent_dim))
    mixing = rng.normal(0.0, 1.0, size=(latent_dim, d)) / np.sqrt(latent_dim)
    y = rng.integers(0, classes, size=n + n_test)
    z = means[y] + rng.normal(size=(n + n_test, latent_dim))
    x = np.maximum(z @ mixing + 0.7 * rng.normal(size=(n + n_test, d)), 0.0).astype(np.float32)
    return x[:n], y[:n], x[n:], y[n:]


def sklearn_probe(x_tr, y_tr, x_te, y_te, cs, val_fraction, seed, max_iter, tol):
    """Published-style loop: a cold scikit-learn fit per C, then a cold refit."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from medtransfer.protocols.linear import select_c, standardiser, stratified_split

    tr, va = stratified_split(y_tr, val_fraction, seed)
    mean, std = standardiser(x_tr[tr])
    xa, xv = (x_tr[tr] - mean) / std, (x_tr[va] - mean) / std
    correct, unconverged = np.zeros(len(cs), np.int64), 0
    for i, c in enumerate(cs):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, tol=tol)
            clf.fit(xa.astype(np.float64), y_tr[tr])
        unconverged += any(issubclass(w.category, ConvergenceWarning) for w in caught)
        correct[i] = int((clf.predict(xv.astype(np.float64)) == y_tr[va]).sum())
    best = select_c(cs, correct)
    mean, std = standardiser(x_tr)
    clf = LogisticRegression(C=cs[best], solver="lbfgs", max_iter=max_iter, tol=tol)
    clf.fit(((x_tr - mean) / std).astype(np.float64), y_tr)
    acc = float((clf.predict(((x_te - mean) / std).astype(np.float64)) == y_te).mean())
    return float(cs[best]), acc, unconverged


def ours(x_tr, y_tr, x_te, y_te, cs, val_fraction, seed, max_iter, tol, device, strategy=None):
    import torch

    from medtransfer.protocols.linear import linear_probe

    res = linear_probe(x_tr, y_tr, x_te, n_classes=int(y_tr.max()) + 1, c_values=cs, val_fraction=val_fraction,
                       seed=seed, device=device, strategy=strategy, max_iter=max_iter, tol=tol)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    acc = float((res.test_probs.argmax(1) == y_te).mean())
    return res.c, acc, int((~res.sweep.solver.converged).sum())


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def report(name: str, seconds: float, out: tuple, base: float | None) -> None:
    c, acc, unconv = out
    ratio = f"  speed-up vs sklearn {base / seconds:6.2f}x" if base else ""
    print(f"{name:<34s} {seconds:8.2f} s  selected C={c:.4g}  test acc={acc:.4f}  "
          f"unconverged sweep fits={unconv}{ratio}", flush=True)


def main() -> None:
    import torch

    from medtransfer.protocols.linear import c_grid

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--grid-points", type=int, default=45)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--sequential", action="store_true", help="also time the sequential warm-started path")
    args = ap.parse_args()

    data = synthetic(args.n, args.n_test, args.d, args.classes, args.seed)
    cs = c_grid(None, args.grid_points)
    common = dict(cs=cs, val_fraction=0.2, seed=args.seed, max_iter=args.max_iter, tol=args.tol)
    print(f"N={args.n} d={args.d} classes={args.classes} grid={len(cs)} max_iter={args.max_iter} "
          f"tol={args.tol} torch threads={torch.get_num_threads()}", flush=True)
    base = None
    if not args.skip_sklearn:
        base, out = timed(sklearn_probe, *data, **common)
        report("(a) sklearn per-C cold, float64", base, out, None)
    t, out = timed(ours, *data, **common, device="cpu")
    report("(b) ours CPU, batched float32", t, out, base)
    if args.sequential:
        t, out = timed(ours, *data, **common, device="cpu", strategy="sequential")
        report("(b') ours CPU, sequential warm path", t, out, base)
    if torch.cuda.is_available():
        ours(*data, **{**common, "cs": cs[:3]}, device="cuda")  # warm-up: CUDA context, kernels
        t, out = timed(ours, *data, **common, device="cuda")
        report("(c) ours CUDA, batched float32", t, out, base)


if __name__ == "__main__":
    main()
