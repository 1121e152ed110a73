"""Splits as ``IterableDataset`` streams, for corpora larger than memory, and the streaming run's data step."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, DatasetDict, Features, IterableDataset, Value
from datasets.distributed import split_dataset_by_node
from transformers import PreTrainedTokenizerBase

from .labels import (
    _encode_stream,
    _label_features,
    _label_set,
    _names_of,
    _stratified_split,
    _to_text_label,
)
from .presets import SPLITS
from .sources import _open_splits, _resolve
from .splits import PreparedData
from .tokenize import _training_text, resolve_max_length, tokenize_datasets, tokenize_streaming

logger = logging.getLogger(__name__)


def _has_split(reference: str, split: str) -> bool:
    """Whether a reference has `split` of its own, known without reading any data (a Hub id without a preset: True)."""
    ref = _resolve(reference)
    if ref.kind == "files":
        return split in ref.files
    if ref.kind == "folders":
        return split in ref.folders
    if ref.kind == "hub" and ref.preset is not None:
        return split in ref.preset.splits
    return True  # demo has every split; a Hub id without a preset is tried


def _open_stream(
    reference: str | os.PathLike[str], split: str, text_column: str | None, label_column: str | None, seed: int = 42
) -> tuple[IterableDataset, tuple[str, ...] | None]:
    """One split as a stream of exactly ``text`` and a string ``label``, and the source's ClassLabel names.

    Nothing is read until iterated, so the label set must come from elsewhere (rows read up front, or the user).
    """
    ref = _resolve(str(reference))
    (source,) = _open_splits(ref, streaming=True, only=split, seed=seed).values()
    return _to_text_label(source, f"{split} split of {ref.reference!r}", text_column, label_column, ref.preset)


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
    names = _names_of(label2id)
    cleaned, _ = _open_stream(reference, split, text_column, label_column)
    return _encode_stream(cleaned, names, split)


def _row_key(text: str, label: str) -> bytes:
    """A row's identity for the held-out set: 8 bytes of BLAKE2b over label and text (collisions: ~n²/2⁶⁴)."""
    return hashlib.blake2b(f"{label}\0{text}".encode(), digest_size=8).digest()


@dataclass(frozen=True)
class _NotHeldOut:
    """Batched filter: drops the rows carved into the validation set (and exact copies of them, which would leak)."""

    held_out: frozenset[bytes]

    def __call__(self, batch: dict[str, list[Any]]) -> list[bool]:
        return [_row_key(t, y) not in self.held_out for t, y in zip(batch["text"], batch["label"], strict=True)]


def _materialize(stream: IterableDataset) -> Dataset:
    """A (small) validation or test stream as an in-memory Dataset, so evaluation is exact under any process count."""
    return Dataset.from_list(list(stream), features=stream.features)


def prepare_streaming_data(
    reference: str,
    *,
    text_column: str | None,
    label_column: str | None,
    seed: int,
    head_rows: int,
    label_set: str | None,
    validation_fraction: float,
    max_length: int | None,
    shuffle_buffer: int,
    max_train_samples: int | None,
    build_tokenizer: Callable[[list[str]], PreTrainedTokenizerBase],
    process_index: int,
    world_size: int,
) -> tuple[PreparedData, IterableDataset]:
    """(evaluation data in memory, the tokenized training stream of this process).

    A stream allows no full pass, so ``head_rows`` training rows are read up front from the stream shuffled by
    ``seed`` (source shards, e.g. the files of a folder per class, in a seeded order, then rows within a buffer of
    ``shuffle_buffer``). They fix the label set (unless ``label_set`` or the source's ClassLabel names do; a label
    first seen later raises while training, naming it) and train the tokenizer (``build_tokenizer(texts)``: loaded
    or trained, the caller decides). Validation and test splits are read into memory. Without a validation split,
    ``validation_fraction`` of the head rows of every label are carved (seeded, stratified) and the training stream
    skips exactly those rows, whatever the epoch's shuffle, by their hashed content: a training row identical to a
    validation row is skipped too, so it cannot leak.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    source, source_names = _open_stream(reference, "train", text_column, label_column, seed)
    head_list = list(source.shuffle(seed=seed, buffer_size=shuffle_buffer).take(head_rows))
    if not head_list:
        raise ValueError(f"the training split of {reference!r} has no usable rows (non-empty text and a label)")
    head = Dataset.from_list(head_list, features=Features({"text": Value("string"), "label": Value("string")}))
    head_labels = {row["label"] for row in head_list}
    if label_set:
        names = tuple(name.strip() for name in label_set.split(",") if name.strip())
        unseen = sorted(head_labels - set(names))
        if unseen:
            raise ValueError(f"--label_set {label_set!r} lacks labels found in the data: {', '.join(unseen)}")
    elif source_names is not None and len(source_names) > 1:
        names = source_names  # the source's ClassLabel, known without reading: a one-label head only warns below
    else:
        names = _label_set(head, source_names, f"the training split ({len(head_list)} rows read up front)")
        logger.info("streaming: label set %s, read from %d rows up front", ", ".join(names), len(head_list))
    if len(names) < 2:
        raise ValueError(f"--label_set {label_set!r} has one label; a classifier needs at least two")
    label2id = {name: i for i, name in enumerate(names)}
    head_encoded = Dataset.from_list(
        [{"text": r["text"], "label": label2id[r["label"]]} for r in head_list], features=_label_features(names)
    )

    def load(split: str) -> Dataset:
        stream = load_streaming_dataset(
            reference, split=split, text_column=text_column, label_column=label_column, label2id=label2id
        )
        return _materialize(stream)

    raw: dict[str, Dataset] = {"train": head_encoded}
    if _has_split(reference, "validation"):
        raw["validation"] = load("validation")
    else:
        raw["train"], raw["validation"] = _stratified_split(head_encoded, validation_fraction, seed)
        if not len(raw["validation"]) or not len(raw["train"]):
            raise ValueError(
                f"--head_rows {head_rows} is too few to carve a validation_fraction of {validation_fraction} from"
            )
        carved = raw["validation"][:]
        held_out = frozenset(_row_key(t, names[y]) for t, y in zip(carved["text"], carved["label"], strict=True))
        source = source.filter(_NotHeldOut(held_out), batched=True)
        logger.info(
            "streaming: no validation split; %d of the %d rows read up front are the validation set (stratified, "
            "seed %d) and training skips them",
            len(raw["validation"]),
            len(head_list),
            seed,
        )
        if len(set(raw["validation"]["label"])) < 2:
            logger.warning(
                "streaming: the validation set carved from %d rows holds one label; the stream is probably sorted "
                "by label in runs longer than the shuffle buffer: raise --shuffle_buffer or --head_rows",
                len(head_list),
            )
    if _has_split(reference, "test"):
        raw["test"] = load("test")

    tokenizer = build_tokenizer([_training_text(text) for text in raw["train"]["text"]])
    tokenizer.model_max_length = resolve_max_length(tokenizer, max_length)
    evaluation = DatasetDict({split: raw[split] for split in SPLITS[1:] if split in raw})
    data = PreparedData(
        raw=DatasetDict({split: raw[split] for split in SPLITS if split in raw}),
        tokenized=tokenize_datasets(evaluation, tokenizer, max_length=max_length),
        tokenizer=tokenizer,
        id2label=dict(enumerate(names)),
        label2id=label2id,
        num_labels=len(names),
        reference=str(reference),
    )
    train_stream = _encode_stream(source, names, "train")
    if max_train_samples is not None:
        train_stream = train_stream.take(max_train_samples)
    stream = tokenize_streaming(
        train_stream.shuffle(seed=seed, buffer_size=shuffle_buffer), tokenizer, max_length=max_length
    )
    return data, split_dataset_by_node(stream, rank=process_index, world_size=world_size)
