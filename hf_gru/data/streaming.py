"""Splits as ``IterableDataset`` streams, for corpora larger than memory."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from datasets import ClassLabel, Dataset, DatasetDict, Features, IterableDataset, Value
from datasets.distributed import split_dataset_by_node
from transformers import PreTrainedTokenizerBase

from .labels import _EncodeLabels, _to_text_label, label_names_of
from .sources import _open_splits, _resolve
from .splits import PreparedData
from .tokenize import resolve_max_length, tokenize_datasets, tokenize_streaming

logger = logging.getLogger(__name__)


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

    The label set cannot come from a full pass: it is ``label_set``, else the source's ClassLabel names, else the
    labels of the first ``head_rows`` rows (a label first seen later raises while training, naming it). The same
    rows train the tokenizer (``build_tokenizer(texts)``: loaded or trained, the caller decides). Validation and test
    splits are read into memory; without a validation split it is carved from the head rows, which training skips.
    """
    cleaned, source_names = open_training_stream(
        reference, text_column=text_column, label_column=label_column, seed=seed
    )
    head_list = list(cleaned.take(head_rows))
    if not head_list:
        raise ValueError(f"the training split of {reference!r} has no usable rows (non-empty text and a label)")
    head = Dataset.from_list(head_list, features=Features({"text": Value("string"), "label": Value("string")}))
    if label_set:
        names = tuple(name.strip() for name in label_set.split(",") if name.strip())
    else:
        names = label_names_of(head, source_names)
        logger.info("streaming: label set %s, read from the first %d rows", ", ".join(names), len(head_list))
    label2id = {name: i for i, name in enumerate(names)}
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})

    def load(split: str) -> IterableDataset:
        return load_streaming_dataset(
            reference, split=split, text_column=text_column, label_column=label_column, label2id=label2id
        )

    train_stream = load("train")
    unseen = sorted({row["label"] for row in head_list} - set(names))
    if unseen:
        raise ValueError(f"--label_set {label_set!r} lacks labels found in the data: {', '.join(unseen)}")
    head_encoded = Dataset.from_list(
        [{"text": r["text"], "label": label2id[r["label"]]} for r in head_list], features=features
    )
    raw: dict[str, Dataset] = {}
    if has_split(reference, "validation"):
        raw["validation"] = _materialize(load("validation"))
        raw["train"] = head_encoded
    else:
        held_out = max(1, round(len(head_list) * validation_fraction))
        if held_out >= len(head_list):
            raise ValueError(f"--head_rows {head_rows} is too few to carve a validation set from")
        logger.info("streaming: no validation split; the first %d training rows are the validation set", held_out)
        raw["validation"], raw["train"] = (
            head_encoded.select(range(held_out)),
            head_encoded.select(range(held_out, len(head_encoded))),
        )
        train_stream = train_stream.skip(held_out)
    if has_split(reference, "test"):
        raw["test"] = _materialize(load("test"))

    tokenizer = build_tokenizer(list(raw["train"]["text"]))
    tokenizer.model_max_length = resolve_max_length(tokenizer, max_length)
    evaluation = DatasetDict({split: ds for split, ds in raw.items() if split != "train"})
    data = PreparedData(
        raw=DatasetDict({s: raw[s] for s in ("train", "validation", "test") if s in raw}),
        tokenized=tokenize_datasets(evaluation, tokenizer, max_length=max_length),
        tokenizer=tokenizer,
        id2label=dict(enumerate(names)),
        label2id=label2id,
        num_labels=len(names),
        reference=str(reference),
    )
    if max_train_samples is not None:
        train_stream = train_stream.take(max_train_samples)
    stream = tokenize_streaming(
        train_stream.shuffle(seed=seed, buffer_size=shuffle_buffer), tokenizer, max_length=max_length
    )
    return data, split_dataset_by_node(stream, rank=process_index, world_size=world_size)
