"""hf_gru.data.streaming.prepare_streaming_data: the label set, the validation carve and the training stream.

Real text (BBC News articles, SST-2 sentences) laid out the way users have it: a folder per class, which a stream
reads class by class, and label-sorted files.
"""

from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

import pytest
from conftest import shared_dataset

from hf_gru.data import prepare_streaming_data
from hf_gru.tokenization import train_tokenizer

PER_CLASS = 24


pytestmark = pytest.mark.usefixtures("private_datasets_cache")


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<label>/<n>.txt``: the first PER_CLASS BBC News training articles of each of its five labels."""
    root = tmp_path_factory.mktemp("bbc_folders")
    counts: collections.Counter[str] = collections.Counter()
    with gzip.open(shared_dataset("bbc_news") / "train.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if counts[row["label"]] < PER_CLASS:
                folder = root / row["label"]
                folder.mkdir(exist_ok=True)
                (folder / f"{counts[row['label']]:03d}.txt").write_text(row["text"], encoding="utf-8")
                counts[row["label"]] += 1
    assert len(counts) == 5
    return root


def _prepare(reference: Path, **overrides):
    options = dict(
        text_column=None,
        label_column=None,
        seed=3,
        head_rows=60,
        label_set=None,
        validation_fraction=0.2,
        max_length=None,
        shuffle_buffer=16,
        max_train_samples=None,
        build_tokenizer=lambda texts: train_tokenizer(texts, vocab_size=3000),
        process_index=0,
        world_size=1,
    )
    return prepare_streaming_data(str(reference), **{**options, **overrides})


def _ids(rows) -> list[tuple[int, ...]]:
    return [tuple(row["input_ids"]) for row in rows]


def test_validation_carved_from_a_folder_per_class_holds_every_label(class_folders: Path) -> None:
    """The folder-per-class stream yields one class after another: carving its first rows gave one class."""
    data, stream = _prepare(class_folders)
    assert data.num_labels == 5  # all labels found in the rows read up front, not just the first folders
    validation = data.raw["validation"]
    counts = collections.Counter(validation["label"])
    assert len(counts) == 5 and max(counts.values()) - min(counts.values()) <= 1  # stratified
    assert len(validation) + len(data.raw["train"]) == 60

    all_texts = [p.read_text(encoding="utf-8") for p in sorted(class_folders.glob("*/*.txt"))]
    encoded = data.tokenizer(all_texts, truncation=True, max_length=data.tokenizer.model_max_length)
    everything = collections.Counter(tuple(ids) for ids in encoded["input_ids"])
    held_out = collections.Counter(_ids(data.tokenized["validation"]))
    for epoch in (0, 1):  # each pass reshuffles; the held-out rows stay out of every one
        stream.set_epoch(epoch)
        trained = collections.Counter(_ids(stream))
        assert trained + held_out == everything  # training skips exactly the validation rows
    again, _ = _prepare(class_folders)
    assert again.raw["validation"]["text"] == validation["text"]  # seeded
    other, _ = _prepare(class_folders, seed=4)
    assert other.raw["validation"]["text"] != validation["text"]


def test_a_label_sorted_file_with_a_source_validation_split_keeps_it(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in gzip.open(shared_dataset("sst2") / "train.jsonl.gz", "rt")][:300]
    rows.sort(key=lambda r: r["label"])
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::30]), encoding="utf-8")
    data, stream = _prepare(tmp_path, head_rows=100, shuffle_buffer=300)
    assert len(data.raw["validation"]) == 10 and len(data.raw["train"]) == 100
    assert sum(1 for _ in stream) == 300  # nothing carved, nothing skipped


def test_one_label_in_the_rows_read_up_front_is_refused(tmp_path: Path) -> None:
    rows = [{"text": f"row {i} text", "label": "spam"} for i in range(50)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"training split \(50 rows read up front\) has one label \(spam\)"):
        _prepare(tmp_path)
    with pytest.raises(ValueError, match="--label_set 'spam' has one label"):
        _prepare(tmp_path, label_set="spam")
