"""Demo datasets generated from a seed: the look of real modalities, a learnable signal.

They are written as image files plus a ``labels.csv`` (``path,label,split,patient``),
the form users' own data takes, so the demo runs the real loading path
(CSV adapter -> index -> decoded cache) rather than a shortcut.

- ``demo_cxr``: grey-scale chest-radiograph-like PNGs. Label 1 = an effusion-like
  opacity that fills the base of one lung (with a meniscus), 0 = clear lungs.
- ``demo_fundus``: colour fundus-like JPEGs. Grade 0 = no lesions, 1 = a few small
  red dots (microaneurysms), 2 = many dots plus yellow exudates and blot haemorrhages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from medtransfer.writers import save_image, write_csv

DEMO_KINDS = {"demo_cxr": ("no_effusion", "effusion"), "demo_fundus": ("grade0", "grade1", "grade2")}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def _blur(img: np.ndarray, passes: int = 2) -> np.ndarray:
    """A cheap separable box blur (keeps the generator dependency-free and fast)."""
    for _ in range(passes):
        img = (np.roll(img, 1, 0) + img + np.roll(img, -1, 0)) / 3
        img = (np.roll(img, 1, 1) + img + np.roll(img, -1, 1)) / 3
    return img


def chest_image(rng: np.random.RandomState, label: int, size: int) -> np.ndarray:
    """One grey-scale radiograph-like image (uint8 H x W)."""
    yy, xx = _grid(size)
    img = 0.55 + 0.1 * rng.rand() - 0.25 * ((xx - 0.5) ** 2 * 4)  # soft tissue, darker at the edges
    lungs = []
    for side in (-1, 1):
        cx, cy = 0.5 + side * (0.2 + 0.02 * rng.randn()), 0.48 + 0.02 * rng.randn()
        inside = ((xx - cx) / 0.15) ** 2 + ((yy - cy) / 0.3) ** 2 < 1
        img = np.where(inside, img - 0.35, img)  # aerated lung is dark on a radiograph
        lungs.append((cx, cy, inside))
    img += 0.25 * np.exp(-((xx - 0.5) / 0.04) ** 2)  # spine and mediastinum
    for k in range(7):  # ribs: faint bright arcs
        img += 0.06 * np.exp(-((yy - (0.22 + 0.08 * k) - 0.1 * (xx - 0.5) ** 2 * 4) / 0.012) ** 2)
    if label == 1:
        cx, cy, inside = lungs[rng.randint(2)]
        level = cy + 0.3 - (0.15 + 0.12 * rng.rand())
        meniscus = level - 0.05 * ((xx - cx) / 0.15) ** 2
        img = np.where(inside & (yy > meniscus), img + 0.3 + 0.05 * rng.rand(), img)
    img = _blur(img + 0.04 * rng.randn(size, size)) + 0.015 * rng.randn(size, size)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def fundus_image(rng: np.random.RandomState, label: int, size: int) -> np.ndarray:
    """One colour fundus-like image (uint8 H x W x 3)."""
    yy, xx = _grid(size)
    r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
    disc = r < 0.46
    shade = np.clip(1 - 1.4 * r ** 2, 0, 1)
    base = np.array([0.75, 0.32, 0.12]) * (0.9 + 0.2 * rng.rand())
    img = shade[..., None] * base[None, None, :]
    ox, oy = 0.5 + rng.choice([-1, 1]) * 0.22, 0.5 + 0.03 * rng.randn()
    img += 0.5 * np.exp(-(((xx - ox) ** 2 + (yy - oy) ** 2) / 0.004))[..., None] * np.array([1.0, 0.9, 0.5])
    for _ in range(6):  # vessels arching from the optic disc
        bend, phase = 0.6 + 0.6 * rng.rand(), rng.rand() * 2 * np.pi
        d = np.abs(yy - oy - bend * (xx - ox) ** 2 * np.sign(np.sin(phase)) - 0.1 * np.cos(phase) * (xx - ox))
        img -= (0.18 * np.exp(-(d / 0.006) ** 2))[..., None] * np.array([0.3, 1.0, 1.0])
    counts = {0: (0, 0), 1: (4, 0), 2: (14, 6)}[label]
    for n, colour, radius in ((counts[0], (0.35, 0.02, 0.02), 0.012), (counts[1], (1.0, 0.9, 0.35), 0.016)):
        for _ in range(n):
            angle, dist = rng.rand() * 2 * np.pi, 0.3 * np.sqrt(rng.rand())
            cx, cy, rad = 0.5 + dist * np.cos(angle), 0.5 + dist * np.sin(angle), radius * (0.7 + 0.8 * rng.rand())
            spot = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / rad ** 2))[..., None]
            img = img * (1 - spot) + spot * np.array(colour)
    img = _blur(img + 0.02 * rng.randn(size, size, 3), 1)
    img = np.where(disc[..., None], img, 0.0)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate(
    kind: str, out_dir: str | os.PathLike, *, n_images: int = 240, size: int = 96, seed: int = 0,
    test_fraction: float = 0.25, images_per_patient: int = 2,
) -> pd.DataFrame:
    """Write ``n_images`` images and ``labels.csv`` under ``out_dir``; return the labels frame.

    Classes are balanced; each patient contributes ``images_per_patient`` images of the
    same label, and the split is by patient (stratified by class) so the demo's split
    never leaks a patient.
    """
    if kind not in DEMO_KINDS:
        raise ValueError(f"unknown demo dataset kind {kind!r}; expected one of {sorted(DEMO_KINDS)}")
    classes = DEMO_KINDS[kind]
    rng = np.random.RandomState(seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    n_patients = max(len(classes) * 2, n_images // images_per_patient)
    patient_labels = np.arange(n_patients) % len(classes)
    test_patients: set[int] = set()
    for label in range(len(classes)):  # stratified: every class in both splits
        members = rng.permutation(np.flatnonzero(patient_labels == label))
        test_patients.update(members[: max(1, int(round(test_fraction * len(members))))].tolist())
    rows = []
    for i in range(n_images):
        patient = i % n_patients
        label = int(patient_labels[patient])
        name = f"images/{kind}_{i:05d}.{'png' if kind == 'demo_cxr' else 'jpg'}"
        pixels = (chest_image if kind == "demo_cxr" else fundus_image)(rng, label, size)
        save_image(out_dir / name, pixels, "PNG" if kind == "demo_cxr" else "JPEG", quality=92)
        rows.append({"path": name, "label": classes[label],
                     "split": "test" if patient in test_patients else "train",
                     "patient": f"{kind}_p{patient:04d}"})
    frame = pd.DataFrame(rows)
    write_csv(out_dir / "labels.csv", frame)
    return frame
