"""Data files and class folders on disk → ``datasets`` splits, with errors that name the file and line."""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from datasets import Dataset, Features, IterableDataset, Value, load_dataset
from datasets.exceptions import DatasetGenerationError

logger = logging.getLogger(__name__)

_IGNORED_CLASS_FOLDERS = frozenset({"unsup", "unsupervised", "unlabeled", "unlabelled"})  # aclImdb's train/unsup

# file suffix → (datasets builder, builder kwargs); TSV is the csv builder with a tab and no quoting (GLUE style)
_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": 3}),
    ".tab": ("csv", {"delimiter": "\t", "quoting": 3}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".ndjson": ("json", {}),
    ".parquet": ("parquet", {}),
    ".pq": ("parquet", {}),
}
_COMPRESSIONS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


class DataFileError(ValueError):
    """A data file that cannot be decoded or parsed; carries the file and (when known) the 1-based line."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"cannot read {where}: {reason}")


def _file_format(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(builder, kwargs) for a data file name, looking through one compression suffix."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


_FORMATS_HELP = "a .csv, .tsv, .json, .jsonl or .parquet file, optionally compressed (.gz, .bz2, .xz)"


def _label_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` holding .txt files (one per label), minus unlabelled ones like aclImdb's ``unsup``."""
    return [
        d
        for d in sorted(folder.iterdir())
        if d.is_dir() and d.name.lower() not in _IGNORED_CLASS_FOLDERS and any(d.glob("*.txt"))
    ]


def _load_data_files(files: Sequence[Path], streaming: bool) -> Dataset | IterableDataset:
    """One split through ``datasets``' csv/json/parquet builders (cached; compression handled by ``datasets``)."""
    builder, kwargs = _file_format(files[0])  # type: ignore[misc]
    _require_rows(files, builder)
    try:
        return load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=streaming, **kwargs)
    except Exception as error:  # the loader's failure is the cue to look for the offending line, not before
        raise _locate_failure(files, error) from error


def _require_rows(files: Sequence[Path], builder: str) -> None:
    """Say which file is empty or holds no rows, instead of the loader's ``StopIteration`` / "no data" errors.

    A few bytes per file are read (a parquet file's footer); a split some of whose files are empty is still loaded.
    """
    problems = [(path, _no_rows(path, builder)) for path in files]
    if all(problem for _, problem in problems):
        raise DataFileError(", ".join(str(p) for p, _ in problems), None, str(problems[0][1]))


def _no_rows(path: Path, builder: str) -> str | None:
    """Why ``path`` holds no rows ("the file is empty", "... no rows"), or None when it has (or may have) some."""
    if builder == "parquet":
        import pyarrow.parquet as pq

        try:
            return None if pq.ParquetFile(path).metadata.num_rows else "the file has no rows"
        except Exception:  # not parquet at all: the loader's error, located later, says so
            return None
    with _open_binary(path) as fh:
        lines = (line for line in fh if line.strip() not in (b"", b"\xef\xbb\xbf"))
        first, second = next(lines, None), next(lines, None)
    if first is None:
        return "the file is empty"
    if builder == "csv" and second is None:
        return "the file has a header line but no rows"
    if builder == "json" and second is None and first.strip().lstrip(b"\xef\xbb\xbf") in (b"[]", b"{}"):
        return "the file has no rows"
    return None


def _locate_failure(files: Sequence[Path], error: Exception) -> DataFileError:
    """A DataFileError naming the first undecodable/unparsable line among ``files`` (or the loader's own reason)."""
    for path in files:
        problem = _first_bad_line(path, _file_format(path)[0])  # type: ignore[index]
        if problem:
            return DataFileError(path, *problem)
    cause = error.__cause__ or error
    return DataFileError(", ".join(map(str, files)), None, f"{type(cause).__name__}: {cause}")


def _open_binary(path: Path) -> IO[bytes]:
    return _COMPRESSIONS.get(path.suffix.lower(), open)(path, "rb")


def _first_bad_line(path: Path, builder: str) -> tuple[int, str] | None:
    """(line, reason) of the first line that is not UTF-8 or, for JSON Lines, not a JSON value; None if none is."""
    if builder == "parquet":
        return None
    with _open_binary(path) as fh:
        json_lines = builder == "json" and not fh.read(1024).lstrip().startswith(b"[")
    with _open_binary(path) as fh:
        for number, line in enumerate(fh, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                return number, f"invalid UTF-8 ({e.reason} at byte {e.start} of the line; re-encode the file as UTF-8)"
            if json_lines and text.strip():
                try:
                    json.loads(text)
                except json.JSONDecodeError as e:
                    return number, f"invalid JSON ({e.msg} at column {e.colno})"
    if builder == "json" and not json_lines:
        with _open_binary(path) as fh:
            try:
                json.loads(fh.read())
            except json.JSONDecodeError as e:
                return e.lineno, f"invalid JSON ({e.msg} at column {e.colno})"
    return None


def _read_text_file(path: Path) -> str:
    """A whole .txt file as strict UTF-8, or a DataFileError naming the offending line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataFileError(path, line, f"invalid UTF-8 ({e.reason}); re-encode the file as UTF-8") from e


def _generate_class_folder(files: Sequence[tuple[str, str, int, int]]) -> Iterator[dict[str, str]]:
    """Rows of a folder-per-class split; mtimes and sizes ride along in ``files`` only to key the cache."""
    for path, label, _mtime, _size in files:
        yield {"text": _read_text_file(Path(path)), "label": label}


def _load_class_folders(folder: Path, streaming: bool) -> Dataset | IterableDataset:
    ignored = sorted(d.name for d in folder.iterdir() if d.is_dir() and d.name.lower() in _IGNORED_CLASS_FOLDERS)
    if ignored:
        logger.info("ignoring unlabelled folder(s) %s in %s", ", ".join(ignored), folder)
    files = [
        (str(p), label_dir.name, p.stat().st_mtime_ns, p.stat().st_size)
        for label_dir in _label_dirs(folder)
        for p in sorted(label_dir.glob("*.txt"))
    ]
    features = Features({"text": Value("string"), "label": Value("string")})
    kwargs = {"gen_kwargs": {"files": files}, "features": features}
    if streaming:
        return IterableDataset.from_generator(_generate_class_folder, **kwargs)
    try:
        return Dataset.from_generator(_generate_class_folder, **kwargs)
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, DataFileError):
            raise error.__cause__ from None
        raise
