import math

import numpy as np
import pytest
import torch
from torch import nn

from fakes import toy_index, toy_weights
from medtransfer.protocols.finetune import (
    EarlyStopping,
    TrainConfig,
    augment,
    crop_params,
    evaluate_finetune,
    make_optimizer,
    search_grid,
)
from medtransfer.results import details, read_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory, one_thread):
    """A random resnet18, 40 cached 32x32 images: class 0 dark, class 1 bright."""
    root = tmp_path_factory.mktemp("finetune")
    toy_weights(root / "weights.pt")
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    base = np.where(labels == 1, 190, 60)[:, None, None, None]
    images = np.clip(base + rng.normal(0, 25, size=(40, 32, 32, 3)), 0, 255).astype(np.uint8)
    np.save(root / "cache.npy", images)
    toy_index(root / "index.csv", labels, n_train=30, names=("dark", "bright"))
    return root


def _run(toy, tmp_path, name="a", **kw):
    args = dict(weights=toy / "weights.pt", cache=toy / "cache.npy", index=toy / "index.csv",
                rows=tmp_path / f"{name}.csv", predictions=tmp_path / f"{name}.npz", model="toy",
                dataset="brightness", steps=12, batch_size=8, lr=0.05, eval_every=4, patience=2,
                device="cpu", n_bootstrap=50)
    evaluate_finetune(**{**args, **kw})
    return args["rows"], args["predictions"]


def test_learns_the_signal_and_is_deterministic(toy, tmp_path):
    # lr 0.005: a random resnet18 trained from scratch on batches of 8 at lr 0.05 learnt the
    # training set but its BatchNorm running statistics, 15 steps old, put every test image in one
    # class on an AVX2-only EPYC (accuracy 0.5); at 0.005 the result is the same on every CPU tried.
    rows_a, preds_a = _run(toy, tmp_path, "a", early_stopping=False, steps=15, lr=0.005)
    rows_b, _ = _run(toy, tmp_path, "b", early_stopping=False, steps=15, lr=0.005)
    assert rows_a.read_bytes() == rows_b.read_bytes()
    frame = read_rows([rows_a]).set_index("metric")
    assert list(frame.index) == ["accuracy", "balanced_accuracy", "auroc"]
    assert (frame["protocol"] == "finetune").all() and (frame["setting"] == "manyshot").all()
    assert (frame["n"] == 10).all() and (frame["precision"] == "fp32").all()
    info = details(frame.iloc[0])
    assert (info["lr"], info["weight_decay"], info["best_step"], info["stopped_early"]) == (0.005, 1e-8, 15, False)
    assert info["train_images"] == 30
    with np.load(preds_a) as p:
        losses = p["losses"]
        assert p["probs"].shape == (10, 2) and list(p["positions"]) == list(range(30, 40))
    assert losses[-5:].mean() < losses[:5].mean()
    assert frame.loc["auroc", "value"] >= 0.8


def test_early_stopping_holds_out_val_and_records_the_best_step(toy, tmp_path):
    rows, preds = _run(toy, tmp_path)
    info = details(read_rows([rows]).iloc[0])
    assert (info["train_images"], info["val_images"], info["early_stopping"]) == (24, 6, True)
    with np.load(preds) as p:
        assert int(p["best_step"]) in (4, 8, 12)


def test_search_trains_each_pair_and_keeps_the_best(toy, tmp_path):
    rows, preds = _run(toy, tmp_path, search=True, lr_grid=[0.1, 1e-4], wd_grid=[0.0], steps=4, eval_every=2)
    assert details(read_rows([rows]).iloc[0])["search_runs"] == 2
    with np.load(preds) as p:
        scores = p["search_val_score"]
        assert scores.shape == (2,)
        assert float(p["lr"]) == [0.1, 1e-4][int(np.argmax(scores))] and float(p["weight_decay"]) == 0.0


def test_divergence_is_recorded_not_hidden(toy, tmp_path, caplog):
    rows, _ = _run(toy, tmp_path, lr=1e12, steps=4, eval_every=2, early_stopping=False)
    frame = read_rows([rows])
    assert details(frame.iloc[0])["diverged"] is True and frame["value"].isna().all()
    assert "diverged (non-finite loss)" in caplog.text


def test_bf16_path_runs_on_cpu(toy, tmp_path):
    rows, _ = _run(toy, tmp_path, precision="bf16", steps=2, early_stopping=False)
    assert (read_rows([rows])["precision"] == "bf16").all()


def test_early_stopping_restores_a_real_copy():
    model = nn.Linear(3, 2)
    stopper = EarlyStopping(patience=2)
    assert not stopper.update(0.5, 10, model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)  # in place: a non-copied state dict would follow this
    assert not stopper.update(0.4, 20, model)
    assert stopper.update(0.5, 30, model)  # a tie is no improvement
    stopper.restore(model)
    assert stopper.best_step == 10
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])


def test_cosine_schedule_is_stepped_per_iteration():
    model = nn.Linear(2, 2)
    cfg = TrainConfig(steps=10, batch_size=4, lr=0.1, weight_decay=1e-8, early_stopping=False, eval_every=5,
                      patience=1)
    opt, sched = make_optimizer(model, cfg)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.05 * (1 + math.cos(math.pi * t / 10)) for t in range(10)]
    assert lrs == pytest.approx(expected)


def test_crop_params_follow_random_resized_crop():
    boxes = crop_params(np.random.default_rng(0), 500, 32, 32)
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() >= 0.05 and area.max() <= 1.0 and np.median(area) > 0.3
    np.testing.assert_array_equal(boxes, crop_params(np.random.default_rng(0), 500, 32, 32))
    # a very wide image has no box with ratio <= 4/3 at full height: centred fallback
    fallback = crop_params(np.random.default_rng(0), 5, 10, 200, scale=(1.0, 1.0))
    assert (fallback == [0, 93, 10, 13]).all()


def test_augment_is_seeded_and_matches_torchvision_inside_the_crop():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resized_crop

    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 3, 8, 8), size=48, mode="bilinear")
    images = (smooth * 255).round().to(torch.uint8)
    out = augment(images, np.random.default_rng(1))
    assert out.dtype == torch.float32 and out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    torch.testing.assert_close(out, augment(images, np.random.default_rng(1)))
    rng = np.random.default_rng(1)
    boxes, flips = crop_params(rng, 6, 48, 48), rng.random(6) < 0.5
    for img, got, (top, left, h, w), flip in zip(images, out, boxes.tolist(), flips):
        ref = resized_crop(img.float(), top, left, h, w, [48, 48], interpolation=InterpolationMode.BICUBIC,
                           antialias=False).clamp(0, 255) / 255
        ref = ref.flip(-1) if flip else ref
        # same sampling points; only the bicubic taps at the crop's edge may differ
        margin = 2 * math.ceil(48 / min(h, w))
        inner = (slice(None), slice(margin, -margin), slice(margin, -margin))
        torch.testing.assert_close(got[inner], ref[inner], atol=1e-4, rtol=0)


def test_search_grid_divides_weight_decay_by_lr():
    grid = search_grid(None, None)
    assert len(grid) == 20 and grid[6] == (1e-2, pytest.approx(1e-6 / 1e-2))
    with pytest.raises(ValueError, match="lr_grid must hold positive"):
        search_grid([0.0], None)


def test_bad_arguments_raise(toy, tmp_path):
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        _run(toy, tmp_path, precision="fp16")
    np.save(tmp_path / "short.npy", np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="holds 5 images but .* lists 40; rebuild the cache"):
        _run(toy, tmp_path, cache=tmp_path / "short.npy")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_finetune_runs(toy, tmp_path):
    rows, _ = _run(toy, tmp_path, device="cuda", precision="bf16", steps=4, early_stopping=False)
    assert len(read_rows([rows])) == 3
