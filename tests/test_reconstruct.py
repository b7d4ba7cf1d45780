"""Reconstruction protocol: generator, batched inversion, LPIPS scores, figures."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from fakes import toy_index, toy_weights
from medtransfer import protocols as registry
from medtransfer.protocols.reconstruct import (
    LPIPS_BACKBONES,
    LPIPS_NETS,
    METRICS,
    TARGET_LAYERS,
    invert,
    load_lpips,
    load_reconstructions,
    plot_grid,
    plot_lpips,
    score,
    target_layer,
    write_demo_lpips_weights,
)
from medtransfer.protocols.reconstruct.generator import (
    SkipConfig,
    SkipGenerator,
    build_generators,
    make_noise,
    member_slice,
    noise_size,
    output_crop,
)
from medtransfer.protocols.reconstruct.inversion import FeatureTap, image_seeds, invert_batch
from medtransfer.protocols.reconstruct.perceptual import demo_lpips_bytes, read_features
from medtransfer.protocols.shared import draw_test_positions
from medtransfer.results import details, read_rows
from medtransfer.weights.backbones import WeightsMeta, build_backbone, normalise, save_weights

# A small generator (3 scales) for fast tests; the published one is tested for shape.
TINY = SkipConfig(in_channels=8, down=(8, 16, 16), up=(8, 16, 16), skip=(2, 2, 2),
                  kernel_down=(3, 3, 3), kernel_up=(3, 3, 3))

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory, one_thread):
    """A random resnet18 and 10 cached images (6 train, 4 test) of 64 px."""
    root = tmp_path_factory.mktemp("recon")
    toy_weights(root / "weights.pt", demo=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1)[None]  # smooth gradients, not noise
    np.save(root / "cache.npy", np.clip(base + rng.integers(0, 40, (10, 1, 1, 3)), 0, 255).astype(np.uint8))
    toy_index(root / "index.csv", np.arange(10) % 2, n_train=6)
    return root


@pytest.fixture(scope="module")
def grey_data(tmp_path_factory, one_thread):
    """A random resnet18 that histogram-equalises its input (as MIMIC-CheXpert's models) and 6
    grey 64 px images (4 test) of 8 px blocks in 12 well-separated grey levels."""
    root = tmp_path_factory.mktemp("histeq")
    torch.manual_seed(0)
    save_weights(root / "weights.pt", build_backbone("resnet18").state_dict(),
                 WeightsMeta(arch="resnet18", model="toy", mean=None, std=None, normalisation="histeq", demo=True))
    levels = np.linspace(50, 230, 12).round()
    blocks = levels[np.random.default_rng(0).integers(0, 12, (6, 8, 8))].repeat(8, axis=1).repeat(8, axis=2)
    np.save(root / "cache.npy", np.repeat(blocks[..., None], 3, axis=-1).astype(np.uint8))
    toy_index(root / "index.csv", np.arange(6) % 2, n_train=2)
    return root


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lpips")
    return {net: write_demo_lpips_weights(root / LPIPS_BACKBONES[net].filename, net) for net in LPIPS_NETS}


def _invert(data, out, **kw):
    args = dict(weights=data / "weights.pt", cache=data / "cache.npy", index=data / "index.csv", out_npz=out,
                model="toy", dataset="grad", n_images=3, steps=4, seed=1, device="cpu", generator=TINY,
                log_every=0)
    return invert(**{**args, **kw})


def _expected_parameters(cfg: SkipConfig) -> int:
    """Count of the published layer list, written out independently of the module."""
    conv = lambda c_in, c_out, k: c_in * c_out * k * k + c_out  # noqa: E731  (weights + bias)
    bn = lambda c: 2 * c  # noqa: E731
    total, c_in, last = 0, cfg.in_channels, len(cfg.down) - 1
    for i, (d, u, s, kd, ku) in enumerate(zip(cfg.down, cfg.up, cfg.skip, cfg.kernel_down, cfg.kernel_up)):
        k = d if i == last else cfg.up[i + 1]
        total += conv(c_in, s, 1) + bn(s)  # skip branch
        total += conv(c_in, d, kd) + bn(d) + conv(d, d, kd) + bn(d)  # down, stride 2 then same size
        total += bn(s + k) + conv(s + k, u, ku) + bn(u) + conv(u, u, 1) + bn(u)  # after the concat
        c_in = d
    return total + conv(cfg.up[0], cfg.out_channels, 1)


def test_published_generator_shape_and_parameter_count():
    cfg = SkipConfig()
    assert cfg.down == cfg.up == (16, 32, 64, 128, 128, 128) and cfg.skip == (4,) * 6
    gen = SkipGenerator(cfg)
    assert sum(p.numel() for p in gen.parameters()) == _expected_parameters(cfg) == 2_606_763
    three = build_generators([1, 2, 3], cfg)
    assert sum(p.numel() for p in three.parameters()) == 3 * 2_606_763
    with torch.no_grad():
        out = three(make_noise([4, 5, 6], noise_size(64)))
    assert noise_size(224) == 256 and noise_size(64) == 73
    assert out.shape == (3, 3, 73, 73) and 0 <= out.min() and out.max() <= 1
    assert output_crop(out, 64).shape == (3, 3, 64, 64)
    with torch.no_grad():
        assert SkipGenerator(cfg)(make_noise([0], 256)).shape == (1, 3, 256, 256)


class _Concat(nn.Module):
    """Both branches' channels, centre-cropped to the smaller branch (the deep image prior's Concat)."""

    def __init__(self, skip: nn.Module, deeper: nn.Module) -> None:
        super().__init__()
        self.skip, self.deeper = skip, deeper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.skip(x), self.deeper(x)
        h, w = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
        crop = [t[:, :, (t.shape[2] - h) // 2:(t.shape[2] - h) // 2 + h, (t.shape[3] - w) // 2:(t.shape[3] - w) // 2 + w]
                for t in (a, b)]
        return torch.cat(crop, dim=1)


def _reference(cfg: SkipConfig) -> nn.Sequential:
    """One published generator with average-pool downsampling (a stride-1 convolution, then
    AvgPool2d(2)) and no output activation, from torch layers, independently of the module."""
    def conv(c_in: int, c_out: int, k: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, c_out, k, 1, (k - 1) // 2)

    def bn_act(c: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(c), nn.LeakyReLU(cfg.negative_slope)]

    def scale(i: int, c_in: int) -> nn.Sequential:
        d, u, s, kd, ku = cfg.down[i], cfg.up[i], cfg.skip[i], cfg.kernel_down[i], cfg.kernel_up[i]
        deeper = [conv(c_in, d, kd), nn.AvgPool2d(2), *bn_act(d), conv(d, d, kd), *bn_act(d)]
        last = i == len(cfg.down) - 1
        if not last:
            deeper.append(scale(i + 1, d))
        deeper.append(nn.Upsample(scale_factor=2, mode="nearest"))
        k = d if last else cfg.up[i + 1]
        return nn.Sequential(_Concat(nn.Sequential(conv(c_in, s, 1), *bn_act(s)), nn.Sequential(*deeper)),
                             nn.BatchNorm2d(s + k), conv(s + k, u, ku), *bn_act(u), conv(u, u, 1), *bn_act(u))

    return nn.Sequential(scale(0, cfg.in_channels), conv(cfg.up[0], cfg.out_channels, 1))


def _count(net: nn.Module, kind: type, **attrs) -> int:
    return sum(isinstance(m, kind) and all(getattr(m, k) == v for k, v in attrs.items()) for m in net.modules())


def _copy_parameters(source: nn.Module, target: nn.Module) -> None:
    """Every parameter in layer order (both list their layers in the deep image prior's order)."""
    mine, theirs = list(source.parameters()), list(target.parameters())
    assert len(mine) == len(theirs)
    with torch.no_grad():
        for a, b in zip(mine, theirs):
            assert a.shape == b.shape
            b.copy_(a)


def test_avg_downsampling_matches_a_reference_built_from_torch_layers():
    cfg = SkipConfig(downsample="avg", output="clip")
    ours, ref = build_generators([3], cfg).train(), _reference(cfg).train()
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters()) == 2_606_763
    _copy_parameters(ours, ref)
    noise = make_noise([4], 200)  # 200 = 25 * 8: the deeper scales' concats must crop
    with torch.no_grad():
        got, want = ours(noise), ref(noise)
    assert got.shape == want.shape == (1, 3, 192, 192)
    torch.testing.assert_close(got, want)
    assert got.min() < 0 or got.max() > 1  # no sigmoid: unbounded
    assert _count(ours, nn.AvgPool2d) == 6 and _count(ours, nn.Conv2d, stride=(2, 2)) == 0
    strided = SkipGenerator(replace(cfg, downsample="stride")).train()
    _copy_parameters(ours, strided)
    assert _count(strided, nn.AvgPool2d) == 0 and _count(strided, nn.Conv2d, stride=(2, 2)) == 6
    with torch.no_grad():
        other = strided(noise)
    assert other.shape != got.shape or not torch.allclose(other, got)
    squashed = SkipGenerator(replace(cfg, output="sigmoid")).train()
    squashed.load_state_dict(ours.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(squashed(noise), torch.sigmoid(want))


def test_avg_downsampling_needs_larger_images_and_says_so():
    with pytest.raises(ValueError, match=r"at least 112 px .*or set protocols\.reconstruction\.downsample: stride"):
        invert_batch(*_tap(torch.float32), torch.rand(1, 3, 64, 64), image_seeds(0, [0]), steps=1, lr=1e-3,
                     device="cpu", cfg=SkipConfig(downsample="avg"))


def test_members_never_see_each_other():
    gen = build_generators([10, 11, 12], TINY).train()
    noise = make_noise([20, 21, 22], 16, TINY.in_channels)
    out = gen(noise)
    out[1].sum().backward()
    for name, p in gen.named_parameters():
        g = p.grad.reshape(3, -1)
        assert torch.count_nonzero(g[0]) == 0 and torch.count_nonzero(g[2]) == 0, name
        assert torch.count_nonzero(g[1]) > 0 or "bias" in name, name
    changed = noise.clone()
    changed[:, TINY.in_channels:] += 1.0  # other members' inputs only
    with torch.no_grad():
        assert torch.equal(gen(noise)[0], gen(changed)[0])
    lone = SkipGenerator(TINY)
    lone.load_state_dict(member_slice(gen, 2))
    assert torch.equal(lone.state_dict()["head.weight"], build_generators([12], TINY).state_dict()["head.weight"])


def _tap(dtype: torch.dtype):
    torch.manual_seed(0)
    net = build_backbone("resnet18").eval().to(dtype)
    for p in net.parameters():
        p.requires_grad_(False)
    meta = WeightsMeta(arch="resnet18")
    return FeatureTap(net, "layer4"), (lambda x: normalise(x, meta))


def test_batched_equals_one_at_a_time():
    """float64 removes rounding differences between grouped and plain convolutions, so any
    difference left would be a real interaction between the images of a batch."""
    tap, norm = _tap(torch.float64)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seeds = image_seeds(0, [3, 7, 11])
    kw = dict(steps=30, lr=1e-3, device="cpu", cfg=TINY, dtype=torch.float64)
    batched = invert_batch(tap, norm, images, seeds, **kw)
    assert batched.losses[-1].max() < 0.5 * batched.losses[0].min()  # it did optimise
    for i in range(3):
        alone = invert_batch(tap, norm, images[i:i + 1], seeds[i:i + 1], **kw)
        np.testing.assert_allclose(batched.images[i].numpy(), alone.images[0].numpy(), rtol=0, atol=1e-9)
        np.testing.assert_allclose(batched.losses[:, i], alone.losses[:, 0], rtol=1e-6)


def test_output_clip_optimises_the_unbounded_output_and_saves_it_clipped():
    """clip: the backbone sees the raw output while optimising; sigmoid: always (0, 1). Both
    save images in [0, 1], and the final loss is that of the saved image."""
    tap, norm = _tap(torch.float32)
    seen: list[tuple[float, float]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        seen.append((float(x.detach().min()), float(x.detach().max())))
        return norm(x)

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        target = tap(norm(images))
    for output in ("clip", "sigmoid"):
        seen.clear()
        run = invert_batch(tap, recording, images, image_seeds(0, [1, 2]), steps=5, lr=1e-3, device="cpu",
                           cfg=replace(TINY, output=output))
        optimised = seen[1:-1]  # the first call is the target's, the last the saved image's
        assert len(optimised) == 5 and 0 <= run.images.min() and run.images.max() <= 1
        outside = [lo < 0 or hi > 1 for lo, hi in optimised]
        if output == "clip":
            assert all(outside) and np.all(run.clipped > 0)
        else:
            assert not any(outside) and np.all(run.clipped == 0)
        with torch.no_grad():
            saved = (tap(norm(run.images)) - target).pow(2).mean(dim=(1, 2, 3))
        np.testing.assert_allclose(run.final_loss, saved.numpy(), rtol=1e-5)


def test_feature_loss_falls_by_half_with_the_published_generator(data, tmp_path):
    meta = _invert(data, tmp_path / "r.npz", n_images=2, steps=12, generator=SkipConfig())
    run = load_reconstructions(tmp_path / "r.npz")
    assert run["losses"].shape == (12, 2)
    assert np.all(run["final_loss"] < 0.5 * run["losses"][0])
    assert meta["target_layer"] == "layer4" and meta["noise_size"] == 73


def test_invert_output_and_same_seed_same_bytes(data, tmp_path):
    meta = _invert(data, tmp_path / "a.npz")
    _invert(data, tmp_path / "b.npz")
    a, b = load_reconstructions(tmp_path / "a.npz"), load_reconstructions(tmp_path / "b.npz")
    for key in ("originals", "reconstructions", "positions", "losses", "final_loss", "seeds"):
        assert a[key].tobytes() == b[key].tobytes(), key
    assert a["reconstructions"].shape == (3, 64, 64, 3) and a["reconstructions"].dtype == np.float32
    assert a["originals"].dtype == np.uint8
    assert set(a["positions"]) <= {6, 7, 8, 9}  # test split only
    assert np.array_equal(a["originals"], np.load(data / "cache.npy")[a["positions"]])
    assert list(a["paths"]) == [f"i{p}.png" for p in a["positions"]]
    assert meta["weights_demo"] is True and meta["precision"] == "fp32" and meta["steps"] == 4
    _invert(data, tmp_path / "c.npz", seed=2)
    assert not np.array_equal(load_reconstructions(tmp_path / "c.npz")["seeds"], a["seeds"])


def test_positions_are_seeded_and_shared_by_models():
    split = np.array(["train", "test"] * 10)
    a, b = (draw_test_positions(split, 5, 3, "protocols.reconstruction") for _ in range(2))
    assert np.array_equal(a, b) and np.all(split[a] == "test") and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, draw_test_positions(split, 5, 4, "protocols.reconstruction"))


def test_settings_are_checked_before_any_work(data, tmp_path):
    missing = dict(weights=tmp_path / "none.pt", cache=tmp_path / "none.npy", index=tmp_path / "none.csv")
    for steps in (0, -3):
        with pytest.raises(ValueError, match=r"protocols\.reconstruction\.steps must be a positive integer"):
            _invert(data, tmp_path / "x.npz", steps=steps, **missing)
    with pytest.raises(ValueError, match=r"protocols\.reconstruction\.n_images must be a positive"):
        _invert(data, tmp_path / "x.npz", n_images=0, **missing)
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'"):
        _invert(data, tmp_path / "x.npz", precision="fp16", **missing)
    with pytest.raises(ValueError, match=r"protocols\.reconstruction\.downsample 'max' is unknown; "
                                         r"expected one of \['stride', 'avg'\]"):
        _invert(data, tmp_path / "x.npz", downsample="max", **missing)
    with pytest.raises(ValueError, match=r"protocols\.reconstruction\.output 'tanh' is unknown; "
                                         r"expected one of \['sigmoid', 'clip'\]"):
        _invert(data, tmp_path / "x.npz", output="tanh", **missing)
    with pytest.raises(ValueError, match=r"n_images=5 but dataset 'grad' .* has only 4 test images; "
                                         r"set protocols\.reconstruction\.n_images to at most 4"):
        _invert(data, tmp_path / "x.npz", n_images=5)
    assert not (tmp_path / "x.npz").exists()


def test_unknown_architecture_is_named(data, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"no target layer for architecture 'vgg16'; "
                                         r"known: \['densenet121', 'resnet18', 'resnet50'\]"):
        target_layer("vgg16")
    monkeypatch.delitem(TARGET_LAYERS, "resnet18")
    with pytest.raises(ValueError, match=r"architecture 'resnet18'; known: \['densenet121', 'resnet50'\]"):
        _invert(data, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_too_small_images_are_refused(data, tmp_path):
    with pytest.raises(ValueError, match=r"too small for the generator's 6 scales.*at least 57 px"):
        invert_batch(*_tap(torch.float32), torch.rand(1, 3, 48, 48), image_seeds(0, [0]), steps=1, lr=1e-3,
                     device="cpu")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision's `pretrained` deprecation, in lpips
def test_lpips_agrees_with_the_package_built_normally(tmp_path, monkeypatch):
    """The package's own path: torchvision finds the backbone file in its cache and loads
    the full state dict itself (SqueezeNet: small enough to write whole)."""
    import lpips

    spec = LPIPS_BACKBONES["squeeze"]
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), cache / spec.filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = lpips.LPIPS(net="squeeze", verbose=False)
    ours, dropped = load_lpips("squeeze", cache / spec.filename)
    assert dropped == ["classifier.1.bias", "classifier.1.weight"]
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, 3, 48, 48, generator=g), torch.rand(3, 3, 48, 48, generator=g)
    with torch.no_grad():
        ref = reference(x, y, normalize=True).flatten()
        got = ours(x, y, normalize=True).flatten()
        assert torch.all(ref > 0)
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
        assert torch.all(ours(x, x, normalize=True) == 0)


def test_demo_lpips_files(lpips_files, tmp_path):
    for net, path in lpips_files.items():
        assert path.read_bytes() == demo_lpips_bytes(net)  # same seed, same bytes
        state = torch.load(path, weights_only=True)
        assert all(k.startswith("features.") for k in state) == (net != "squeeze")
        model, _ = load_lpips(net, path)
        x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.all(model(x, x, normalize=True) == 0)
            assert torch.all(model(x, x.flip(-1), normalize=True) > 0)
    assert demo_lpips_bytes("alex", seed=1) != demo_lpips_bytes("alex", seed=0)


def test_lpips_file_is_checked_strictly(lpips_files, tmp_path):
    state = torch.load(lpips_files["alex"], weights_only=True)
    state.pop("features.0.weight")
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"not a torchvision alexnet file: missing features\.\['0\.weight'\], "
                                         r"unexpected \['head\.weight'\].*alexnet-owt-7be5be79\.pth"):
        read_features(tmp_path / "bad.pth", "alex")
    with pytest.raises(ValueError, match=r"unknown LPIPS backbone 'resnet'; expected one of \['alex', 'vgg', 'squeeze'\]"):
        read_features(lpips_files["alex"], "resnet")


def test_score_rows_and_per_image_values(data, lpips_files, tmp_path):
    _invert(data, tmp_path / "r.npz")
    scores = score(reconstructions_npz=tmp_path / "r.npz", lpips_weights=lpips_files, out_rows_csv=tmp_path / "rows.csv",
                   out_predictions_npz=tmp_path / "p.npz", seed=0, n_bootstrap=200, device="cpu")
    rows = read_rows([tmp_path / "rows.csv"]).set_index("metric")
    assert list(rows.index) == list(METRICS) and set(METRICS) == set(registry.get("reconstruction").metrics)
    assert set(rows["protocol"]) == {"reconstruction"} and set(rows["setting"]) == {"dip"}
    assert rows["weights_demo"].all() and (rows["n"] == 3).all()
    assert (rows["ci_low"] <= rows["value"]).all() and (rows["value"] <= rows["ci_high"]).all()
    info = details(rows.iloc[0])
    assert (info["model_view"], info["downsample"], info["output"], info["clipped_share"]) == (
        "as_is", "stride", "sigmoid", 0.0)
    with np.load(tmp_path / "p.npz") as p:
        np.testing.assert_allclose(p["lpips_mean"], (p["lpips_alex"] + p["lpips_vgg"] + p["lpips_squeeze"]) / 3)
        for metric in ("lpips_mean", "lpips_alex", "psnr", "ssim"):  # an ImageNet-normalised model sees the image
            assert np.array_equal(p[f"{metric}_model_view"], p[metric]), metric
        assert math.isclose(rows.loc["psnr", "value"], float(p["psnr"].mean()))
        assert p["positions"].tolist() == load_reconstructions(tmp_path / "r.npz")["positions"].tolist()
    assert np.all(scores["lpips_mean"] > 0) and np.all(scores["ssim"] < 1)


def test_a_perfect_reconstruction_scores_perfectly(data, lpips_files, tmp_path):
    _invert(data, tmp_path / "r.npz", n_images=2)
    with np.load(tmp_path / "r.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["reconstructions"] = arrays["originals"].astype(np.float32) / 255.0
    np.savez(tmp_path / "same.npz", **arrays)
    scores = score(reconstructions_npz=tmp_path / "same.npz", lpips_weights=lpips_files,
                   out_rows_csv=tmp_path / "rows.csv", out_predictions_npz=tmp_path / "p.npz", n_bootstrap=0)
    for net in LPIPS_NETS:
        assert np.all(scores[f"lpips_{net}"] == 0)
    np.testing.assert_allclose(scores["ssim"], 1.0)
    assert np.all(scores["psnr"] > 100)  # float32 storage of the reconstruction: not quite infinite
    assert json.loads(str(arrays["meta"]))["dataset"] == "grad"


def test_avg_and_clip_through_invert(data, tmp_path):
    meta = _invert(data, tmp_path / "r.npz", n_images=2, downsample="avg", output="clip")
    run = load_reconstructions(tmp_path / "r.npz")
    assert (meta["generator"]["downsample"], meta["generator"]["output"]) == ("avg", "clip")
    assert run["clipped"].shape == (2,) and np.all(run["clipped"] > 0)
    assert 0 <= run["reconstructions"].min() and run["reconstructions"].max() <= 1


def test_model_view_scores_a_histeq_model_up_to_a_tone_curve(grey_data, lpips_files, tmp_path):
    """A histogram-equalised model cannot tell an image from a monotone tone curve of it: as the
    model sees them, the original and its curve are the same image; as pixels they are not."""
    meta = _invert(grey_data, tmp_path / "r.npz", n_images=2)
    assert meta["normalisation"] == "histeq"
    kw = dict(lpips_weights=lpips_files, out_rows_csv=tmp_path / "rows.csv",
              out_predictions_npz=tmp_path / "p.npz", n_bootstrap=0)
    own = score(reconstructions_npz=tmp_path / "r.npz", **kw)
    assert not np.allclose(own["lpips_mean_model_view"], own["lpips_mean"])
    assert not np.allclose(own["ssim_model_view"], own["ssim"])
    with np.load(tmp_path / "r.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["reconstructions"] = ((arrays["originals"] / 255.0) ** 2).astype(np.float32)  # a darker tone curve
    np.savez(tmp_path / "curve.npz", **arrays)
    curve = score(reconstructions_npz=tmp_path / "curve.npz", **kw)
    for net in LPIPS_NETS:
        np.testing.assert_allclose(curve[f"lpips_{net}_model_view"], 0.0, atol=1e-7)
        assert np.all(curve[f"lpips_{net}"] > 0), net
    np.testing.assert_allclose(curve["ssim_model_view"], 1.0)
    assert np.all(curve["ssim"] < 0.9) and np.all(curve["psnr_model_view"] > 100)
    rows = read_rows([tmp_path / "rows.csv"]).set_index("metric")
    assert details(rows.loc["lpips_mean_model_view"])["model_view"] == "equalise_histogram/255"
    assert rows.loc["ssim_model_view", "value"] == pytest.approx(1.0)
    arrays.pop("clipped")
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match=r"old\.npz was written by an older medtransfer .* re-run the reconstruct"):
        score(reconstructions_npz=tmp_path / "old.npz", **kw)


def test_figures(data, lpips_files, tmp_path):
    _invert(data, tmp_path / "a.npz")
    _invert(data, tmp_path / "b.npz", model="other")
    plot_grid({"a": tmp_path / "a.npz", "b": tmp_path / "b.npz"}, tmp_path / "g.png", tmp_path / "g.pdf")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"
    for name in ("a", "b"):
        score(reconstructions_npz=tmp_path / f"{name}.npz", lpips_weights=lpips_files,
              out_rows_csv=tmp_path / f"{name}.csv", out_predictions_npz=tmp_path / f"{name}p.npz", n_bootstrap=0)
    plot_lpips({"a": tmp_path / "ap.npz", "b": tmp_path / "bp.npz"}, tmp_path / "l.png", tmp_path / "l.pdf")
    assert (tmp_path / "l.pdf").read_bytes()[:5] == b"%PDF-"
    _invert(data, tmp_path / "c.npz", seed=5, n_images=2)
    with pytest.raises(ValueError, match=r"c inverted other images than a .* use the same seed and n_images"):
        plot_grid({"a": tmp_path / "a.npz", "c": tmp_path / "c.npz"}, tmp_path / "x.png", tmp_path / "x.pdf")
    with pytest.raises(ValueError, match=r"unknown metric 'lpips'; expected one of"):
        plot_lpips({"a": tmp_path / "ap.npz"}, tmp_path / "x.png", tmp_path / "x.pdf", metric="lpips")
