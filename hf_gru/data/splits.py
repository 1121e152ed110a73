"""A reference's labelled splits (train, validation, test) and the one-call ``prepare_data``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from hf_gru.tokenization import load_tokenizer, train_tokenizer

from .labels import (
    _encode_labels,
    _label_set,
    _names_of,
    _stratified_split,
    _to_text_label,
)
from .presets import SPLIT_ALIASES, SPLITS
from .readers import _locate_failure
from .sources import _open_splits, _Reference, _resolve
from .tokenize import _training_text, tokenize_datasets

LANGUAGE_SAMPLE = 2000  # training texts a tokenizer choice (the language of a pretrained start) looks at

logger = logging.getLogger(__name__)


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
    names = tuple(label_names) if label_names is not None else _label_set(train, source_names)
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


def load_evaluation_split(
    reference: str | os.PathLike[str],
    split: str,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    label2id: Mapping[str, int],
) -> Dataset:
    """One split of any reference as ``text`` + ``label`` ids of a trained model's label set, to evaluate it on.

    Only this split is read and checked (``split`` may be an alias: ``dev``, ``valid``...): a folder holding just
    ``test.jsonl`` works, and a broken or differently labelled training file does not matter. Labels are matched to
    ``label2id`` by name; a label the model does not know is an error naming it.
    """
    names = _names_of(label2id)
    canonical = SPLIT_ALIASES.get(split.lower())
    if canonical is None:
        raise ValueError(f"unknown split {split!r}: choose {', '.join(SPLITS)} (or dev, valid, val)")
    ref = _resolve(str(reference), require_train=False)
    (source,) = _open_splits(ref, only=canonical).values()
    cleaned, _ = _clean_split(source, canonical, ref, text_column, label_column)
    if not len(cleaned):
        raise ValueError(f"the {canonical} split of {reference!r} has no usable rows (non-empty text and a label)")
    return _encode_labels(cleaned, names, canonical, owner="the model")


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

    @property
    def final_split(self) -> str:
        """The split final results and the confusion matrix are reported on: test when the data has one."""
        return "test" if self.has_test else "validation"


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
    choose_tokenizer: Callable[[list[str]], str | None] | None = None,
) -> PreparedData:
    """Reference → raw splits → tokenizer (given, loaded, or trained on the training texts) → tokenized splits.

    `choose_tokenizer(texts)`, given instead of `tokenizer`, picks one from a sample of the training texts (a
    pretrained start follows their language); None from it means: train one on the data with `tokenizer_kwargs`.
    """
    raw = load_raw_datasets(
        reference,
        text_column=text_column,
        label_column=label_column,
        validation_fraction=validation_fraction,
        seed=seed,
    )
    if choose_tokenizer is not None:
        tokenizer = choose_tokenizer(raw["train"][:LANGUAGE_SAMPLE]["text"])
    tok = _resolve_tokenizer(tokenizer, raw["train"], None if tokenizer else tokenizer_kwargs)
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
    """Texts streamed from Arrow a batch at a time, each cut to what a tokenizer is trained on (see
    :func:`~hf_gru.data.tokenize._training_text`)."""
    for batch in ds.iter(batch_size=batch_size):
        yield from map(_training_text, batch["text"])
