"""Source columns → ``text`` and a label name; the label set, its ids, and stratified carving."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, IterableDataset, Value

from .presets import DatasetPreset

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


READ_WORDS = 100_000  # words of a text kept when reading: more than any max_length reads (see _clip_words)
_WORD = re.compile(r"\S+")


def _clip_words(text: str) -> str:
    """``text`` cut after its first ``READ_WORDS`` words that hold a letter or digit, at the space before the next.

    Each such word gives at least one token with any tokenizer that splits on whitespace (an unknown word gives
    ``[UNK]``), so no ``max_length`` up to ``READ_WORDS`` (:func:`resolve_max_length` caps a tokenizer's limit at
    100,000) keeps a token from beyond the cut, and the words before it tokenize as in the whole text. What it saves:
    a 10 MB line is copied through every later step (labels, carving, tokenizer training, tokenizing) at ~0.5 MB.
    A text of under ``2 * READ_WORDS`` characters cannot hold that many words and is returned at once.
    """
    if len(text) < 2 * READ_WORDS:
        return text
    count = 0
    for word in _WORD.finditer(text):
        if any(c.isalnum() for c in word.group()):
            count += 1
            if count > READ_WORDS:
                return text[: word.start()]
    return text


@dataclass(frozen=True)
class _ToTextLabel:
    """Batched map: source columns → ``text`` (parts joined by newlines) and a string ``label``; drops bad rows.

    A plain frozen dataclass so ``datasets`` can fingerprint it for caching. Huge texts are cut by
    :func:`_clip_words`, which cannot change the tokens a model reads.
    """

    text_columns: tuple[str, ...]
    label_column: str
    source_label_names: tuple[str, ...] | None = None

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        parts = zip(*(batch[c] for c in self.text_columns), strict=True)
        texts = [_clip_words("\n".join(str(p) for p in row if p is not None and str(p).strip())) for row in parts]
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


def _label_set(
    train: Dataset, source_names: tuple[str, ...] | None, where: str = "the training split"
) -> tuple[str, ...]:
    """The label set, fixed by the training split: a source ClassLabel's names, else numeric or sorted order.

    A split with a single label is refused before anything is trained or written: a classifier needs two.
    """
    present = sorted(train.unique("label"))
    if len(present) == 1:
        raise ValueError(f"{where} has one label ({present[0]}); a classifier needs at least two")
    if source_names is not None:
        return source_names
    try:
        return tuple(sorted(present, key=float))
    except ValueError:
        return tuple(present)


def _names_of(label2id: Mapping[str, int]) -> tuple[str, ...]:
    """The label names in id order of a model's ``label2id``, which must number them 0..n-1."""
    names = tuple(sorted(label2id, key=label2id.__getitem__))
    if [label2id[n] for n in names] != list(range(len(names))):
        raise ValueError(f"label2id must map onto 0..{len(names) - 1} without gaps, got {dict(label2id)}")
    return names


def _label_features(names: Sequence[str]) -> Features:
    return Features({"text": Value("string"), "label": ClassLabel(names=list(names))})


def _encode_labels(ds: Dataset, names: tuple[str, ...], split: str, owner: str = "the training split") -> Dataset:
    unseen = sorted(set(ds.unique("label")) - set(names))
    if unseen:
        raise ValueError(_unseen_message(unseen, split, names, owner))
    return ds.map(_EncodeLabels(names, split), batched=True, features=_label_features(names))


def _encode_stream(stream: IterableDataset, names: tuple[str, ...], split: str) -> IterableDataset:
    """The streaming twin of :func:`_encode_labels`: a label outside ``names`` raises when its row is read."""
    return stream.map(_EncodeLabels(names, split), batched=True, features=_label_features(names))


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
