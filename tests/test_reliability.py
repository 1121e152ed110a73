"""Issue 12 cases for predict / evaluate / the model: nothing lost, nothing silently wrong, no raw tracebacks.

Each test failed on the code before the fix. Data-loss tests compare the sha256 of every file before and after.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset

from hf_gru import GRUConfig, GRUForSequenceClassification, backends
from hf_gru.cli import main
from hf_gru.predict import predict_logits
from hf_gru.tokenization import train_tokenizer

BIAS = (0.7, -0.4)


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def save_model(
    directory: Path, texts: list[str], labels: list[str], seed: int = 0, bias: tuple[float, ...] | None = None,
    **overrides,
) -> Path:  # fmt: skip
    """A saved model + tokenizer (trained on `texts`) with random weights: what `hf-gru train` leaves, in a second."""
    tokenizer = train_tokenizer(texts, vocab_size=800, model_max_length=64)
    torch.manual_seed(seed)
    values = dict(embedding_size=16, hidden_size=12, num_labels=len(labels), pad_token_id=tokenizer.pad_token_id)
    values.update(overrides)
    config = GRUConfig(vocab_size=len(tokenizer), id2label=dict(enumerate(labels)), **values)
    model = GRUForSequenceClassification(config).eval()
    if bias is not None:
        with torch.no_grad():
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (links by their target's content), keyed by relative path."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def bias_score() -> float:
    return float(torch.softmax(torch.tensor(BIAS), dim=-1).max())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    texts = [row["text"] for row in read_jsonl(shared_dataset("trec") / "train.jsonl.gz")]
    return save_model(tmp_path_factory.mktemp("model"), texts, ["negative", "positive"], bias=BIAS)


def predict(model: Path, source: Path, *extra: str) -> int:
    return main(["predict", "--model", str(model), "--input", str(source), *extra])


# ------------------------------------------------------------------------------------- 2: predict --overwrite


@pytest.mark.parametrize("link", ["same path", "symlink", "hard link"])
def test_predict_refuses_to_write_over_its_input(model_dir, tmp_path, capsys, link):
    source = tmp_path / "texts.txt"
    source.write_text("What is the capital of Peru ?\nWho wrote Hamlet ?\n", encoding="utf-8")
    output = {"same path": source, "symlink": tmp_path / "link.jsonl", "hard link": tmp_path / "hard.jsonl"}[link]
    if link == "symlink":
        output.symlink_to(source)
    elif link == "hard link":
        os.link(source, output)
    before = digests(tmp_path)
    assert predict(model_dir, source, "--output", str(output), "--overwrite") == 2
    assert "is the input file" in capsys.readouterr().err
    assert digests(tmp_path) == before


@pytest.mark.parametrize("failure", ["not a model", "broken input", "missing input"])
def test_a_failed_predict_leaves_the_old_output_intact_and_no_partial_file(model_dir, tmp_path, failure):
    source = tmp_path / "input.jsonl"
    good = [json.dumps({"text": f"question {i} ?"}) for i in range(300)]
    source.write_text("\n".join(good + ['{"text": "broken'] if failure == "broken input" else good) + "\n")
    output = tmp_path / "predictions.jsonl"
    output.write_text('{"text": "old", "label": "positive", "score": 0.9}\n', encoding="utf-8")
    model = tmp_path / "nothing" if failure == "not a model" else model_dir
    if failure == "missing input":
        source.unlink()
    before = digests(tmp_path)
    # batch size 8: the broken line comes after many batches were written (the old code streamed into the output)
    assert predict(model, source, "--output", str(output), "--overwrite", "--batch-size", "8") == 2
    assert digests(tmp_path) == before


def test_a_successful_overwrite_replaces_the_output_and_leaves_no_temporary_file(model_dir, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("Who wrote Hamlet ?\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    output.write_text("old\n")
    assert predict(model_dir, source, "--output", str(output), "--overwrite") == 0
    assert json.loads(output.read_text())["text"] == "Who wrote Hamlet ?"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt", "predictions.jsonl"]


# ---------------------------------------------------------------------------------- 3: sizes below 1


@pytest.mark.parametrize(
    "command, option, value",
    [
        ("predict", "--batch-size", "0"),
        ("predict", "--batch-size", "-5"),
        ("evaluate", "--batch-size", "-1"),
        ("predict", "--threads", "0"),
        ("evaluate", "--threads", "-2"),
    ],
)
def test_sizes_below_one_are_usage_errors_naming_the_option(model_dir, tmp_path, capsys, command, option, value):
    source = tmp_path / "input.txt"
    source.write_text("Who wrote Hamlet ?\n")
    target = ["--input", str(source)] if command == "predict" else ["--dataset", str(shared_dataset("trec"))]
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", str(model_dir), *target, option, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert option in error and "positive integer" in error


def test_library_calls_refuse_a_batch_size_below_one(model_dir):
    classifier = backends.load_backend(model_dir, backend="torch", device="cpu")
    for size in (0, -5):
        with pytest.raises(ValueError, match="batch-size"):
            predict_logits(classifier.model, classifier.tokenizer, ["a", "b"], batch_size=size)


# ------------------------------------------------------------------------- 4, 5: input formats, line numbers


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_with_a_byte_order_mark_is_read_as_json_lines(model_dir, tmp_path, caplog):
    source = tmp_path / "input.jsonl"
    records = [{"text": "Who wrote Hamlet ?", "label": "HUM"}, {"text": "Where is Peru ?", "label": "LOC"}]
    source.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in records).encode())
    output = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO, logger="hf_gru"):
        assert predict(model_dir, source, "--output", str(output)) == 0
    assert [r["text"] for r in rows_of(output)] == [r["text"] for r in records]
    assert "JSON" in caplog.text  # the format used is said


def test_csv_is_read_by_its_header_not_classified_line_by_line(model_dir, tmp_path, caplog):
    source = tmp_path / "input.csv"
    source.write_text('label,text\nHUM,Who wrote Hamlet ?\nLOC,"Where is Peru, exactly ?"\n', encoding="utf-8")
    output = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO, logger="hf_gru"):
        assert predict(model_dir, source, "--output", str(output)) == 0
    rows = rows_of(output)
    assert [r["text"] for r in rows] == ["Who wrote Hamlet ?", "Where is Peru, exactly ?"]
    assert [r["line"] for r in rows] == [2, 3]  # the header is line 1
    assert "CSV" in caplog.text


def test_text_column_picks_the_field_to_classify(model_dir, tmp_path):
    source = tmp_path / "reviews.jsonl"
    source.write_text('{"id": 1, "body": "Great."}\n{"id": 2, "body": "Awful."}\n', encoding="utf-8")
    output = tmp_path / "out.jsonl"
    assert predict(model_dir, source, "--text-column", "body", "--output", str(output)) == 0
    assert [r["text"] for r in rows_of(output)] == ["Great.", "Awful."]


def test_every_output_record_carries_its_input_line_and_blank_lines_get_a_null_label(model_dir, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("Who wrote Hamlet ?\n\n   \nWhere is Peru ?\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    assert predict(model_dir, source, "--output", str(output)) == 0
    rows = rows_of(output)
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert [r["label"] is None for r in rows] == [False, True, True, False]
    assert rows[3]["text"] == "Where is Peru ?" and rows[3]["label"] in ("negative", "positive")


# ------------------------------------------------------------------------ 6: texts with zero tokens


@pytest.mark.parametrize("implementation", ["fused", "reference"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_zero_length_batches_give_the_classifier_bias(implementation, pooling, bidirectional):
    torch.manual_seed(0)
    config = GRUConfig(vocab_size=30, embedding_size=8, hidden_size=6, num_labels=2, pooling=pooling,
                       bidirectional=bidirectional, gru_implementation=implementation)  # fmt: skip
    model = GRUForSequenceClassification(config).eval()
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor(BIAS))
        output = model(input_ids=torch.zeros(2, 0, dtype=torch.long), output_hidden_states=True)
        masked = model(input_ids=torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.zeros(2, 3))
    assert torch.equal(output.logits, torch.tensor([BIAS, BIAS]))
    assert torch.equal(masked.logits, output.logits)
    assert output.hidden_states[-1].shape == (2, 0, config.output_size)


def test_pipeline_on_an_empty_text_returns_the_bias_prediction(model_dir):
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(model_dir), device="cpu")
    (result,) = classifier("")
    assert result["label"] == "negative" and result["score"] == pytest.approx(bias_score(), abs=1e-6)


def test_predict_on_lines_that_tokenize_to_nothing(model_dir, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("\u200b\u200b\n\u200b\n", encoding="utf-8")  # zero-width spaces: not blank, zero tokens
    output = tmp_path / "out.jsonl"
    assert predict(model_dir, source, "--output", str(output), "--backend", "torch") == 0
    rows = rows_of(output)
    assert [r["line"] for r in rows] == [1, 2]
    assert all(r["label"] == "negative" and r["score"] == pytest.approx(bias_score(), abs=1e-6) for r in rows)


# ------------------------------------------------------------------- 8: broken model folders, unusable devices


def broken_copy(model_dir: Path, tmp_path: Path, kind: str) -> Path:
    target = tmp_path / kind
    shutil.copytree(model_dir, target, ignore=shutil.ignore_patterns("onnx", "*.txt", "*.jsonl"))
    weights = target / "model.safetensors"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:200])
    elif kind == "vocab":
        config = json.loads((target / "config.json").read_text())
        config["vocab_size"] += 7
        (target / "config.json").write_text(json.dumps(config))
    elif kind == "pickle":
        state = GRUForSequenceClassification.from_pretrained(model_dir).state_dict()
        weights.unlink()
        torch.save({**state, "payload": print}, target / "pytorch_model.bin")  # a global: refused by weights_only
    return target


@pytest.mark.parametrize(
    "kind, expected",
    [("truncated", "model.safetensors"), ("vocab", "config.json"), ("pickle", "pytorch_model.bin")],
)
def test_broken_model_folders_give_one_line_naming_the_file(model_dir, tmp_path, capsys, caplog, kind, expected):
    broken = broken_copy(model_dir, tmp_path, kind)
    source = tmp_path / "input.txt"
    source.write_text("Who wrote Hamlet ?\n")
    for command in (
        ["predict", "--model", str(broken), "--input", str(source)],
        ["evaluate", "--model", str(broken), "--dataset", str(shared_dataset("trec"))],
    ):
        assert main(command) == 2
        error = capsys.readouterr().err
        last = error.strip().splitlines()[-1]
        assert last.startswith("hf-gru: error:") and expected in last
        assert "Traceback" not in error
    caplog.clear()
    assert main(["-v", "predict", "--model", str(broken), "--input", str(source)]) == 2
    assert any(record.exc_info for record in caplog.records)  # -v logs the traceback


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that cannot use CUDA")
def test_device_cuda_without_cuda_names_the_option(model_dir, tmp_path, capsys):
    source = tmp_path / "input.txt"
    source.write_text("Who wrote Hamlet ?\n")
    assert predict(model_dir, source, "--device", "cuda") == 2
    error = capsys.readouterr().err
    assert "--device cuda" in error and "--device cpu" in error and "Traceback" not in error
    assert (
        main(["evaluate", "--model", str(model_dir), "--dataset", str(shared_dataset("trec")), "--device", "cuda:0"])
        == 2
    )


# --------------------------------------------------------------------------- 11: evaluate reads one split


def write_split(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_evaluate_reads_only_the_asked_split(model_dir, tmp_path, capsys):
    questions = read_jsonl(shared_dataset("trec") / "test.jsonl.gz")[:60]
    test_rows = [{"text": r["text"], "label": ("negative", "positive")[i % 2]} for i, r in enumerate(questions)]
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    write_split(only_test / "test.jsonl", test_rows)
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(only_test), "--split", "test"]) == 0
    clean = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert clean["test_samples"] == 60

    with_bad_train = tmp_path / "with_bad_train"
    shutil.copytree(only_test, with_bad_train)
    (with_bad_train / "train.jsonl").write_text('{"text": "x", "label": "neutral"}\n{"text": broken\n')
    assert main(["evaluate", "--model", str(model_dir), "--dataset", str(with_bad_train), "--split", "test"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == clean


def test_onnx_export_also_gives_the_bias_on_zero_tokens(model_dir, tmp_path):
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
    from hf_gru.export import export_model

    export_model(model_dir, tmp_path / "onnx")
    logits = backends.load_backend(tmp_path / "onnx").logits(["", "\u200b"])
    assert np.allclose(logits, np.array([BIAS, BIAS]), atol=1e-6)
