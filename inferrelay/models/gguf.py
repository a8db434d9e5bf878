"""A GGUF file's header, read without the optional `gguf` package: metadata, tensors, and whether the file is whole.

The layout (GGUF v2 and v3): magic, version, tensor count, metadata count,
the typed key/value pairs, the tensor infos, then the data section at the
next multiple of `general.alignment`. Large arrays (tokenizer vocabularies)
are skipped, keeping only their length.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import IO, Any

MAGIC = b"GGUF"
ARRAY_KEEP = 64
"""Arrays longer than this keep only their length."""

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# ggml type id: (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
}

FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S"}
FILE_TYPES |= {12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K"}
FILE_TYPES |= {32: "BF16"}


class GgufError(ValueError):
    """A file that is not a whole, readable GGUF; the message says what is wrong and where."""


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        return prod(self.shape)

    @property
    def n_bytes(self) -> int | None:
        known = GGML_TYPES.get(self.ggml_type)
        if known is None:
            return None
        _, block, size = known
        return self.n_elements // block * size


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[GgufTensor]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return str(value) if value is not None else None

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def type_name(self) -> str | None:
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        common = Counter(t.ggml_type for t in self.tensors).most_common(1)
        return GGML_TYPES.get(common[0][0], (None,))[0] if common else None

    def field(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Reader:
    def __init__(self, handle: IO[bytes], path: Path) -> None:
        self._handle = handle
        self._path = path

    def take(self, n: int) -> bytes:
        at = self._handle.tell()
        data = self._handle.read(n)
        if len(data) != n:
            raise GgufError(f"{self._path}: the header ends early at byte {at + len(data)} (truncated file)")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.scalar("<Q")
        if length > 1 << 24:
            raise GgufError(f"{self._path}: a string of {length} bytes at byte {self._handle.tell()}: corrupt header")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind, count = self.scalar("<I"), self.scalar("<Q")
            if count <= ARRAY_KEEP:
                return [self.value(item_kind) for _ in range(count)]
            if item_kind in _SCALARS:
                self.take(struct.calcsize(_SCALARS[item_kind]) * count)
            else:
                for _ in range(count):
                    self.value(item_kind)
            return {"array_length": count}
        raise GgufError(f"{self._path}: unknown value type {kind} at byte {self._handle.tell()}: corrupt header")


def read_gguf_header(path: Path) -> GgufHeader:
    file_size = path.stat().st_size
    with path.open("rb") as handle:
        reader = _Reader(handle, path)
        if handle.read(4) != MAGIC:
            raise GgufError(f"{path}: no GGUF magic at byte 0: not a GGUF file")
        version = reader.scalar("<I")
        if version not in (2, 3):
            raise GgufError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
        tensor_count, kv_count = reader.scalar("<Q"), reader.scalar("<Q")
        metadata = {}
        for _ in range(kv_count):
            key = reader.string()
            metadata[key] = reader.value(reader.scalar("<I"))
        tensors = []
        for _ in range(tensor_count):
            name = reader.string()
            shape = tuple(reader.scalar("<Q") for _ in range(reader.scalar("<I")))
            tensors.append(GgufTensor(name, shape, reader.scalar("<I"), reader.scalar("<Q")))
        alignment = int(metadata.get("general.alignment", 32))
        data_offset = -(-handle.tell() // alignment) * alignment
    header = GgufHeader(version, metadata, tensors, data_offset, file_size)
    _check_whole(path, header)
    return header


def _check_whole(path: Path, header: GgufHeader) -> None:
    """Every tensor's bytes must lie inside the file."""
    expected = header.data_offset
    for tensor in header.tensors:
        size = tensor.n_bytes
        if size is not None:
            expected = max(expected, header.data_offset + tensor.offset + size)
    if expected > header.file_size:
        raise GgufError(
            f"{path}: truncated: its tensors need {expected} bytes, the file has {header.file_size} "
            "(an interrupted download or copy?)"
        )
