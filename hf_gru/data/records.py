"""Texts to classify, read from a file a record at a time (``hf-gru predict``), in the formats training reads."""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .labels import TEXT_COLUMN_CANDIDATES, _pick_columns
from .readers import DataFileError, _file_format, _open_binary

_BOM = "\ufeff"
_BATCH_ROWS = 1024  # parquet rows read at a time


def iter_input_records(
    path: str | os.PathLike[str], text_column: str | None = None
) -> tuple[str, Iterator[tuple[int, str | None]]]:
    """(format name, iterator of (1-based line or row number, text or None when blank)) for any input file.

    By extension, looking through ``.gz``/``.bz2``/``.xz``: ``.jsonl``/``.ndjson`` (one JSON object a line) and
    ``.json`` (JSON Lines or one array of objects), ``.csv``/``.tsv`` (a header row), ``.parquet``: the text is
    ``text_column`` (comma-separated names are joined by newlines, as in training) or the column training would
    detect (``text``, ``sentence``, ``review``...); any other extension is plain text, one text a line. Numbers
    are the line a record starts on (JSON Lines, CSV/TSV with the header as line 1, plain text) or the row number
    (a JSON array, parquet); a record whose text is missing or blank yields None, so output lines up with input.
    A UTF-8 byte order mark is ignored. Records are read as they are consumed, so memory stays flat on any size;
    the text column is checked before this returns.
    """
    path = Path(path)
    compression = path.suffix.lower() if path.suffix.lower() in (".gz", ".bz2", ".xz") else ""
    found = _file_format(path)
    kind = found[0] if found else "text"
    plain = path.with_suffix("") if compression else path
    if kind == "csv":
        delimiter = "," if plain.suffix.lower() == ".csv" else "\t"
        name, records = ("CSV" if delimiter == "," else "TSV"), _csv_records(path, text_column, delimiter)
    elif kind == "json":
        name, records = _json_records(path, text_column)
    elif kind == "parquet":
        name, records = "Parquet", _parquet_records(path, text_column)
    else:
        name, records = "plain text (one text a line)", _text_records(path)
    return name + (f", {compression[1:]}-compressed" if compression else ""), records


def _decoded(path: Path) -> Iterator[str]:
    """Lines of ``path`` (newlines kept) as strict UTF-8, BOM dropped; a DataFileError names an undecodable line."""
    with _open_binary(path) as raw:
        for number, line in enumerate(raw, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFileError(path, number, f"invalid UTF-8 ({e.reason}); re-encode the file as UTF-8") from e
            yield text.removeprefix(_BOM) if number == 1 else text


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based number, line without its newline)."""
    for number, line in enumerate(_decoded(path), 1):
        yield number, line.rstrip("\r\n")


def _text_records(path: Path) -> Iterator[tuple[int, str | None]]:
    for number, line in _lines(path):
        yield number, line if line.strip() else None


def record_text(row: dict[str, Any], columns: Sequence[str]) -> str | None:
    """The row's text the way training builds it: non-blank parts of ``columns`` joined by newlines (None: blank).

    Also what the Ray and datatrove adapters call on their batches, so every engine reads a row the same way."""
    parts = [str(row[c]) for c in columns if row.get(c) is not None and str(row[c]).strip()]
    return "\n".join(parts) if parts else None


def text_columns(names: Sequence[str], text_column: str | None, where: str | Path) -> tuple[str, ...]:
    """The columns holding the text: ``text_column`` (comma-separated names) or the one training would detect;
    a ValueError naming ``where`` (a file, a dataset) and the columns it has otherwise."""
    try:
        return _pick_columns(text_column, TEXT_COLUMN_CANDIDATES, list(names), "text")
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _csv_records(path: Path, text_column: str | None, delimiter: str) -> Iterator[tuple[int, str | None]]:
    lines = _decoded(path)  # the header, read now so a missing column is reported before any output
    header = next(csv.reader(lines, delimiter=delimiter), None)
    lines.close()
    if not header:
        raise DataFileError(path, None, "the file is empty (a header row naming the text column is expected)")
    columns = text_columns(header, text_column, path)

    def records() -> Iterator[tuple[int, str | None]]:
        quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL  # TSV as training reads it
        reader = csv.reader(_decoded(path), delimiter=delimiter, quoting=quoting)
        next(reader)
        start = reader.line_num + 1  # the line the next record starts on (a quoted field may span lines)
        for row in reader:
            if row:  # a blank line is no record
                yield start, record_text(dict(zip(header, row)), columns)
            start = reader.line_num + 1

    return records()


def _json_records(path: Path, text_column: str | None) -> tuple[str, Iterator[tuple[int, str | None]]]:
    """JSON Lines (a record per line), or one JSON array of records (read whole: an array has no line structure)."""
    first = next(((n, line) for n, line in _lines(path) if line.strip()), None)
    if first is None:
        raise DataFileError(path, None, "the file is empty")
    if first[1].lstrip().startswith("["):
        rows = _parse(path, None, "".join(_decoded(path)))
        if not isinstance(rows, list):
            raise DataFileError(path, None, "expected a JSON array of objects or one JSON object per line")
        return "JSON array", _rows(path, enumerate(rows, 1), text_column)
    return "JSON Lines", _rows(path, ((n, _parse(path, n, line)) for n, line in _lines(path)), text_column)


def _parse(path: Path, number: int | None, text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = number if number is not None else e.lineno
        raise DataFileError(path, where, f"invalid JSON ({e.msg} at column {e.colno})") from e


def _rows(path: Path, numbered: Iterator[tuple[int, Any]], text_column: str | None) -> Iterator[tuple[int, str | None]]:
    """Records → texts; the columns come from the first record, found now so a missing one is reported at once."""
    pending: list[tuple[int, Any]] = []
    for number, row in numbered:
        pending.append((number, row))
        if row is not None:
            break
    first = next((row for _, row in pending if row is not None), None)
    if first is not None and not isinstance(first, dict):
        raise DataFileError(path, pending[-1][0], f"expected a JSON object with a text field, got {first!r:.80}")
    columns = text_columns(list(first or {}), text_column, path) if first is not None else ()

    def records() -> Iterator[tuple[int, str | None]]:
        for number, row in itertools.chain(pending, numbered):
            if row is None:
                yield number, None
            elif not isinstance(row, dict):
                raise DataFileError(path, number, f"expected a JSON object with a text field, got {row!r:.80}")
            else:
                yield number, record_text(row, columns)

    return records()


def _parquet_records(path: Path, text_column: str | None) -> Iterator[tuple[int, str | None]]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(_open_binary(path) if path.suffix.lower() in (".gz", ".bz2", ".xz") else path)
    columns = text_columns(handle.schema_arrow.names, text_column, path)

    def records() -> Iterator[tuple[int, str | None]]:
        number = 0
        for batch in handle.iter_batches(batch_size=_BATCH_ROWS, columns=list(columns)):
            for row in batch.to_pylist():
                number += 1
                yield number, record_text(row, columns)

    return records()
