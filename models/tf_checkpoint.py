"""Read TensorFlow 1 checkpoints (tensor bundles) without TensorFlow.

A bundle is two files: ``<prefix>.index``, a LevelDB-format sorted table whose keys are
variable names and whose values are ``BundleEntryProto`` messages (dtype, shape, shard,
offset, size), and ``<prefix>.data-00000-of-00001`` holding the raw little-endian tensor
bytes.  Only what musicnn's checkpoints use is supported: uncompressed blocks, a single
shard, numeric dtypes.  Anything else raises ``CheckpointError`` rather than guessing.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_BYTES = 48
_BLOCK_TRAILER_BYTES = 5  # 1 byte compression type + 4 bytes crc

# tensorflow/core/framework/types.proto
_DTYPES = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    19: np.float16,
}


class CheckpointError(ValueError):
    """The file is not a tensor bundle this reader understands."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint too long")


def _proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """Decode a protobuf message into (field number, wire type, value) triples."""
    fields = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        fields.append((number, wire, value))
    return fields


def _block_entries(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The key/value entries of one table block (prefix-compressed keys)."""
    if offset + size + _BLOCK_TRAILER_BYTES > len(table):
        raise CheckpointError("block points past the end of the index file")
    if table[offset + size] != 0:
        raise CheckpointError("compressed index blocks are not supported")
    block = table[offset : offset + size]
    (n_restarts,) = struct.unpack_from("<I", block, size - 4)
    end = size - 4 - 4 * n_restarts
    entries = []
    pos = 0
    key = b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _read_index(path: Path) -> dict[str, bytes]:
    table = path.read_bytes()
    if len(table) < _FOOTER_BYTES:
        raise CheckpointError(f"{path} is too short to be a checkpoint index")
    footer = table[-_FOOTER_BYTES:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_BYTES - 8)
    if magic != _TABLE_MAGIC:
        raise CheckpointError(f"{path} is not a TensorFlow checkpoint index (bad magic)")
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    entries: dict[str, bytes] = {}
    for _, handle in _block_entries(table, index_offset, index_size):
        block_offset, p = _varint(handle, 0)
        block_size, _ = _varint(handle, p)
        for key, value in _block_entries(table, block_offset, block_size):
            entries[key.decode("utf-8")] = value
    return entries


def read_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """All tensors of the bundle at ``prefix`` (the path without ``.index``), by variable name."""
    prefix = str(prefix)
    index_path = Path(prefix + ".index")
    data_path = Path(prefix + ".data-00000-of-00001")
    for p in (index_path, data_path):
        if not p.is_file():
            raise CheckpointError(f"missing checkpoint file {p}")
    data = data_path.read_bytes()
    tensors: dict[str, np.ndarray] = {}
    for name, value in _read_index(index_path).items():
        if name == "":  # the BundleHeaderProto, not a tensor
            continue
        dtype_code, shape, shard, offset, size = 0, [], 0, 0, 0
        for number, _, field in _proto_fields(value):
            if number == 1:
                dtype_code = field
            elif number == 2:
                for dim_number, _, dim in _proto_fields(field):
                    if dim_number == 2:  # TensorShapeProto.dim
                        size_fields = [v for n, _, v in _proto_fields(dim) if n == 1]
                        shape.append(size_fields[0] if size_fields else 0)
            elif number == 3:
                shard = field
            elif number == 4:
                offset = field
            elif number == 5:
                size = field
            elif number == 7:
                raise CheckpointError(f"{name}: sliced tensors are not supported")
        if dtype_code not in _DTYPES:
            raise CheckpointError(f"{name}: unsupported dtype code {dtype_code}")
        if shard != 0:
            raise CheckpointError(f"{name}: multi-shard checkpoints are not supported")
        dtype = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.itemsize != size or offset + size > len(data):
            raise CheckpointError(f"{name}: entry size does not match its shape {shape}")
        array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        tensors[name] = array.reshape(shape).astype(dtype.newbyteorder("="))
    return tensors
