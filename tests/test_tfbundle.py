"""TensorBundle reader/writer: bit-identical against real TensorFlow, checksums, damaged files.

TensorFlow runs only in a subprocess (importing it next to torch crashed here), once per
module; the tests that need it are skipped when it is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medtransfer.weights import tfbundle

HAS_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow is not installed (pip install tensorflow-cpu)")

# Saves the tensors of each npz with the op tf.compat.v1.train.Saver uses (SaveV2), and
# dumps every checkpoint TensorFlow is asked to load into an npz.
TF_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

cfg = json.load(open(sys.argv[1]))
for job in cfg["save"]:
    data = np.load(job["npz"])
    names = job["names"]
    tensors = [tf.constant(data[n]) for n in names]
    tensors += [tf.constant(v, dtype=tf.string) for v in job.get("strings", {}).values()]
    names = names + list(job.get("strings", {}))
    tf.raw_ops.SaveV2(prefix=job["prefix"], tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
for job in cfg["load"]:
    reader = tf.train.load_checkpoint(job["prefix"])
    dtypes = reader.get_variable_to_dtype_map()
    out = {n: reader.get_tensor(n) for n in sorted(reader.get_variable_to_shape_map())}
    np.savez(job["out"], **out)
    json.dump({n: dtypes[n].name for n in out}, open(job["out"] + ".json", "w"))
"""


def run_tensorflow(script: str, config: dict, workdir: Path) -> None:
    """Run ``script`` with TensorFlow in a fresh interpreter (never in this process)."""
    (workdir / "tf_job.json").write_text(json.dumps(config))
    (workdir / "tf_job.py").write_text(script)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    proc = subprocess.run(
        [sys.executable, str(workdir / "tf_job.py"), str(workdir / "tf_job.json")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, f"TensorFlow subprocess failed:\n{proc.stderr[-3000:]}"


def special_floats(dtype: str) -> np.ndarray:
    """Values whose bits a lossy path would change: NaN payloads, -0, inf, subnormals."""
    info = np.finfo(dtype)
    values = np.array([np.nan, -0.0, np.inf, -np.inf, info.smallest_subnormal, -1.5, info.max], dtype=dtype)
    if dtype == "float32":
        values = np.append(values, np.array([0x7FC12345], np.uint32).view(np.float32))
    return values


def simclr_like(seed: int = 0) -> dict[str, np.ndarray]:
    """SimCLR-v1's variable names (realistic shapes, a small subset) plus every dtype."""
    rng = np.random.default_rng(seed)
    out = {
        "base_model/conv2d/kernel": rng.standard_normal((7, 7, 3, 64), dtype=np.float32),
        "base_model/conv2d_1/kernel": rng.standard_normal((1, 1, 64, 256), dtype=np.float32),
        "base_model/conv2d_10/kernel": rng.standard_normal((1, 1, 64, 256), dtype=np.float32),
        "base_model/conv2d_2/kernel": rng.standard_normal((1, 1, 64, 64), dtype=np.float32),
        "base_model/conv2d/kernel/Momentum": np.zeros((7, 7, 3, 64), np.float32),
        "head_supervised/linear_layer/dense/kernel": rng.standard_normal((2048, 1000), dtype=np.float32),
        "head_supervised/linear_layer/dense/bias": rng.standard_normal(1000, dtype=np.float32),
        "global_step": np.array(225206, dtype=np.int64),
        "dtypes/float32_special": special_floats("float32"),
        "dtypes/float64": np.append(rng.standard_normal(5), special_floats("float64")),
        "dtypes/float16": special_floats("float16"),
        "dtypes/int32": rng.integers(-2**31, 2**31 - 1, (3, 4), dtype=np.int32),
        "dtypes/int64": np.array([-2**63, -1, 0, 2**63 - 1], dtype=np.int64),
        "dtypes/int8": np.array([-128, 0, 127], np.int8),
        "dtypes/uint8": np.arange(256, dtype=np.uint8).reshape(16, 16),
        "dtypes/bool": rng.random((5, 3)) > 0.5,
        "dtypes/empty": np.zeros((0, 3), np.float32),
    }
    for param in ("gamma", "beta", "moving_mean", "moving_variance"):
        for suffix in ("", "_1", "_2", "_10"):
            out[f"base_model/batch_normalization{suffix}/{param}"] = rng.random(64, dtype=np.float32)
    return out


def many_names(count: int = 4000) -> dict[str, np.ndarray]:
    """Enough entries that TensorFlow's index spans two 256 KiB blocks (the leading number
    keeps keys from sharing long prefixes, so few entries fill a block)."""
    name = "{i:05d}/base_model/batch_normalization_{i}/moving_variance/Momentum"
    return {name.format(i=i): np.array(i, np.float32) for i in range(count)}


STRINGS = {"strings/mixed": ["", "ab", "a\x00b", "é" * 200], "strings/scalar": "x"}


def assert_bit_identical(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype, name
        assert got[name].shape == value.shape, name
        assert got[name].tobytes() == value.tobytes(), name  # bits, so NaN payloads count too


@pytest.fixture(scope="module")
def tf_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TensorFlow subprocess: it writes reference checkpoints and reads ours."""
    if not HAS_TF:
        pytest.skip("tensorflow is not installed (pip install tensorflow-cpu)")
    work = tmp_path_factory.mktemp("tf")
    small, many = simclr_like(), many_names()
    np.savez(work / "small.npz", **small)
    np.savez(work / "many.npz", **many)
    tfbundle.write_checkpoint(work / "ours_small", small)
    tfbundle.write_checkpoint(work / "ours_blocks", small, block_size=256, restart_interval=3)
    tfbundle.write_checkpoint(work / "ours_many", many)
    save = [
        {"npz": str(work / "small.npz"), "names": list(small), "prefix": str(work / "tf_small")},
        {"npz": str(work / "many.npz"), "names": list(many), "prefix": str(work / "tf_many")},
        {"npz": str(work / "small.npz"), "names": [], "prefix": str(work / "tf_strings"), "strings": STRINGS},
    ]
    load = [{"prefix": str(work / n), "out": str(work / f"{n}.tf")} for n in ("ours_small", "ours_blocks", "ours_many")]
    run_tensorflow(TF_SCRIPT, {"save": save, "load": load}, work)
    return work


# ------------------------------------------------------------------------ CRC32C

@pytest.mark.parametrize("data, expected", [
    (b"", 0),
    (b"123456789", 0xE3069283),  # the CRC-32C check value
    (bytes(32), 0x8A9136AA),  # RFC 3720 (iSCSI) test vectors
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
])
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert tfbundle.crc32c(data) == expected


@pytest.mark.parametrize("size", [1023, 1024, 1025, 4099, 65_537, 1_000_003])
def test_crc32c_vectorised_path_matches_bytewise(size: int) -> None:
    data = np.random.default_rng(size).bytes(size)
    reference = tfbundle._crc_bytewise(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert tfbundle.crc32c(data) == reference
    cut = size // 3
    assert tfbundle.crc32c(data[cut:], tfbundle.crc32c(data[:cut])) == reference


def test_mask_is_invertible_and_not_identity() -> None:
    for crc in (0, 1, 0xE3069283, 0xFFFFFFFF):
        assert tfbundle.unmask_crc(tfbundle.mask_crc(crc)) == crc
    assert tfbundle.mask_crc(0) == 0xA282EAD8


# ------------------------------------------------------------- our writer <-> reader

def test_roundtrip_every_dtype_multiblock(tmp_path: Path) -> None:
    tensors = simclr_like()
    tfbundle.write_checkpoint(tmp_path / "ck", tensors, block_size=200, restart_interval=2)
    assert_bit_identical(tfbundle.read_checkpoint(tmp_path / "ck.index"), tensors)


def test_big_endian_input_is_written_little_endian(tmp_path: Path) -> None:
    value = np.arange(6, dtype=">f4").reshape(2, 3)
    tfbundle.write_checkpoint(tmp_path / "ck", {"x": value})
    got = tfbundle.read_checkpoint(tmp_path / "ck")["x"]
    assert got.dtype == np.dtype("<f4") and np.array_equal(got, value)
    assert (tmp_path / "ck.data-00000-of-00001").read_bytes() == value.astype("<f4").tobytes()


def test_list_reads_only_the_index(tmp_path: Path) -> None:
    tensors = simclr_like()
    tfbundle.write_checkpoint(tmp_path / "ck", tensors)
    (tmp_path / "ck.data-00000-of-00001").unlink()
    infos = tfbundle.list_checkpoint(tmp_path / "ck")
    assert list(infos) == sorted(tensors)
    assert infos["base_model/conv2d/kernel"].shape == (7, 7, 3, 64)
    assert infos["base_model/conv2d/kernel"].dtype == "float32"
    assert infos["global_step"].shape == () and infos["global_step"].dtype == "int64"
    assert infos["dtypes/bool"].dtype == "bool"


def test_read_subset_keeps_the_requested_order(tmp_path: Path) -> None:
    tensors = simclr_like()
    tfbundle.write_checkpoint(tmp_path / "ck", tensors)
    got = tfbundle.read_checkpoint(tmp_path / "ck", names=["global_step", "base_model/conv2d/kernel"])
    assert list(got) == ["global_step", "base_model/conv2d/kernel"]
    assert got["global_step"] == 225206
    with pytest.raises(KeyError, match="no tensors named \\['nope'\\]"):
        tfbundle.read_checkpoint(tmp_path / "ck", names=["nope"])


def test_prefix_from_any_of_its_files(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "model.ckpt-225206", {"x": np.ones(2, np.float32)})
    for given in ("model.ckpt-225206", "model.ckpt-225206.index", "model.ckpt-225206.data-00000-of-00001"):
        assert tfbundle.checkpoint_prefix(tmp_path / given) == tmp_path / "model.ckpt-225206"
    assert tfbundle.checkpoint_prefix(tmp_path) == tmp_path / "model.ckpt-225206"


def test_writer_rejects_unsupported_dtype_and_leaves_old_files(tmp_path: Path) -> None:
    tfbundle.write_checkpoint(tmp_path / "ck", {"x": np.ones(2, np.float32)})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="tensor 'bad' has dtype object"):
        tfbundle.write_checkpoint(tmp_path / "ck", {"y": np.zeros(3), "bad": np.array([None])})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no partial or temp files


# ------------------------------------------------------------------ real TensorFlow

@needs_tf
def test_reads_tensorflow_checkpoints_bit_identical(tf_run: Path) -> None:
    assert_bit_identical(tfbundle.read_checkpoint(tf_run / "tf_small"), simclr_like())
    assert_bit_identical(tfbundle.read_checkpoint(tf_run / "tf_many.index"), many_names())
    strings = tfbundle.read_checkpoint(tf_run / "tf_strings")
    assert strings["strings/mixed"].tolist() == [s.encode() for s in STRINGS["strings/mixed"]]
    assert strings["strings/scalar"].shape == () and strings["strings/scalar"].item() == b"x"


@needs_tf
@pytest.mark.parametrize("name, tensors", [("ours_small", simclr_like), ("ours_blocks", simclr_like),
                                           ("ours_many", many_names)])
def test_tensorflow_reads_our_checkpoints_bit_identical(tf_run: Path, name: str, tensors) -> None:
    got = dict(np.load(tf_run / f"{name}.tf.npz"))
    assert_bit_identical(got, tensors())
    dtypes = json.loads((tf_run / f"{name}.tf.json").read_text())
    assert all(dtypes[n] == v.dtype.name for n, v in tensors().items())


@needs_tf
@pytest.mark.parametrize("ours, theirs", [("ours_small", "tf_small"), ("ours_many", "tf_many")])
def test_files_are_byte_identical_to_tensorflows(tf_run: Path, ours: str, theirs: str) -> None:
    """Same tensors in the same order: TensorFlow's and our files match byte for byte,
    including a multi-block index (so separators and restarts follow TF's table builder)."""
    assert (tf_run / "tf_many.index").stat().st_size > 262144  # more than one 256 KiB block
    for suffix in (".index", ".data-00000-of-00001"):
        assert (tf_run / f"{ours}{suffix}").read_bytes() == (tf_run / f"{theirs}{suffix}").read_bytes(), suffix


# --------------------------------------------------------------- damaged checkpoints

@pytest.fixture
def written(tmp_path: Path) -> Path:
    tfbundle.write_checkpoint(tmp_path / "ck", simclr_like())
    return tmp_path / "ck"


def test_truncated_data_file(written: Path) -> None:
    data = written.with_name("ck.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:-100])
    with pytest.raises(ValueError, match=r"ck\.data-00000-of-00001: truncated: \d+ bytes"):
        tfbundle.read_checkpoint(written)


def test_flipped_data_byte_fails_the_tensor_checksum(written: Path) -> None:
    info = tfbundle.list_checkpoint(written)["head_supervised/linear_layer/dense/kernel"]
    data = written.with_name("ck.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[info.offset + 12345] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"ck\.data-00000-of-00001: tensor 'head_supervised/linear_layer/dense"
                                         r"/kernel' fails its CRC32C checksum"):
        tfbundle.read_checkpoint(written)
    # tensors that were not damaged still read
    assert tfbundle.read_checkpoint(written, names=["global_step"])["global_step"] == 225206


@pytest.mark.parametrize("cut", [1, 48, 200])
def test_truncated_index(written: Path, cut: int) -> None:
    index = written.with_name("ck.index")
    index.write_bytes(index.read_bytes()[:-cut])
    with pytest.raises(ValueError, match=r"ck\.index: not a readable TensorFlow checkpoint index"):
        tfbundle.list_checkpoint(written)


def test_flipped_index_byte_fails_the_block_checksum(written: Path) -> None:
    index = written.with_name("ck.index")
    raw = bytearray(index.read_bytes())
    raw[30] ^= 0x40  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"ck\.index: .*block checksum mismatch"):
        tfbundle.read_checkpoint(written)


def test_missing_data_shard_is_named(written: Path) -> None:
    written.with_name("ck.data-00000-of-00001").unlink()
    with pytest.raises(FileNotFoundError, match=r"ck\.data-00000-of-00001 not found"):
        tfbundle.read_checkpoint(written)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match=r"x\.index: .*magic number missing"):
        tfbundle.list_checkpoint(tmp_path / "x.index")
    with pytest.raises(FileNotFoundError, match=r"y\.index not found"):
        tfbundle.list_checkpoint(tmp_path / "y")
