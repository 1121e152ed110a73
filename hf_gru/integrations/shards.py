"""A corpus as shards: finding them (a glob, a folder, a Hub dataset), naming their outputs, writing each output
atomically, and what a rerun may skip. No engine here: `ray_job` runs these pieces on Ray's workers.

One input shard gives one output shard, written under a temporary name beside it and renamed when complete, so an
output that exists is finished: a rerun skips it, and a killed job loses no row and writes none twice. A manifest
in the output folder records the model and options, so a rerun cannot mix the answers of two models.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.readers import _COMPRESSIONS, _FORMATS
from ..run_directory import CONFIG_FILE, ONNX_SOURCE_FILE, WEIGHTS_FILE, export_source

OUTPUT_FORMATS = ("parquet", "jsonl")
MANIFEST_FILE = "_hf_gru_predict.json"
LOCK_FILE = "_hf_gru_predict.lock"
DATA_SUFFIXES = (*_FORMATS, ".txt")  # what a folder's data files end with (a glob takes any file, as predict does)
_GLOB_CHARS = frozenset("*?[")
CHUNK_ROWS = 2048  # rows an output shard is written by (a Parquet row group, a JSON Lines write)


@dataclass(frozen=True)
class Shard:
    """One input file: `source` is what its output rows' `source` column says; `name` its path under the input
    root, which names its output. A Hub shard (`repo_id` set) is downloaded by the worker that labels it."""

    source: str
    name: str
    path: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    endpoint: str | None = None

    def local_path(self) -> Path:
        """The file to read: the local path, or the Hub file downloaded into this node's cache."""
        if self.repo_id is None:
            return Path(self.path)  # type: ignore[arg-type]
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(
                self.repo_id, self.name, repo_type="dataset", revision=self.revision, endpoint=self.endpoint
            )
        )

    def to_item(self) -> dict[str, Any]:
        return asdict(self)


def is_data_file(path: str | Path) -> bool:
    """A name ending in a data suffix, looking through one compression suffix (`x.jsonl.gz`)."""
    suffixes = [s.lower() for s in Path(path).suffixes[-2:]]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in DATA_SUFFIXES


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def find_shards(reference: str) -> list[Shard]:
    """The shards of `--input`: a folder (its data files, recursively, hidden ones skipped), a glob (`**` recurses),
    one file, or a Hub dataset id (its data files at the current commit). Sorted by name."""
    path = Path(reference)
    if path.is_dir():
        files = [f for f in sorted(path.rglob("*")) if f.is_file() and is_data_file(f)]
        shards = [_local(f, path) for f in files if not _hidden(f.relative_to(path))]
        formats = ", ".join(sorted(DATA_SUFFIXES))
        if not shards:
            raise ValueError(f"--input {reference} holds no data files ({formats}; optionally .gz, .bz2 or .xz)")
        return shards
    if _GLOB_CHARS & set(reference):
        files = [Path(f) for f in sorted(glob.glob(reference, recursive=True)) if Path(f).is_file()]
        if not files:
            raise ValueError(f"--input {reference} matches no file")
        return [_local(f, _glob_root(reference)) for f in files]
    if path.is_file():
        return [_local(path, path.parent)]
    if reference.count("/") == 1 and not reference.startswith((".", "/")):
        return hub_shards(reference)
    raise ValueError(f"--input {reference} is not a file, a folder, a glob or a Hub dataset id (NAMESPACE/NAME)")


def _local(file: Path, root: Path) -> Shard:
    return Shard(source=str(file), name=file.relative_to(root).as_posix(), path=str(file))


def _glob_root(pattern: str) -> Path:
    """The folder a glob's matches are named under: its leading parts without wildcards."""
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))]
    return Path(*fixed) if fixed else Path(".")


def hub_shards(repo_id: str) -> list[Shard]:
    """The data files of a Hub dataset at its current commit (pinned, so every worker reads the same files)."""
    from huggingface_hub import HfApi, constants

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    try:
        api = HfApi(endpoint=endpoint)
        revision = api.dataset_info(repo_id).sha
        files = api.list_repo_files(repo_id, repo_type="dataset", revision=revision)
    except Exception as error:  # not found, private, offline: one line with the client's reason
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"--input {repo_id} is not a local file, folder or glob, and could not be listed as a Hub dataset ({first})"
        ) from None
    names = [name for name in sorted(files) if is_data_file(name) and not _hidden(Path(name))]
    if not names:
        raise ValueError(f"--input {repo_id}: the Hub dataset holds no data files (.parquet, .jsonl, .csv, ...)")
    source = f"hf://datasets/{repo_id}@{revision}/"
    return [
        Shard(source=source + name, name=name, repo_id=repo_id, revision=revision, endpoint=endpoint) for name in names
    ]


# ------------------------------------------------------------------------------------------------ outputs


def output_name(name: str, output_format: str) -> str:
    """`a/b.jsonl.gz` → `a/b.parquet`: the input's path without its compression and format suffixes."""
    path = Path(name)
    for _ in range(2):
        if path.suffix.lower() in (*_COMPRESSIONS, *DATA_SUFFIXES):
            path = path.with_suffix("")
    return f"{path.as_posix()}.{output_format}"


def plan_outputs(shards: list[Shard], output_dir: Path, output_format: str, input_reference: str) -> list[Path]:
    """The output file of each shard, refusing plans that would lose data: two shards on one output, an output
    folder inside the input folder (a rerun would read the outputs as input), an output that is an input."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"--output-format {output_format!r} is not one of: {', '.join(OUTPUT_FORMATS)}")
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output {output_dir} is a file; name a folder (one output shard per input shard)")
    source = Path(input_reference)
    if source.is_dir() and output_dir.resolve().is_relative_to(source.resolve()):
        raise ValueError(f"--output {output_dir} is inside --input {input_reference}; choose a folder outside it")
    targets = [output_dir / output_name(shard.name, output_format) for shard in shards]
    seen: dict[Path, Shard] = {}
    inputs = {Path(shard.path).resolve() for shard in shards if shard.path}
    for shard, target in zip(shards, targets):
        if target in seen:
            raise ValueError(f"{seen[target].source} and {shard.source} would both be written to {target}; rename one")
        if target.resolve() in inputs:
            raise ValueError(f"--output {output_dir}: {target} is an input shard; choose another --output folder")
        seen[target] = shard
    return targets


def temporary_sibling(target: Path) -> Path:
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def remove_stale_temporaries(targets: Iterable[Path]) -> int:
    """Removes what a killed run left half-written beside these outputs (only the names this module makes)."""
    removed = 0
    for target in targets:
        if target.parent.is_dir():
            for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
                removed += 1
    return removed


def write_shard(records: Iterable[dict[str, Any]], target: Path, output_format: str) -> Iterator[int]:
    """Writes `records` to `target` (Parquet or JSON Lines) under a temporary name, yielding the rows of each chunk
    as it is written; renames into place only after the last one. Stopped early or failing, it leaves no file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(target)
    chunks = _chunks(records, CHUNK_ROWS)
    try:
        if output_format == "jsonl":
            with temporary.open("w", encoding="utf-8") as handle:
                for chunk in chunks:
                    handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in chunk))
                    yield len(chunk)
        else:
            yield from _write_parquet(chunks, temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _chunks(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _write_parquet(chunks: Iterator[list[dict[str, Any]]], path: Path) -> Iterator[int]:
    """Row groups of `chunks`; the schema is taken from the first chunks that give every column a type (a chunk of
    blank texts only has null labels), the chunks before it held until then (blank rows: small)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer, held = None, []
    try:
        for chunk in chunks:
            held.append(pa.Table.from_pylist(chunk))
            if writer is None:
                schema = _schema_of(held)
                if schema is None:
                    continue
                writer = pq.ParquetWriter(path, schema)
            for table in held:
                writer.write_table(table.cast(writer.schema))
                yield table.num_rows
            held = []
        if writer is None:  # no row, or none with a label: the file keeps the untyped columns
            table = pa.concat_tables(held) if held else pa.table({"source": pa.array([], pa.string())})
            pq.write_table(table, path)
            yield from (part.num_rows for part in held)
    finally:
        if writer is not None:
            writer.close()


def _schema_of(tables: list[Any]) -> Any:
    """The first type each column has across `tables`, or None while some column is still only nulls."""
    import pyarrow as pa

    fields = {}
    for name in tables[0].column_names:
        types = [t.schema.field(name).type for t in tables if not pa.types.is_null(t.schema.field(name).type)]
        if not types:
            return None
        fields[name] = types[0]
    return pa.schema(list(fields.items()))


# ------------------------------------------------------------------------------------------------ resume


def model_fingerprint(model_dir: str | Path) -> dict[str, str]:
    """sha256 of the files that decide the answers: the weights and config, or what an export folder was made
    from. A rerun with a retrained model at the same path is then told apart."""
    model_dir = Path(model_dir)
    if (model_dir / WEIGHTS_FILE).is_file() and (model_dir / CONFIG_FILE).is_file():
        return export_source(model_dir)
    recorded = model_dir / ONNX_SOURCE_FILE
    return json.loads(recorded.read_text(encoding="utf-8")) if recorded.is_file() else {}


def check_manifest(output_dir: Path, settings: dict[str, Any], *, overwrite: bool) -> None:
    """Records `settings` (model, its fingerprint, options) in `output_dir`; a folder holding another run's
    outputs is refused (its finished shards would be skipped), unless `overwrite` (every shard labelled again)."""
    path = output_dir / MANIFEST_FILE
    if path.is_file() and not overwrite:
        previous = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in settings if previous.get(key) != settings[key]]
        if changed:
            key = changed[0]
            raise ValueError(
                f"--output {output_dir} holds predictions made with another {key} ({previous.get(key)!r}, now "
                f"{settings[key]!r}); choose another --output, or pass --overwrite to label every shard again"
            )
    temporary = temporary_sibling(path)
    temporary.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Held while a run writes to `output_dir`: a second run on the same folder is refused (the kernel drops the
    lock of a killed run, so a rerun after a crash proceeds)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # no flock (Windows): one run per folder is then the user's to keep
        yield
        return
    with (output_dir / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"--output {output_dir} is being written by another `hf-gru predict --engine ray` run; wait for it "
                "or choose another folder"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
