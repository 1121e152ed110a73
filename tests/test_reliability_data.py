"""Issue 12, data side: clear answers for bad datasets, evaluation on one split, predict input, over-long texts.

Each test failed on the code before the fix (named in its docstring) and guards the behaviour since.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import shared_dataset

import hf_gru.data.sources as sources_module
from hf_gru.data import (
    DataFileError,
    clip_text,
    iter_input_records,
    load_evaluation_split,
    load_raw_datasets,
    prepare_data,
)
from hf_gru.data.labels import READ_WORDS
from hf_gru.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("private_datasets_cache")


@pytest.fixture(scope="module")
def sst2_rows() -> list[dict]:
    with gzip.open(shared_dataset("sst2") / "train.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [{"text": row["text"], "label": row["label"]} for row, _ in zip(map(json.loads, fh), range(200))]


def _jsonl(path: Path, rows: list[dict], prefix: str = "") -> Path:
    path.write_text(prefix + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- 7: a single class


def test_a_single_class_training_split_is_refused_by_name(tmp_path: Path, sst2_rows: list[dict]) -> None:
    """Was: accepted, then the model became a one-output regressor failing on integer labels."""
    rows = [{"text": r["text"], "label": "positive"} for r in sst2_rows[:60]]
    _jsonl(tmp_path / "train.jsonl", rows)
    _jsonl(tmp_path / "test.jsonl", sst2_rows[60:80])  # two labels in test do not make a classifier
    message = r"the training split has one label \(positive\); a classifier needs at least two"
    with pytest.raises(ValueError, match=message):
        load_raw_datasets(str(tmp_path))
    with pytest.raises(ValueError, match=message):
        prepare_data(str(tmp_path))


# ------------------------------------------------------------------------- 11: evaluate reads one split


def test_evaluation_reads_only_the_asked_split(tmp_path: Path, sst2_rows: list[dict]) -> None:
    """Was: `evaluate --split test` read and label-checked every split, and refused a folder without train."""
    model_labels = {"positive": 0, "negative": 1}  # the model's order, not the data's
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    _jsonl(only_test / "test.jsonl", sst2_rows[:30])
    test = load_evaluation_split(str(only_test), "test", label2id=model_labels)
    assert test.column_names == ["text", "label"] and len(test) == 30
    assert test["label"] == [model_labels[r["label"]] for r in sst2_rows[:30]]
    assert test.features["label"].names == ["positive", "negative"]

    broken = tmp_path / "broken_train"
    broken.mkdir()
    (broken / "train.jsonl").write_text('{"text": "fine", "label": "positive"}\n{"text": oops}\n', encoding="utf-8")
    _jsonl(broken / "dev.jsonl", sst2_rows[30:50])
    _jsonl(broken / "test.jsonl", [*sst2_rows[50:60], {"text": "a third label", "label": "neutral"}])
    validation = load_evaluation_split(str(broken), "dev", label2id=model_labels)  # an alias of validation
    assert validation["text"] == [r["text"] for r in sst2_rows[30:50]]
    with pytest.raises(ValueError, match=r"test split has labels outside the label set fixed by the model: 'neutral'"):
        load_evaluation_split(str(broken), "test", label2id=model_labels)
    with pytest.raises(ValueError, match=r"split 'train' not found .*available: test"):
        load_evaluation_split(str(only_test), "train", label2id=model_labels)
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        load_evaluation_split(str(only_test), "tset", label2id=model_labels)


# ------------------------------------------------------------------------------------- 13: messages


def test_an_empty_jsonl_file_is_named_as_empty(tmp_path: Path) -> None:
    """Was: `StopIteration`."""
    (tmp_path / "train.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"cannot read .*train\.jsonl: the file is empty"):
        load_raw_datasets(str(tmp_path))
    (tmp_path / "train.jsonl").write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"train\.jsonl: the file is empty"):
        load_raw_datasets(str(tmp_path / "train.jsonl"))


def test_a_header_only_csv_says_it_has_no_rows(tmp_path: Path) -> None:
    """Was: `Instruction "train" corresponds to no data!`."""
    (tmp_path / "train.csv").write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataFileError, match=r"train\.csv: the file has a header line but no rows"):
        load_raw_datasets(str(tmp_path))


@pytest.mark.parametrize(
    ("reference", "why"),
    [
        ("data/missing", "data/ is a local folder"),
        ("./x", "written as a path"),
        ("someone/reviews.csv", r"file extension \(\.csv\)"),
        ("reviews.jsonl.gz", "file extension"),
        ("a/b/c", "exactly one '/'"),
    ],
)
def test_a_missing_path_is_reported_and_never_sent_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: str, why: str
) -> None:
    """Was: `data/missing` (a relative path in an existing folder) went to the Hub as a dataset id."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    calls = []
    monkeypatch.setattr(sources_module, "load_dataset", lambda *a, **k: calls.append(a))
    with pytest.raises(FileNotFoundError, match=rf"dataset path '{reference}' does not exist .*{why}.*not tried"):
        load_raw_datasets(reference)
    assert not calls


def test_a_hub_id_is_still_tried_when_no_such_path_exists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("offline")

    monkeypatch.setattr(sources_module, "load_dataset", fake_load_dataset)
    with pytest.raises(ConnectionError, match="cannot load Hub dataset 'someone/reviews'"):
        load_raw_datasets("someone/reviews")
    assert calls and calls[0][0] == "someone/reviews"


# ---------------------------------------------------------------------------------- 4: predict input


def test_input_records_read_jsonl_with_a_bom_by_extension(tmp_path: Path, sst2_rows: list[dict]) -> None:
    """Was: predict guessed from the first line; a BOM made JSON Lines plain text, gold labels and all."""
    rows = [{"id": i, "sentence": r["text"], "label": r["label"]} for i, r in enumerate(sst2_rows[:5])]
    path = _jsonl(tmp_path / "input.jsonl", rows[:2], prefix="\ufeff")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n" + json.dumps({"id": 9, "sentence": "  ", "label": "x"}) + "\n")
        fh.write("".join(json.dumps(r) + "\n" for r in rows[2:]))
    name, records = iter_input_records(path)
    assert name == "JSON Lines"
    expected = [(1, rows[0]["sentence"]), (2, rows[1]["sentence"]), (3, None), (4, None)]
    assert list(records) == [*expected, *((5 + i, r["sentence"]) for i, r in enumerate(rows[2:]))]


def test_input_records_read_csv_and_tsv_columns_not_lines(tmp_path: Path, sst2_rows: list[dict]) -> None:
    """Was: a CSV file's header and label column were classified as text."""
    csv_path = tmp_path / "input.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        fh.write('\ufefflabel_id,text,label\n"1","multi\nline",positive\n\n')
        csv.writer(fh, lineterminator="\n").writerows([i, r["text"], r["label"]] for i, r in enumerate(sst2_rows[:3]))
    name, records = iter_input_records(csv_path)
    got = list(records)
    assert name == "CSV"
    assert got[0] == (2, "multi\nline")
    assert got[1:] == [(5 + i, r["text"]) for i, r in enumerate(sst2_rows[:3])]  # the blank line 4 is no record

    tsv = tmp_path / "input.tsv.bz2"
    tsv.write_bytes(bz2.compress(("label\tsentence\n" + "positive\tgood\nnegative\t\n").encode()))
    name, records = iter_input_records(tsv, text_column="sentence")
    assert name == "TSV, bz2-compressed" and list(records) == [(2, "good"), (3, None)]
    with pytest.raises(ValueError, match=r"input\.tsv\.bz2: text column 'review' not found; the columns are"):
        iter_input_records(tsv, text_column="review")


def test_input_records_plain_text_and_json_arrays(tmp_path: Path) -> None:
    txt = tmp_path / "input.txt"
    txt.write_bytes('\ufeffwhat a film\r\n\r\n{"text": "json-looking text"}\n'.encode())
    name, records = iter_input_records(txt)
    assert name.startswith("plain text")
    assert list(records) == [(1, "what a film"), (2, None), (3, '{"text": "json-looking text"}')]

    array = tmp_path / "input.json.gz"
    array.write_bytes(gzip.compress(json.dumps([{"review": "one"}, {"review": None}, {"review": "three"}]).encode()))
    name, records = iter_input_records(array)
    assert name == "JSON array, gz-compressed" and list(records) == [(1, "one"), (2, None), (3, "three")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataFileError, match=r"bad\.jsonl line 2: invalid JSON"):
        list(iter_input_records(bad)[1])


def test_input_records_stream_with_flat_memory(tmp_path: Path) -> None:
    """200,000 records are read one at a time: the Python heap never holds more than a sliver of the file."""
    path = tmp_path / "big.jsonl"
    line = json.dumps({"text": "a fairly ordinary sentence about a film " * 3, "label": "positive"}) + "\n"
    path.write_text(line * 200_000, encoding="utf-8")
    assert path.stat().st_size > 20_000_000
    tracemalloc.start()
    try:
        name, records = iter_input_records(path)
        count = sum(1 for _ in records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 200_000 and peak < 2_000_000


# ------------------------------------------------------------------------------------ over-long texts


def test_clipping_a_long_text_keeps_exactly_the_tokens_kept(sst2_rows: list[dict]) -> None:
    tokenizer = train_tokenizer([r["text"] for r in sst2_rows], vocab_size=800)
    long_text = " ".join(r["text"] for r in sst2_rows) * 20
    for max_length in (8, 64, 512):
        clipped = clip_text(long_text, tokenizer, max_length)
        assert len(clipped) < len(long_text)
        kept = tokenizer(clipped, truncation=True, max_length=max_length)["input_ids"]
        assert kept == tokenizer(long_text, truncation=True, max_length=max_length)["input_ids"]
    assert clip_text("short", tokenizer, 4) == "short"
    spaces = "good " + " " * 100_000 + "film"  # few tokens in many characters: the window grows, nothing is lost
    assert tokenizer(clip_text(spaces, tokenizer, 8))["input_ids"] == tokenizer(spaces)["input_ids"]


def test_reading_cuts_a_huge_text_after_more_words_than_any_model_reads(tmp_path: Path, sst2_rows) -> None:
    words = " ".join(r["text"] for r in sst2_rows).split()
    huge = " ".join(words * (2 * READ_WORDS // len(words) + 2))
    _jsonl(tmp_path / "train.jsonl", [{"text": huge, "label": "positive"}, *sst2_rows])
    _jsonl(tmp_path / "validation.jsonl", sst2_rows[:10])
    read = next(t for t in load_raw_datasets(str(tmp_path))["train"]["text"] if len(t) > 1000)
    assert len(read) < len(huge) and huge.startswith(read)
    assert sum(any(c.isalnum() for c in w) for w in read.split()) == READ_WORDS
    tokenizer = train_tokenizer([r["text"] for r in sst2_rows], vocab_size=800)
    for max_length in (512, 20_000):
        kept = tokenizer(read, truncation=True, max_length=max_length)["input_ids"]
        assert kept == tokenizer(huge, truncation=True, max_length=max_length)["input_ids"]


_MEMORY_CHILD = """
import json, resource, sys
from hf_gru.data import prepare_data
prepared = prepare_data(sys.argv[1], tokenizer_kwargs={"vocab_size": 2000}, max_length=256)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_mb": peak, "longest": max(prepared.tokenized["train"]["length"])}))
"""


def _peak_memory(folder: Path) -> dict:
    env = {"HF_DATASETS_CACHE": str(folder / "cache"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(folder)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_ten_megabyte_line_costs_no_gigabytes(tmp_path: Path, sst2_rows: list[dict]) -> None:
    """Was: the whole 10 MB line was tokenized before truncation and learnt from by the tokenizer trainer, ~1.5 GB
    more peak memory than the same run without it."""
    (tmp_path / "normal").mkdir()
    (tmp_path / "long").mkdir()
    for folder in ("normal", "long"):  # a validation file of its own: nothing carved, the long text is trained on
        _jsonl(tmp_path / folder / "validation.jsonl", sst2_rows[:20])
    _jsonl(tmp_path / "normal" / "train.jsonl", sst2_rows)
    long_text = (" ".join(r["text"] for r in sst2_rows) + " ") * 520
    assert len(long_text) > 9_000_000
    _jsonl(tmp_path / "long" / "train.jsonl", [{"text": long_text, "label": "positive"}, *sst2_rows])
    normal, long = _peak_memory(tmp_path / "normal"), _peak_memory(tmp_path / "long")
    assert long["longest"] == 256
    assert long["peak_mb"] - normal["peak_mb"] < 200, (normal, long)
