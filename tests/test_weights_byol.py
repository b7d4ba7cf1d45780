"""BYOL (JAX/Haiku dill pickle) -> torchvision: golden comparison with Haiku's own forward pass.

The golden test builds dm-haiku's ResNet-50 (the architecture and module names of BYOL's
encoder) with seeded random weights and BatchNorm statistics, writes it the way BYOL's
checkpointing.py does (dill, protocol 2, Haiku mapping containers, a jax-array ``rng``),
converts it, and compares pooled 2048-d features with Haiku on the same images.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import subprocess
import sys
import types
import typing
from pathlib import Path

import dill
import numpy as np
import pytest
import torch

from medtransfer.weights import byol
from medtransfer.weights.backbones import build_backbone
from medtransfer.weights.base import Converted
from medtransfer.weights.formats import FORMATS

COSINE_MIN = 0.99999
REL_MAX_ABS = 1e-4  # max |ours - haiku| / max |haiku|


class _ByolExperimentState(typing.NamedTuple):
    """BYOL's byol/byol_experiment.py state, same name and field order (dill pickles it by value)."""

    online_params: typing.Any
    target_params: typing.Any
    online_state: typing.Any
    target_state: typing.Any
    opt_state: typing.Any


class _TraceState(typing.NamedTuple):
    """Stands for the optax/LARS momentum state BYOL keeps in ``opt_state``."""

    trace: typing.Any


_ByolExperimentState.__module__ = "byol.byol_experiment"
_TraceState.__module__ = "optax._src.transform"


# --- the Haiku side ----------------------------------------------------------------------

def _haiku_resnet50(images: typing.Any, is_training: bool, features_only: bool) -> typing.Any:
    import haiku as hk

    net = hk.nets.ResNet50(num_classes=1000)
    if not features_only:
        return net(images, is_training=is_training)

    def skip_logits(next_f, args, kwargs, context):  # noqa: ANN001 - Haiku's interceptor API
        # BYOL's encoder has no logits layer: hand back the pooled features that enter it.
        if context.module is net.logits:
            return args[0]
        return next_f(*args, **kwargs)

    with hk.experimental.intercept_methods(skip_logits):
        return net(images, is_training=is_training)


def _random_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Seeded parameters: He-normal kernels, BN affine away from 1/0 (Haiku inits some scales to 0)."""
    fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    draws = {
        "w": lambda: rng.normal(0.0, np.sqrt(2.0 / fan_in) if len(shape) == 4 else 0.01, shape),
        "b": lambda: rng.normal(0.0, 0.01, shape),
        "scale": lambda: rng.uniform(0.5, 1.5, shape),
        "offset": lambda: rng.normal(0.0, 0.2, shape),
    }
    return draws[name]().astype(np.float32)


def _random_ema(module: str, shape: tuple[int, ...], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random running statistics; ``hidden`` is a decoy so reading it instead of ``average`` fails."""
    average = rng.normal(0.0, 0.2, shape) if module.endswith("mean_ema") else rng.uniform(0.5, 2.0, shape)
    return {"average": average.astype(np.float32),
            "hidden": rng.uniform(5.0, 10.0, shape).astype(np.float32),
            "counter": np.asarray(1000, np.int32)}


def _write_byol_file(path: Path, params: dict, state: dict) -> None:
    """What BYOL's Checkpointer writes, with Haiku's own (Flat)mapping containers."""
    import haiku as hk
    import jax

    # BYOL's classifier is a top-level `classifier` Linear, not the ResNet's `logits`.
    params = {("classifier" if m == "res_net50/~/logits" else m): v for m, v in params.items()}
    target = {m: {n: v * 0.5 for n, v in values.items()} for m, values in params.items()}
    frozen = hk.data_structures.to_immutable_dict
    opt_state = (_TraceState(trace=frozen({"classifier": params["classifier"]})),)
    experiment_state = _ByolExperimentState(
        online_params=frozen(params), target_params=frozen(target), online_state=frozen(state),
        target_state=frozen(state), opt_state=opt_state,
    )
    checkpoint = {"experiment_state": experiment_state, "step": 300_000, "rng": jax.random.PRNGKey(0)}
    with open(path, "wb") as handle:
        dill.dump(checkpoint, handle, protocol=2)


@pytest.fixture(scope="module")
def haiku_byol(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(BYOL-layout file, NHWC images, Haiku's pooled features for them)."""
    jax = pytest.importorskip("jax")
    hk = pytest.importorskip("haiku")
    rng = np.random.default_rng(0)
    init = hk.transform_with_state(functools.partial(_haiku_resnet50, features_only=False)).init
    # Only the module names and shapes come from Haiku (tracing, no compiling); the values are
    # drawn with numpy, which is much faster than running Haiku's initialisers on 2 cores.
    shapes = jax.eval_shape(functools.partial(init, is_training=True), jax.random.PRNGKey(0),
                            np.zeros((1, 32, 32, 3), np.float32))
    params = {m: {n: _random_value(n, v.shape, rng) for n, v in values.items()}
              for m, values in shapes[0].items()}
    state = {m: _random_ema(m, values["average"].shape, rng) for m, values in shapes[1].items()}
    images = rng.standard_normal((4, 224, 224, 3)).astype(np.float32)
    apply = hk.transform_with_state(functools.partial(_haiku_resnet50, features_only=True)).apply
    apply = jax.jit(apply, static_argnames="is_training")
    features, _ = apply(params, state, None, images, is_training=False)
    path = tmp_path_factory.mktemp("byol") / "pretrain_res50x1.pkl"
    _write_byol_file(path, params, state)
    return path, images, np.asarray(features)


# --- the torch side ----------------------------------------------------------------------

def _torch_features(state_dict: dict[str, torch.Tensor], padding: str, images: np.ndarray) -> np.ndarray:
    model = build_backbone("resnet50", padding)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def _agreement(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(lowest per-image cosine, max abs difference relative to the max abs reference value)."""
    ours, reference = ours.astype(np.float64), reference.astype(np.float64)
    cosine = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    return float(cosine.min()), float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def converted_haiku(haiku_byol: tuple) -> Converted:
    return byol.convert(haiku_byol[0])


def test_features_match_haiku_with_same_padding(haiku_byol: tuple, converted_haiku: Converted) -> None:
    _, images, reference = haiku_byol
    assert FORMATS["byol"].padding == "tf_same"  # what convert_file builds the backbone with
    cosine, rel = _agreement(_torch_features(converted_haiku.state_dict, "tf_same", images), reference)
    print(f"\nBYOL vs Haiku, padding tf_same: 1 - cosine {1 - cosine:.2e}, max|diff|/max|ref| {rel:.2e}")
    assert reference.shape == (4, 2048) and np.abs(reference).max() > 0
    assert cosine >= COSINE_MIN and rel <= REL_MAX_ABS


def test_stock_torch_padding_is_visibly_worse(haiku_byol: tuple, converted_haiku: Converted) -> None:
    """Why the converter asks for ``tf_same``: symmetric padding shifts every strided layer."""
    _, images, reference = haiku_byol
    cosine, rel = _agreement(_torch_features(converted_haiku.state_dict, "torch", images), reference)
    print(f"\nBYOL vs Haiku, padding torch:   1 - cosine {1 - cosine:.2e}, max|diff|/max|ref| {rel:.2e}")
    assert cosine < COSINE_MIN and rel > 10 * REL_MAX_ABS


def test_haiku_file_drops_heads_target_and_bookkeeping(converted_haiku: Converted) -> None:
    dropped = converted_haiku.dropped
    for key in ("target_params", "target_state", "opt_state", "step", "rng",
                "online_params/classifier/w",
                "online_state/res_net50/~/initial_batchnorm/~/mean_ema/hidden"):
        assert dropped.get(key), key


# --- round trip, refusals, bad files -------------------------------------------------------

@pytest.fixture(scope="module")
def random_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    state = build_backbone("resnet50").state_dict()
    return {k: (torch.rand(v.shape, generator=generator) + 0.5 if v.is_floating_point() else v)
            for k, v in state.items()}


@pytest.fixture(scope="module")
def native_file(random_state_dict: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("native") / "byol_demo.pkl"
    byol.write_native(random_state_dict, path, step=7)
    return path


def test_round_trip_is_exact(random_state_dict: dict, native_file: Path) -> None:
    converted = FORMATS["byol"].convert(native_file)
    assert converted.state_dict.keys() == random_state_dict.keys()
    for key, value in random_state_dict.items():
        assert torch.equal(converted.state_dict[key], value), key
    dropped = converted.dropped
    assert all(isinstance(why, str) and why for why in dropped.values())
    assert {"target_params", "opt_state", "online_params/projector/~/linear/w",
            "online_params/predictor/~/linear_1/w", "online_params/classifier/b",
            "online_state/projector/~/batch_norm/~/var_ema/average",
            "online_state/res_net50/~/block_group_3/~/block_2/~/batchnorm_2/~/var_ema/counter",
            } <= dropped.keys()
    assert not any(key.startswith("online_params/res_net50") for key in dropped)


def test_torchvision_fc_becomes_byol_classifier(tmp_path: Path) -> None:
    state = {"fc.weight": torch.arange(6.0).reshape(3, 2).repeat(1, 1024), "fc.bias": torch.ones(3)}
    state |= build_backbone("resnet50").state_dict()
    path = tmp_path / "with_fc.pkl"
    byol.write_native(state, path)
    classifier = byol.read_native(path)["experiment_state"].online_params["classifier"]
    assert np.array_equal(classifier["w"], state["fc.weight"].numpy().T)
    converted = byol.convert(path)
    assert "fc.weight" not in converted.state_dict and converted.dropped["online_params/classifier/w"]


def test_namedtuple_named_by_reference_is_read_by_position(
    random_state_dict: dict, native_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain pickle names BYOL's class by reference: it becomes a tuple, read in BYOL's order."""
    raw = byol.read_native(native_file)
    module = types.ModuleType("byol.byol_experiment")
    module._ByolExperimentState = _ByolExperimentState
    monkeypatch.setitem(sys.modules, "byol", types.ModuleType("byol"))
    monkeypatch.setitem(sys.modules, "byol.byol_experiment", module)
    raw["experiment_state"] = _ByolExperimentState(*raw["experiment_state"])
    path = tmp_path / "by_reference.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    monkeypatch.delitem(sys.modules, "byol.byol_experiment")  # reading must not need BYOL's code
    assert isinstance(byol.read_native(path)["experiment_state"], tuple)
    converted = byol.convert(path)
    assert all(torch.equal(converted.state_dict[k], v) for k, v in random_state_dict.items())


def test_written_file_has_byol_layout(native_file: Path) -> None:
    raw = byol.read_native(native_file)
    state = raw["experiment_state"]
    assert state._fields == byol.BYOL_STATE_FIELDS and raw["step"] == 7
    conv = state.online_params["res_net50/~/block_group_1/~/block_0/~/conv_1"]["w"]
    assert conv.shape == (3, 3, 128, 128) and conv.dtype == np.float32
    assert state.online_params["res_net50/~/initial_batchnorm"]["scale"].shape == (1, 1, 1, 64)
    ema = state.online_state["res_net50/~/initial_batchnorm/~/var_ema"]
    assert set(ema) == {"average", "hidden", "counter"}


class _Payload:
    """Pickles as a call to ``func(*args)``: what a malicious file does."""

    def __init__(self, func: typing.Callable, *args: typing.Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


@pytest.mark.parametrize("func, args, name", [
    (os.system, ("touch {marker}",), r"(posix|nt|os)\.system"),
    (eval, ("open({marker!r}, 'w')",), r"builtins\.eval"),
    (exec, ("open({marker!r}, 'w')",), r"builtins\.exec"),
    (getattr, (["{marker}"], "append"), r"builtins\.getattr"),
    (subprocess.check_call, (["touch", "{marker}"],), r"subprocess\.check_call"),
])
def test_refuses_pickles_that_run_code(tmp_path: Path, func: typing.Callable, args: tuple, name: str) -> None:
    marker = str(tmp_path / "pwned")
    args = tuple(a.format(marker=marker) if isinstance(a, str) else [marker] for a in args)
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"experiment_state": _Payload(func, *args)}, protocol=2))
    with pytest.raises(byol.RefusedGlobalError, match=rf"evil\.pkl: refusing to load the global {name}"):
        byol.convert(path)
    assert not Path(marker).exists()


def test_unpickler_refuses_os_system_directly() -> None:
    payload = pickle.dumps(_Payload(os.system, "echo pwned"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load the global (posix|nt|os)\.system"):
        byol.RestrictedUnpickler(io.BytesIO(payload)).load()


def test_truncated_file_names_the_file(native_file: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(native_file.read_bytes()[:200_000])
    with pytest.raises(ValueError, match=r"truncated\.pkl: cannot read this as a BYOL weights file"):
        byol.convert(truncated)


def test_non_byol_pickle_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "other.pkl"
    path.write_bytes(dill.dumps({"state_dict": {"conv1.weight": np.zeros(3)}}, protocol=2))
    with pytest.raises(ValueError, match=r"other\.pkl: not a BYOL weights file.*state_dict"):
        byol.convert(path)


def test_missing_and_unexpected_modules_are_listed(tmp_path: Path) -> None:
    path = tmp_path / "partial.pkl"
    conv = {"w": np.zeros((7, 7, 3, 64), np.float32)}
    params = {"res_net50/~/initial_conv": conv, "res_net50/~/mystery": conv}
    # A plain tuple: fields are then read in BYOL's documented order.
    path.write_bytes(dill.dumps({"experiment_state": (params, {}, {}, {}, ()), "step": 0}, protocol=2))
    with pytest.raises(ValueError, match=r"partial\.pkl: .*missing \(264\).*block_group.*"
                                         r"unexpected \(1\).*res_net50/~/mystery/w"):
        byol.convert(path)
