"""Read a batch job's input (JSONL, CSV or Parquet) as one `id`/`text` table in input order.

Every format ends in the same two-column table, so sharding and output never
care where rows came from; the fingerprint lets a resumed job refuse an input
that changed under it.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

_BLOCK = 1 << 20


def read_rows(path: Path, text_column: str = "text", id_column: str = "id") -> pa.Table:
    """The input's `id` and `text` columns; ids are row numbers (from 0) when the file has none."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        table = _read_jsonl(path, text_column, id_column)
    elif suffix == ".csv":
        # Pinned to string so a column of digits stays text rather than becoming integers.
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={text_column: pa.string()}))
    elif suffix == ".parquet":
        names = pq.read_schema(path).names
        if text_column not in names:
            raise _no_text_column(path, text_column, names)
        table = pq.read_table(path, columns=[c for c in (id_column, text_column) if c in names])
    else:
        raise ValueError(f"{path}: unsupported input format {path.suffix!r}; use .jsonl, .csv or .parquet")
    if text_column not in table.column_names:
        raise _no_text_column(path, text_column, table.column_names)
    if id_column in table.column_names:
        ids = table[id_column]
    else:
        ids = pa.chunked_array([pa.array(range(table.num_rows), pa.int64())])
    return pa.table({"id": ids, "text": table[text_column]})


def _no_text_column(path: Path, text_column: str, names: list[str]) -> ValueError:
    return ValueError(f"{path}: no column {text_column!r}; its columns are {names}")


def _read_jsonl(path: Path, text_column: str, id_column: str) -> pa.Table:
    """Only the two wanted columns are kept; a bad line is named by its number."""
    texts: list[Any] = []
    ids: list[Any] = []
    first_without_id = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            if text_column not in record:
                raise ValueError(f"{path}, line {number}: no {text_column!r} key; its keys are {sorted(record)}")
            if id_column not in record and not first_without_id:
                first_without_id = number
            texts.append(record[text_column])
            ids.append(record.get(id_column))
    if not any(i is not None for i in ids):
        return pa.table({text_column: pa.array(texts)})
    if first_without_id:
        raise ValueError(f"{path}, line {first_without_id}: no {id_column!r} while other lines have one")
    return pa.table({id_column: pa.array(ids), text_column: pa.array(texts)})


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes, streamed so a large input never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def pick_text_column(path: Path, candidates: tuple[str, ...]) -> str:
    """The first of `candidates` the input has, judged from its header, schema or first JSON line."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        names = pq.read_schema(path).names
    elif suffix == ".csv":
        with path.open(newline="") as f:
            names = next(csv.reader(f), [])
    else:
        names = []
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        break  # read_rows names the line and what is wrong with it
                    names = list(record) if isinstance(record, dict) else []
                    break
    for name in candidates:
        if name in names:
            return name
    raise ValueError(f"{path}: none of the columns {list(candidates)}; its columns are {names}")
