"""TensorFlow checkpoints (TensorBundle, "V2" format) read and written without TensorFlow.

A checkpoint ``<prefix>`` is two files:

- ``<prefix>.index``: a LevelDB-style sorted table. Key ``""`` holds a
  ``BundleHeaderProto`` (shard count, endianness, version); every other key is a tensor
  name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset, size, masked
  CRC32C of the tensor bytes).
- ``<prefix>.data-00000-of-00001`` (one file per shard): the tensors' raw bytes.

Importing TensorFlow next to torch crashed here, and a 1.4 GB dependency for a
weight conversion is out of proportion; the format is small enough to implement from
its specification (LevelDB ``table_format``, ``tensor_bundle.proto``). Every block and
tensor checksum is verified, so a damaged file raises instead of yielding garbage. The
writer mirrors TensorFlow's own table builder (block size, restart interval, index
separators), so for the same tensors in the same order its ``.index`` is byte-identical
to the one TensorFlow writes.
"""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtransfer.writers import atomic_path

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
_TRAILER_SIZE = 5  # compression type byte + masked CRC32C
_BLOCK_SIZE = 262144  # TensorFlow's table::Options defaults, kept for identical files
_RESTART_INTERVAL = 16
_HEADER_KEY = b""
_BUNDLE_VERSION = 1  # kTensorBundleVersion: what we write and the newest consumer we are

# TensorFlow DataType enum (types.proto) -> name; numpy equivalents where one exists.
_TF_DTYPE_NAMES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
    8: "complex64", 9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32",
    14: "bfloat16", 15: "qint16", 16: "quint16", 17: "uint16", 18: "complex128", 19: "float16",
    20: "resource", 21: "variant", 22: "uint32", 23: "uint64",
}
_NUMPY_DTYPES = {
    name: np.dtype(name) for name in (
        "float32", "float64", "float16", "int8", "int16", "int32", "int64", "uint8", "uint16",
        "uint32", "uint64", "bool", "complex64", "complex128",
    )
}
_TF_DTYPE_CODES = {name: code for code, name in _TF_DTYPE_NAMES.items()}
_DATA_SUFFIX = re.compile(r"\.data-\d{5}-of-\d{5}$")


class _Corrupt(ValueError):
    """A format violation found while parsing; re-raised with the file's name."""


# ----------------------------------------------------------------------------- CRC32C

def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):  # reflected Castagnoli polynomial, one bit at a time
        table = np.where(table & 1, (table >> 1) ^ np.uint32(0x82F63B78), table >> 1).astype(np.uint32)
    return table


_CRC_TABLE = _crc_table()
_CRC_LIST = _CRC_TABLE.tolist()
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)


def _crc_bytewise(reg: int, data: bytes) -> int:
    table = _CRC_LIST
    for byte in data:
        reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg


def _crc_lanes(reg: int, buf: np.ndarray) -> int:
    """CRC register after ``buf``, computed on K interleaved lanes with numpy.

    A pure-Python CRC runs at ~10 MB/s, too slow for a 100 MB checkpoint. The register
    update is linear, so K equal chunks can run side by side from a zero register and be
    folded afterwards: reg' = Z(reg) ^ lane, where Z ("advance over L zero bytes") is
    learnt from 32 extra lanes started at the unit vectors. ~150-200 MB/s.
    """
    lanes = max(64, min(int(math.sqrt(16 * buf.size)), 1 << 16))
    length = buf.size // lanes
    cols = np.zeros((length, lanes + 32), np.uint8)
    cols[:, :lanes] = buf[: lanes * length].reshape(lanes, length).T
    regs = np.zeros(lanes + 32, np.uint32)
    regs[lanes:] = np.uint32(1) << np.arange(32, dtype=np.uint32)
    low, tmp = np.empty(lanes + 32, np.uint8), np.empty(lanes + 32, np.uint32)
    for i in range(length):
        np.bitwise_xor(regs.view(np.uint8)[::4], cols[i], out=low)  # low byte (little-endian)
        np.take(_CRC_TABLE, low, out=tmp)
        np.right_shift(regs, 8, out=regs)
        np.bitwise_xor(regs, tmp, out=regs)
    images = regs[lanes:]
    t0, t1, t2, t3 = (
        np.bitwise_xor.reduce(np.where(_BYTE_BITS, images[8 * j: 8 * j + 8], np.uint32(0)), axis=1).tolist()
        for j in range(4)
    )
    for lane in regs[:lanes].tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ lane
    return _crc_bytewise(reg, buf[lanes * length:].tobytes())


def _as_byte_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from a previous ``crc`` (TF's ``Extend``)."""
    buf = _as_byte_array(data)
    reg = crc ^ 0xFFFFFFFF
    reg = _crc_bytewise(reg, buf.tobytes()) if buf.size < 1024 else _crc_lanes(reg, buf)
    return reg ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF "masked" CRC: rotated and offset, so CRCs of CRCs stay informative."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------ protobuf wire format

def _encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # protobuf encodes negative int32/int64 as 10-byte two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _Corrupt(f"varint truncated or too long at byte {pos}")


def _parse_message(buf: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> values, for wire types varint, fixed64, bytes and fixed32."""
    fields: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = _decode_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _decode_varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(buf):
                raise _Corrupt("fixed-width protobuf field truncated")
            value, pos = int.from_bytes(buf[pos: pos + width], "little"), pos + width
        elif wire == 2:
            size, pos = _decode_varint(buf, pos)
            if pos + size > len(buf):
                raise _Corrupt("length-delimited protobuf field truncated")
            value, pos = buf[pos: pos + size], pos + size
        else:
            raise _Corrupt(f"unsupported protobuf wire type {wire} (field {number})")
        fields.setdefault(number, []).append(value)
    return fields


def _scalar(fields: dict[int, list[int | bytes]], number: int, signed64: bool = True) -> int:
    """Last value of a scalar field (protobuf's "last one wins"), 0 when absent."""
    value = fields.get(number, [0])[-1]
    if not isinstance(value, int):
        raise _Corrupt(f"protobuf field {number} should be a number")
    return value - (1 << 64) if signed64 and value >= 1 << 63 else value


def _repeated_varints(values: list[int | bytes]) -> list[int]:
    """A repeated integer field, packed (proto3's default: one bytes value) or not."""
    out: list[int] = []
    for value in values:
        if isinstance(value, int):
            out.append(value)
            continue
        pos = 0
        while pos < len(value):
            number, pos = _decode_varint(value, pos)
            out.append(number)
    return out


def _pb_varint(number: int, value: int) -> bytes:
    return _encode_varint(number << 3) + _encode_varint(value) if value else b""  # proto3 omits 0


def _pb_bytes(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _pb_fixed32(number: int, value: int) -> bytes:
    return _encode_varint(number << 3 | 5) + struct.pack("<I", value) if value else b""


# ----------------------------------------------------------------- table (reading)

def _decode_handle(buf: bytes, pos: int = 0) -> tuple[tuple[int, int], int]:
    offset, pos = _decode_varint(buf, pos)
    size, pos = _decode_varint(buf, pos)
    return (offset, size), pos


def _read_footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int]]:
    if len(data) < _FOOTER_SIZE:
        raise _Corrupt(f"only {len(data)} bytes, shorter than the {_FOOTER_SIZE}-byte table footer")
    footer = data[-_FOOTER_SIZE:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise _Corrupt("table magic number missing at the end (truncated, or not a checkpoint index)")
    metaindex, pos = _decode_handle(footer)
    index, _ = _decode_handle(footer, pos)
    return metaindex, index


def _read_block(data: bytes, handle: tuple[int, int], table_end: int) -> bytes:
    offset, size = handle
    if offset + size + _TRAILER_SIZE > table_end:
        raise _Corrupt(f"block at {offset} (+{size} bytes) runs past the end of the table")
    contents = data[offset: offset + size]
    kind = data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if crc32c(data[offset: offset + size + 1]) != unmask_crc(stored):
        raise _Corrupt(f"block checksum mismatch in the block at byte {offset}")
    if kind != 0:
        # TensorFlow has written uncompressed tables since 1.2; Snappy is not implemented here.
        raise _Corrupt(f"block at {offset} uses compression type {kind}; only uncompressed (0) is supported")
    return contents


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of one block, undoing the prefix compression of keys."""
    if len(block) < 4:
        raise _Corrupt("block shorter than its restart count")
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise _Corrupt(f"block restart array ({num_restarts} entries) larger than the block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _decode_varint(block, pos)
        unshared, pos = _decode_varint(block, pos)
        value_len, pos = _decode_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > end:
            raise _Corrupt(f"block entry at byte {pos} is inconsistent")
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        yield key, block[pos: pos + value_len]
        pos += value_len


def _table_items(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a table, in key order, with every block checksum verified."""
    _, index_handle = _read_footer(data)
    table_end = len(data) - _FOOTER_SIZE
    items: list[tuple[bytes, bytes]] = []
    for _, handle_bytes in _block_entries(_read_block(data, index_handle, table_end)):
        handle, _ = _decode_handle(handle_bytes)
        for key, value in _block_entries(_read_block(data, handle, table_end)):
            if items and key <= items[-1][0]:
                raise _Corrupt(f"keys out of order at {key!r}")
            items.append((key, value))
    return items


# ---------------------------------------------------------------- bundle (reading)

@dataclass(frozen=True)
class TensorInfo:
    """One checkpoint entry. ``dtype`` is TensorFlow's name (``float32``, ``string``, ...);
    ``crc32c`` is the masked checksum stored in the index."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int


@dataclass(frozen=True)
class _Header:
    num_shards: int
    big_endian: bool


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """The prefix of a checkpoint given its prefix, ``.index`` or ``.data-*`` file, or a
    directory holding exactly one ``*.index``."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise ValueError(
                f"{path}: expected exactly one TensorFlow checkpoint (*.index) in this directory, "
                f"found {[p.name for p in indexes]}; pass the checkpoint prefix instead"
            )
        path = indexes[0]
    if path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    return path.with_name(_DATA_SUFFIX.sub("", path.name))


def _data_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")


def _parse_header(value: bytes) -> _Header:
    fields = _parse_message(value)
    version = _parse_message(fields.get(3, [b""])[-1])  # VersionDef: producer 1, min_consumer 2
    if _scalar(version, 2) > _BUNDLE_VERSION:
        raise _Corrupt(
            f"written for bundle readers >= {_scalar(version, 2)} (this reader: {_BUNDLE_VERSION}); "
            "re-save it with an older TensorFlow"
        )
    if _BUNDLE_VERSION in _repeated_varints(version.get(3, [])):
        raise _Corrupt(f"bundle version {_BUNDLE_VERSION} is listed as a bad consumer")
    num_shards = _scalar(fields, 1)
    if num_shards < 1:
        raise _Corrupt(f"header says {num_shards} data shards")
    return _Header(num_shards=num_shards, big_endian=_scalar(fields, 2) == 1)


def _parse_shape(value: bytes) -> tuple[int, ...]:
    fields = _parse_message(value)
    if _scalar(fields, 3):
        raise _Corrupt("tensor of unknown rank")
    dims = tuple(_scalar(_parse_message(dim), 1) for dim in fields.get(2, []))
    if any(d < 0 for d in dims):
        raise _Corrupt(f"negative dimension in shape {dims}")
    return dims


def _parse_entry(name: str, value: bytes, header: _Header) -> TensorInfo:
    fields = _parse_message(value)
    if 7 in fields:
        raise _Corrupt(f"tensor {name!r} is stored in slices (a partitioned variable); not supported")
    code = _scalar(fields, 1)
    info = TensorInfo(
        name=name, dtype=_TF_DTYPE_NAMES.get(code, f"tf_dtype_{code}"),
        shape=_parse_shape(fields.get(2, [b""])[-1]), shard_id=_scalar(fields, 3),
        offset=_scalar(fields, 4), size=_scalar(fields, 5), crc32c=_scalar(fields, 6, signed64=False),
    )
    if not 0 <= info.shard_id < header.num_shards or info.offset < 0 or info.size < 0:
        raise _Corrupt(f"tensor {name!r} points outside the data (shard {info.shard_id}, "
                       f"offset {info.offset}, size {info.size})")
    return info


def _read_index(prefix: Path) -> tuple[_Header, dict[str, TensorInfo]]:
    index_path = prefix.with_name(prefix.name + ".index")
    if not index_path.is_file():
        raise FileNotFoundError(f"TensorFlow checkpoint index {index_path} not found")
    try:
        items = _table_items(index_path.read_bytes())
        if not items or items[0][0] != _HEADER_KEY:
            raise _Corrupt("no bundle header entry (key '') at the start of the table")
        header = _parse_header(items[0][1])
        infos = {}
        for key, value in items[1:]:
            name = key.decode("utf-8", errors="backslashreplace")
            infos[name] = _parse_entry(name, value, header)
    except _Corrupt as err:
        raise ValueError(
            f"{index_path}: not a readable TensorFlow checkpoint index ({err}). The file is truncated "
            "or corrupt: copy or download it again."
        ) from err
    return header, infos


def list_checkpoint(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Name -> dtype, shape and location of every tensor, from the ``.index`` alone."""
    return _read_index(checkpoint_prefix(path))[1]


def _check_shards(prefix: Path, header: _Header, infos: Iterable[TensorInfo]) -> list[Path]:
    """Data shard paths; a shard shorter than its entries need is reported before any read."""
    paths = [_data_path(prefix, shard, header.num_shards) for shard in range(header.num_shards)]
    needed = [0] * header.num_shards
    for info in infos:
        needed[info.shard_id] = max(needed[info.shard_id], info.offset + info.size)
    for path, need in zip(paths, needed):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint data shard {path} not found (next to {prefix.name}.index)")
        if path.stat().st_size < need:
            raise ValueError(
                f"{path}: truncated: {path.stat().st_size} bytes, but the index places tensors up to byte "
                f"{need}. Copy or download the checkpoint again."
            )
    return paths


def _decode_strings(buf: bytes, info: TensorInfo, big_endian: bool) -> tuple[np.ndarray, int]:
    """String tensor: varint lengths, masked CRC of the lengths, then the bytes.

    The checksum covers each length as a fixed uint32 (uint64 if larger), not as the
    varint bytes on disk, then the stored length checksum, then the strings.
    """
    count, pos, crc = math.prod(info.shape), 0, 0
    lengths = []
    order = ">" if big_endian else "<"
    for _ in range(count):
        length, pos = _decode_varint(buf, pos)
        lengths.append(length)
        crc = crc32c(struct.pack(order + ("I" if length <= 0xFFFFFFFF else "Q"), length), crc)
    if pos + 4 > len(buf) or unmask_crc(struct.unpack_from(order + "I", buf, pos)[0]) != crc:
        raise _Corrupt(f"string lengths of tensor {info.name!r} fail their checksum")
    crc = crc32c(buf[pos: pos + 4], crc)
    pos += 4
    out = np.empty(count, dtype=object)
    for i, length in enumerate(lengths):
        if pos + length > len(buf):
            raise _Corrupt(f"string tensor {info.name!r} runs past its recorded size")
        out[i] = buf[pos: pos + length]
        pos += length
    return out.reshape(info.shape), crc32c(buf[pos - sum(lengths): pos], crc)


def _decode_tensor(buf: np.ndarray, info: TensorInfo, big_endian: bool) -> np.ndarray:
    if info.dtype == "string":
        array, crc = _decode_strings(buf.tobytes(), info, big_endian)
    elif info.dtype in _NUMPY_DTYPES:
        dtype = _NUMPY_DTYPES[info.dtype]
        if info.size != math.prod(info.shape) * dtype.itemsize:
            raise _Corrupt(
                f"tensor {info.name!r}: {info.size} bytes recorded for shape {info.shape} {info.dtype}"
            )
        crc = crc32c(buf)
        array = buf.view(dtype.newbyteorder(">") if big_endian else dtype).reshape(info.shape)
        array = array.astype(dtype) if big_endian else array
    else:
        raise _Corrupt(
            f"tensor {info.name!r} has dtype {info.dtype}, which this reader does not support "
            f"(supported: {sorted(_NUMPY_DTYPES)} and string)"
        )
    if crc != unmask_crc(info.crc32c):
        raise _Corrupt(f"tensor {info.name!r} fails its CRC32C checksum (data corrupt)")
    return array


def _select(infos: dict[str, TensorInfo], names: Iterable[str] | None, prefix: Path) -> list[TensorInfo]:
    if names is None:
        return list(infos.values())
    names = list(names)
    missing = [n for n in names if n not in infos]
    if missing:
        raise KeyError(f"{prefix}: no tensors named {missing[:10]} in this checkpoint ({len(infos)} tensors)")
    return [infos[n] for n in names]


def read_checkpoint(
    path: str | os.PathLike, names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Tensors of a checkpoint (all, or only ``names``) as writable numpy arrays, checksums
    verified. ``path`` is the prefix, the ``.index`` or a ``.data-*`` file. String tensors
    come back as object arrays of ``bytes``."""
    prefix = checkpoint_prefix(path)
    header, infos = _read_index(prefix)
    wanted = _select(infos, names, prefix)
    shards = _check_shards(prefix, header, infos.values())
    out: dict[str, np.ndarray] = {}
    for shard_id, shard_path in enumerate(shards):
        with open(shard_path, "rb") as handle:
            for info in sorted((i for i in wanted if i.shard_id == shard_id), key=lambda i: i.offset):
                handle.seek(info.offset)
                buf = np.empty(info.size, np.uint8)
                if handle.readinto(memoryview(buf)) != info.size:
                    raise ValueError(f"{shard_path}: truncated while reading tensor {info.name!r}")
                try:
                    out[info.name] = _decode_tensor(buf, info, header.big_endian)
                except _Corrupt as err:
                    raise ValueError(f"{shard_path}: {err}. Copy or download the checkpoint again.") from err
    return {info.name: out[info.name] for info in wanted}


# ----------------------------------------------------------------- table (writing)

class _BlockBuilder:
    """Accumulates one table block: prefix-compressed keys, a restart point every N keys."""

    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.reset()

    def reset(self) -> None:
        self.buf, self.restarts, self.counter, self.last_key = bytearray(), [0], 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.counter >= self.restart_interval:
            self.restarts.append(len(self.buf))
            self.counter = 0
        else:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        self.buf += _encode_varint(shared) + _encode_varint(len(key) - shared) + _encode_varint(len(value))
        self.buf += key[shared:] + value
        self.last_key, self.counter = key, self.counter + 1

    def size_estimate(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        restarts = struct.pack(f"<{len(self.restarts)}I", *self.restarts)
        return bytes(self.buf) + restarts + struct.pack("<I", len(self.restarts))


def _shortest_separator(start: bytes, limit: bytes) -> bytes:
    """A short key >= ``start`` and < ``limit`` (LevelDB's bytewise comparator rule)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if common < min(len(start), len(limit)) and start[common] < 0xFF and start[common] + 1 < limit[common]:
        return start[:common] + bytes([start[common] + 1])
    return start


def _short_successor(key: bytes) -> bytes:
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def _write_block(out: bytearray, block: _BlockBuilder) -> bytes:
    """Append a block and its trailer to ``out``; return its encoded handle."""
    contents = block.finish() + b"\x00"  # compression type: none
    handle = _encode_varint(len(out)) + _encode_varint(len(contents) - 1)
    out += contents + struct.pack("<I", mask_crc(crc32c(contents)))
    block.reset()
    return handle


def _build_table(items: list[tuple[bytes, bytes]], block_size: int, restart_interval: int) -> bytes:
    """A sorted table laid out as TensorFlow's TableBuilder lays it out."""
    out, data, index = bytearray(), _BlockBuilder(restart_interval), _BlockBuilder(1)
    pending: bytes | None = None  # handle of a flushed block still waiting for its index key
    last_key = b""
    for n, (key, value) in enumerate(items):
        if n and len(key) + len(value) >= 2 * block_size and data.buf:
            pending = _write_block(out, data)
        if pending is not None:
            index.add(_shortest_separator(last_key, key), pending)
            pending = None
        data.add(key, value)
        last_key = key
        if data.size_estimate() >= block_size:
            pending = _write_block(out, data)
    if data.buf:
        pending = _write_block(out, data)
    metaindex_handle = _write_block(out, _BlockBuilder(restart_interval))
    if pending is not None:
        index.add(_short_successor(last_key), pending)
    index_handle = _write_block(out, index)
    footer = metaindex_handle + index_handle
    return bytes(out + footer + bytes(40 - len(footer)) + struct.pack("<Q", _MAGIC))


# ---------------------------------------------------------------- bundle (writing)

def _entry_proto(dtype_code: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_pb_bytes(2, _pb_varint(1, d)) for d in shape)
    return (
        _pb_varint(1, dtype_code) + _pb_bytes(2, dims) + _pb_varint(4, offset) + _pb_varint(5, size)
        + _pb_fixed32(6, mask_crc(crc))
    )


def _header_proto() -> bytes:
    # num_shards 1, endianness LITTLE (0, omitted), version {producer 1, min_consumer 0}
    return _pb_varint(1, 1) + _pb_bytes(3, _pb_varint(1, _BUNDLE_VERSION))


def _little_endian(name: str, value: np.ndarray) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.name not in _NUMPY_DTYPES:
        raise ValueError(
            f"tensor {name!r} has dtype {array.dtype}; write_checkpoint supports {sorted(_NUMPY_DTYPES)}"
        )
    # astype, not ascontiguousarray: the latter turns a scalar (shape ()) into shape (1,)
    return array.astype(array.dtype.newbyteorder("<"), order="C", copy=False)


def write_checkpoint(
    prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray], *,
    block_size: int = _BLOCK_SIZE, restart_interval: int = _RESTART_INTERVAL,
) -> None:
    """Write ``tensors`` as the checkpoint ``<prefix>.index`` + ``<prefix>.data-00000-of-00001``.

    Tensor bytes go to the data file in the mapping's order (as TensorFlow's
    ``BundleWriter`` appends in call order); the index is sorted. Both files are written
    to temporary names and renamed, the index last, so a reader never sees a half file.
    ``block_size`` and ``restart_interval`` exist to test multi-block tables.
    """
    prefix = Path(prefix)
    bad = [n for n in tensors if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(f"tensor names must be non-empty strings, got {bad[:5]}")
    entries: list[tuple[bytes, bytes]] = []
    with atomic_path(prefix.with_name(prefix.name + ".index")) as index_tmp:
        with atomic_path(_data_path(prefix, 0, 1)) as data_tmp:
            offset = 0
            with open(data_tmp, "wb") as handle:
                for name, value in tensors.items():
                    array = _little_endian(name, value)
                    handle.write(memoryview(array.reshape(-1).view(np.uint8)))
                    code = _TF_DTYPE_CODES[array.dtype.name]
                    entry = _entry_proto(code, array.shape, offset, array.nbytes, crc32c(array))
                    entries.append((name.encode("utf-8"), entry))
                    offset += array.nbytes
            items = [(_HEADER_KEY, _header_proto())] + sorted(entries)
            index_tmp.write_bytes(_build_table(items, block_size, restart_interval))
