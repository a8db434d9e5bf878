"""A GGUF file's header, read without the optional `gguf` package: metadata, tensors, and whether the file is whole.

The layout (GGUF v2 and v3): magic, version, tensor count, metadata count,
the typed key/value pairs, the tensor infos, then the data section at the
next multiple of `general.alignment`. The file is memory-mapped, so skipping a
tokenizer's vocabulary (kept only as its length) costs no reads.
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass
from math import prod
from pathlib import Path

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS: more is a corrupt header, not a real tensor
ARRAY_KEEP = 64
"""Arrays longer than this keep only their length (a vocabulary has tens of thousands of items)."""

# GGUF value types: the scalars by id and their little-endian layout; 8 is a string, 9 an array.
_LAYOUTS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_SCALARS = {kind: struct.Struct(layout) for kind, layout in _LAYOUTS.items()}
_STRING, _ARRAY = 8, 9
_U32, _U64 = _SCALARS[4], _SCALARS[10]

# ggml type id: (name, elements per block, bytes per block), as ggml's type traits.
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
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}

# general.file_type (llama.cpp's LLAMA_FTYPE): the quantisation the file was made with.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip


class GgufError(ValueError):
    """A file that is not a whole, readable GGUF; the message says what is wrong and at which byte."""


@dataclass(frozen=True)
class SkippedArray:
    """A long metadata array, kept as its length only."""

    item_type: int
    length: int


@dataclass(frozen=True)
class GgufTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        return prod(self.shape)

    @property
    def n_bytes(self) -> int | None:
        """Bytes in the data section; None for a ggml type this reader does not know."""
        if self.ggml_type not in GGML_TYPES:
            return None
        _, block, size = GGML_TYPES[self.ggml_type]
        return self.n_elements // block * size


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, object]
    tensors: list[GgufTensor]
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str | None:
        value = self.metadata.get("general.architecture")
        return value if isinstance(value, str) else None

    @property
    def parameters(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def type_name(self) -> str | None:
        """The file's quantisation: general.file_type when it names one, else its most common tensor type."""
        file_type = self.metadata.get("general.file_type")
        if isinstance(file_type, int) and file_type in FILE_TYPES:
            return FILE_TYPES[file_type]
        common = Counter(t.ggml_type for t in self.tensors).most_common(1)
        if not common or common[0][0] not in GGML_TYPES:
            return None
        return GGML_TYPES[common[0][0]][0]

    def field(self, key: str, default: object = None) -> object:
        """An architecture's own key: field("block_count") reads "llama.block_count" in a llama file."""
        return self.metadata.get(f"{self.architecture}.{key}", default)


class _Cursor:
    """Little-endian values from the mapped file; running past its end is a truncated header."""

    def __init__(self, data: mmap.mmap, path: Path) -> None:
        self.data = data
        self.path = path
        self.at = 0

    def fail(self, what: str, at: int | None = None) -> GgufError:
        return GgufError(f"{self.path}: at byte {self.at if at is None else at}: {what}")

    def advance(self, n: int) -> int:
        start, end = self.at, self.at + n
        if end > len(self.data):
            raise self.fail(f"the header ends early: {n} more bytes needed, the file has {len(self.data)} (truncated)")
        self.at = end
        return start

    def unpack(self, kind: struct.Struct) -> object:
        return kind.unpack_from(self.data, self.advance(kind.size))[0]

    def count(self, kind: struct.Struct = _U64) -> int:
        return int(kind.unpack_from(self.data, self.advance(kind.size))[0])

    def value_type(self) -> int:
        at, kind = self.at, self.count(_U32)
        if kind not in _SCALARS and kind not in (_STRING, _ARRAY):
            raise self.fail(f"unknown value type {kind}: corrupt header", at)
        return kind

    def string(self) -> str:
        length = self.count()
        start = self.advance(length)
        return self.data[start : start + length].decode("utf-8", errors="replace")

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        item_type, length = self.value_type(), self.count()  # the rest is an array
        if length <= ARRAY_KEEP:
            return [self.value(item_type) for _ in range(length)]
        if item_type in _SCALARS:
            self.advance(_SCALARS[item_type].size * length)
        elif item_type == _STRING:
            for _ in range(length):
                self.advance(self.count())
        else:
            for _ in range(length):
                self.value(item_type)
        return SkippedArray(item_type, length)


def read_gguf_header(path: Path) -> GgufHeader:
    """The header of the GGUF at `path`; GgufError if it is corrupt, truncated or of another version."""
    with path.open("rb") as handle:
        if handle.read(len(MAGIC)) != MAGIC:
            raise GgufError(f"{path}: no GGUF magic at byte 0: not a GGUF file")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cursor = _Cursor(data, path)
            cursor.advance(len(MAGIC))
            header = _read(cursor)
    _check_whole(path, header)
    return header


def _read(cursor: _Cursor) -> GgufHeader:
    version = cursor.count(_U32)
    if version not in VERSIONS:
        raise cursor.fail(f"GGUF version {version} is not supported (2 and 3 are)", 4)
    tensor_count, kv_count = cursor.count(), cursor.count()
    metadata: dict[str, object] = {}
    for _ in range(kv_count):
        key = cursor.string()
        metadata[key] = cursor.value(cursor.value_type())
    tensors = [_tensor(cursor) for _ in range(tensor_count)]
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise cursor.fail(f"general.alignment is {alignment!r}, not a positive integer: corrupt header")
    data_offset = -(-cursor.at // alignment) * alignment
    return GgufHeader(version, metadata, tensors, data_offset, len(cursor.data))


def _tensor(cursor: _Cursor) -> GgufTensor:
    start = cursor.at
    name = cursor.string()
    n_dims = cursor.count(_U32)
    if n_dims > MAX_DIMS:
        raise cursor.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS}): corrupt header", start)
    shape = tuple(cursor.count() for _ in range(n_dims))
    return GgufTensor(name, shape, cursor.count(_U32), cursor.count())


def _check_whole(path: Path, header: GgufHeader) -> None:
    """Every tensor of a known type must lie inside the file: a cut download fails here, not in the engine."""
    expected = header.data_offset
    for tensor in header.tensors:
        size = tensor.n_bytes
        if size is not None:
            expected = max(expected, header.data_offset + tensor.offset + size)
    if expected > header.file_size:
        raise GgufError(
            f"{path}: truncated: expected {expected} bytes, the file has {header.file_size} "
            f"(its data section starts at byte {header.data_offset}; an interrupted download or copy?)"
        )
