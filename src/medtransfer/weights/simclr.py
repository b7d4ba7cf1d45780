"""SimCLR-v1 (a TensorFlow 1 checkpoint) <-> torchvision ResNet-50, without TensorFlow.

SimCLR-v1's ResNet names its layers only by creation order: ``base_model/conv2d``,
``conv2d_1``, ... and ``base_model/batch_normalization[_N]``. The mapping therefore
rebuilds that order for torchvision's modules (stem; then per bottleneck block the
projection shortcut FIRST, then conv1..conv3) and pairs it with the integer N, never with
a lexicographic sort of the names (which puts ``conv2d_10`` before ``conv2d_2``).
Every variable is either mapped, or dropped with a reason, or reported as unexpected.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.weights import tfbundle
from medtransfer.weights.backbones import backbone_keys, check_state_dict
from medtransfer.weights.base import Converted, Probe, sample_keys
from medtransfer.writers import write_zip

ARCH = "resnet50"
BLOCKS_PER_STAGE = (3, 4, 6, 3)  # ResNet-50
PUBLISHED_FOLDER = "ResNet50_1x"  # the folder inside the published ResNet50_1x.zip
PUBLISHED_STEP = 225206
_BN_PARAMS = {
    "gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var",
}
_TRAINING_CHECKPOINT = re.compile(r"(?:^|/)model\.ckpt-\d+\.index$")
_KERNEL = re.compile(r"^base_model/conv2d(?:_\d+)?/kernel$")
_DROP_RULES = (  # (pattern, reason); checked in order, the first match wins
    (re.compile(r"/Momentum$"), "optimizer slot (LARS momentum): training state, not weights"),
    (re.compile(r"^global_step$"), "training step counter"),
    (re.compile(r"^head_supervised/"), "supervised linear classifier head (replaced by the evaluation head)"),
    (re.compile(r"^head_contrastive/"), "SimCLR projection head (used only by the contrastive loss)"),
    (re.compile(r"^(?!base_model/)"), "not part of the ResNet backbone (outside base_model/)"),
)


def creation_order(blocks: tuple[int, ...] = BLOCKS_PER_STAGE) -> list[tuple[str, str]]:
    """(conv, batch-norm) torchvision module names in the order SimCLR creates them:
    entry N is ``conv2d_N`` / ``batch_normalization_N``."""
    order = [("conv1", "bn1")]
    for stage, count in enumerate(blocks, start=1):
        for block in range(count):
            name = f"layer{stage}.{block}"
            if block == 0:  # the projection shortcut is created before the block's convs
                order.append((f"{name}.downsample.0", f"{name}.downsample.1"))
            order += [(f"{name}.conv{k}", f"{name}.bn{k}") for k in (1, 2, 3)]
    return order


def _scope(kind: str, n: int) -> str:
    return f"base_model/{kind}" + (f"_{n}" if n else "")


def _name_pairs() -> list[tuple[str, str]]:
    """(SimCLR variable, torchvision key) for every backbone variable, in creation order."""
    pairs = []
    for n, (conv, bn) in enumerate(creation_order()):
        pairs.append((f"{_scope('conv2d', n)}/kernel", f"{conv}.weight"))
        pairs += [(f"{_scope('batch_normalization', n)}/{tf}", f"{bn}.{pt}") for tf, pt in _BN_PARAMS.items()]
    return pairs


def _split_variables(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """Backbone candidates (everything not dropped) and dropped name -> reason."""
    kept, dropped = [], {}
    for name in names:
        reason = next((why for pattern, why in _DROP_RULES if pattern.search(name)), None)
        if reason is None:
            kept.append(name)
        else:
            dropped[name] = reason
    return kept, dropped


def _check_variables(kept: list[str], source: Path) -> None:
    expected = {tf_name for tf_name, _ in _name_pairs()}
    missing, unexpected = sorted(expected - set(kept)), sorted(set(kept) - expected)
    if missing or unexpected:
        kernels = sum(1 for name in kept if _KERNEL.match(name))
        raise ValueError(
            f"{source}: not a SimCLR-v1 {ARCH} checkpoint. missing variables ({len(missing)}): "
            f"{missing[:10]}; unexpected variables ({len(unexpected)}): {unexpected[:10]}. "
            f"It has {kernels} convolution kernels; SimCLR-v1's 1x ResNet-50 has {len(creation_order())} "
            "(base_model/conv2d .. conv2d_52, each with a batch_normalization[_N]). "
            "Check the file and its `format`."
        )


def _tf_shape(tf_name: str, torch_shape: tuple[int, ...]) -> tuple[int, ...]:
    if tf_name.endswith("/kernel"):  # torch OIHW <- TF HWIO
        out_ch, in_ch, height, width = torch_shape
        return (height, width, in_ch, out_ch)
    return torch_shape


def _to_torchvision(arrays: dict[str, np.ndarray], source: Path) -> dict[str, torch.Tensor]:
    expected = backbone_keys(ARCH)
    wrong = [
        f"{tf_name} -> {key}: {arrays[tf_name].shape} (expected {_tf_shape(tf_name, expected[key])})"
        for tf_name, key in _name_pairs() if arrays[tf_name].shape != _tf_shape(tf_name, expected[key])
    ]
    if wrong:
        raise ValueError(
            f"{source}: {len(wrong)} variables have the wrong shapes for a SimCLR-v1 {ARCH} (1x width): "
            f"{wrong[:10]}. Wider SimCLR models (2x, 4x) are not supported."
        )
    state: dict[str, torch.Tensor] = {}
    for tf_name, key in _name_pairs():
        value = torch.from_numpy(arrays[tf_name])
        state[key] = value.permute(3, 2, 0, 1).contiguous() if tf_name.endswith("/kernel") else value
    for _, bn in creation_order():
        state[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)  # for strict loading
    return state


def _extract_member(archive: zipfile.ZipFile, member: str, folder: Path) -> Path:
    target = folder / Path(member).name  # flat name: no path from the archive reaches the disk
    with archive.open(member) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return target


def _zip_indexes(names: list[str]) -> list[str]:
    return sorted(n for n in names if n.endswith(".index") and not n.startswith("__MACOSX/"))


def _pick_index(indexes: list[str], path: Path) -> str:
    """The checkpoint to convert: the only ``*.index``, else the only ``model.ckpt-<step>``.

    The published zip very likely holds a TF-Hub module (``hub/variables/variables.index``)
    next to the training checkpoint; the checkpoint is what the variable mapping is for.
    """
    if len(indexes) == 1:
        return indexes[0]
    checkpoints = [n for n in indexes if _TRAINING_CHECKPOINT.search(n)]
    if len(checkpoints) == 1:
        return checkpoints[0]
    if not indexes:
        raise ValueError(f"{path}: expected exactly one TensorFlow checkpoint (*.index) in the zip, found none")
    raise ValueError(
        f"{path}: cannot tell which TensorFlow checkpoint in the zip to convert: "
        f"{len(checkpoints)} model.ckpt-<step>.index among {indexes}. Unzip it and set the model's "
        "`path:` to the checkpoint prefix you want (e.g. .../model.ckpt-225206, without .index)."
    )


def _extract_checkpoint(path: Path, folder: Path) -> tuple[Path, str]:
    """Copy the checkpoint to convert (``_pick_index``), in whatever folder, to ``folder``.

    Returns the local prefix and the prefix's path inside the zip (for error messages).
    """
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if not n.startswith("__MACOSX/")]
        index = _pick_index(_zip_indexes(names), path)
        member_prefix = index[: -len(".index")]
        shards = [n for n in names if n.startswith(member_prefix + ".data-")]
        if not shards:
            raise ValueError(f"{path}: the zip holds {index} but no {member_prefix}.data-* shard")
        for member in [index, *shards]:
            _extract_member(archive, member, folder)
    return folder / Path(member_prefix).name, member_prefix


def _read_backbone(prefix: Path, source: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Backbone arrays by TF name (only those are read) and the dropped names with reasons."""
    kept, dropped = _split_variables(sorted(tfbundle.list_checkpoint(prefix)))
    _check_variables(kept, source)
    return tfbundle.read_checkpoint(prefix, names=kept), dropped


def _read_zip(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="simclr-") as folder:
        try:
            prefix, member_prefix = _extract_checkpoint(path, Path(folder))
        except (zipfile.BadZipFile, EOFError) as err:
            raise ValueError(
                f"{path}: cannot read this zip ({err}); it is truncated or corrupt: download it again"
            ) from err
        try:
            return _read_backbone(prefix, path)
        except ValueError as err:  # name the member of the zip, not its temporary copy
            raise ValueError(str(err).replace(str(prefix), f"{path}:{member_prefix}")) from err


def convert(path: Path) -> Converted:
    """SimCLR-v1 weights (the published zip, or a checkpoint prefix / ``.index``) as a
    torchvision ResNet-50 state dict; the stem max-pool must use TF "SAME" padding (the
    format record's ``tf_same_maxpool``). In a zip, ``_pick_index`` chooses the checkpoint."""
    path = Path(path)
    if path.suffix == ".zip" or (path.is_file() and zipfile.is_zipfile(path)):
        if not path.is_file():
            raise FileNotFoundError(f"SimCLR weights file {path} not found")
        arrays, dropped = _read_zip(path)
    else:
        arrays, dropped = _read_backbone(tfbundle.checkpoint_prefix(path), path)
    state = _to_torchvision(arrays, path)
    check_state_dict(state, ARCH, str(path))
    return Converted(state_dict=state, dropped=dropped)


def to_native(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The inverse mapping: torchvision backbone tensors under SimCLR-v1's variable names
    (``num_batches_tracked`` and ``fc.*`` are not backbone variables and are left out)."""
    check_state_dict({k: v for k, v in state_dict.items() if not k.startswith("fc.")}, ARCH, "state_dict")
    out: dict[str, np.ndarray] = {}
    for tf_name, key in _name_pairs():
        value = state_dict[key].detach().cpu()
        if tf_name.endswith("/kernel"):
            value = value.permute(2, 3, 1, 0)  # OIHW -> HWIO
        out[tf_name] = value.contiguous().numpy()
    return out


def _training_extras(
    state_dict: dict[str, torch.Tensor], native: dict[str, np.ndarray], step: int
) -> dict[str, np.ndarray]:
    """What else the published checkpoint holds: step counter, supervised head, optimizer slots."""
    if "fc.weight" in state_dict and tuple(state_dict["fc.weight"].shape) == (1000, 2048):
        kernel = state_dict["fc.weight"].detach().cpu().numpy().T.copy()  # torch (out, in) -> TF (in, out)
        bias = state_dict["fc.bias"].detach().cpu().numpy().copy()
    else:
        kernel, bias = np.zeros((2048, 1000), np.float32), np.zeros(1000, np.float32)
    extras = {
        "global_step": np.array(step, dtype=np.int64),
        "head_supervised/linear_layer/dense/kernel": kernel,
        "head_supervised/linear_layer/dense/bias": bias,
    }
    # A few momentum slots only: the real file has one per variable, which would double the demo's size.
    slotted = {**native, **extras}
    for name in ("base_model/conv2d/kernel", "base_model/batch_normalization/gamma",
                 "base_model/batch_normalization/beta", "head_supervised/linear_layer/dense/bias"):
        extras[f"{name}/Momentum"] = np.zeros_like(slotted[name])
    return extras


def write_native(state_dict: dict[str, torch.Tensor], path: Path, *, step: int = PUBLISHED_STEP) -> None:
    """Write a torchvision ResNet-50 state dict as SimCLR-v1's published zip (demo weights).

    The zip holds ``ResNet50_1x/checkpoint`` and ``ResNet50_1x/model.ckpt-<step>.{index,
    data-00000-of-00001}``, plus a step counter, a supervised head and momentum slots so
    that ``convert``'s drop rules see what the real file holds. Members are stored
    uncompressed (float weights barely deflate) and dated 1980-01-01, so the same weights give
    the same bytes. Written atomically.
    """
    native = to_native(state_dict)
    tensors = {**native, **_training_extras(state_dict, native, step)}
    with tempfile.TemporaryDirectory(prefix="simclr-") as folder:
        prefix = Path(folder) / f"model.ckpt-{step}"
        tfbundle.write_checkpoint(prefix, dict(sorted(tensors.items())))
        state = f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'
        members = [("checkpoint", state.encode())]
        members += [(file.name, file.read_bytes()) for file in sorted(Path(folder).iterdir())]
        write_zip(path, [(f"{PUBLISHED_FOLDER}/{name}", data) for name, data in members])


def write_demo(state_dict: dict[str, torch.Tensor], out: Path, seed: int) -> None:
    """Demo weights as SimCLR-v1's published zip (``seed`` is not needed: the file is exact)."""
    write_native(state_dict, out)


def _summary(index: Path, info: dict[str, Any]) -> dict[str, Any]:
    try:
        names = sorted(tfbundle.list_checkpoint(index))
    except (ValueError, FileNotFoundError) as err:
        return info | {"error": str(err)[:300]}
    return info | {"count": len(names), "keys": sample_keys(names)}


def _detect_zip(probe: Probe, names: list[str]) -> dict[str, Any] | None:
    indexes = _zip_indexes(names)
    if not indexes:
        return None
    info: dict[str, Any] = {"container": "zip of a TensorFlow checkpoint", "indexes": indexes}
    try:
        member = _pick_index(indexes, probe.path)
    except ValueError as err:
        return info | {"error": str(err)}
    with tempfile.TemporaryDirectory(prefix="simclr-") as folder, zipfile.ZipFile(probe.path) as archive:
        index = _extract_member(archive, member, Path(folder))
        return _summary(index, info | {"checkpoint": member[: -len(".index")]})


def detect(probe: Probe) -> dict[str, Any] | None:
    """A zip holding a ``*.index``, or a checkpoint given by folder, prefix, ``.index`` or shard."""
    if probe.zip_names is not None:
        return _detect_zip(probe, probe.zip_names)
    try:
        prefix = tfbundle.checkpoint_prefix(probe.path)
    except ValueError:  # a folder without exactly one *.index
        return None
    index = prefix.with_name(prefix.name + ".index")
    if not index.is_file():
        return None
    return _summary(index, {"container": "TensorFlow checkpoint", "checkpoint": str(prefix)})
