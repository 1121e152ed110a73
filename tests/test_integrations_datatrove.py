"""datatrove: the hf_gru step labels a sharded corpus under LocalPipelineExecutor (2 tasks) with `hf-gru predict`'s
labels, drops by label and score in datatrove's stats, and refuses bad options where they are given."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from fixtures.bulk import mixed_corpus, predict_rows, sst2_texts

pytest.importorskip("datatrove", reason="the datatrove extra is not installed (pip install 'hf-gru[datatrove]')")
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")

from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402

from hf_gru.integrations.datatrove import GRUClassifier  # noqa: E402


def _documents(folder: Path) -> list[dict]:
    documents = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            documents += [json.loads(line) for line in handle]
    return documents


def test_local_executor_with_two_tasks_labels_as_predict_and_counts_drops(bulk_model, tmp_path):
    texts = sst2_texts(4000)
    texts[10] = " ".join(texts[:500])  # a long document, clipped as predict clips it
    shards = mixed_corpus(tmp_path / "corpus", texts, formats=("jsonl.gz",) * 4)
    step = GRUClassifier(str(bulk_model), keep_labels=["positive"], min_score=0.55, metadata_prefix="sentiment_",
                         exclusion_writer=JsonlWriter(str(tmp_path / "dropped")))  # fmt: skip
    executor = LocalPipelineExecutor(
        pipeline=[JsonlReader(str(tmp_path / "corpus")), step, JsonlWriter(str(tmp_path / "kept"))],
        tasks=2, logging_dir=str(tmp_path / "logs"),
    )  # fmt: skip
    executor.run()

    kept, dropped = _documents(tmp_path / "kept"), _documents(tmp_path / "dropped")
    expected = [row for shard in shards for row in predict_rows(bulk_model, shard)]
    by_text = {row["text"]: (row["label"], row["score"]) for row in expected}
    assert len(kept) + len(dropped) == len(expected)
    for document in kept + dropped:
        label, score = by_text[document["text"]]
        assert document["metadata"]["sentiment_label"] == label
        assert abs(document["metadata"]["sentiment_score"] - score) <= 1e-5
    assert all(d["metadata"]["sentiment_label"] == "positive" and d["metadata"]["sentiment_score"] >= 0.55
               for d in kept)  # fmt: skip
    low = sum(1 for row in expected if row["label"] == "positive" and row["score"] < 0.55)
    negative = sum(1 for row in expected if row["label"] == "negative")
    assert kept and low and negative  # the test data exercises both reasons

    stats = json.loads((tmp_path / "logs" / "stats.json").read_text())
    counts = next(step for step in stats if "hf_gru" in step["name"])["stats"]  # counters, summed over the tasks
    assert counts["total"] == len(expected) and counts["forwarded"] == len(kept)
    assert counts["dropped_label_negative"] == negative and counts["dropped_low_score"] == low
    assert counts["label_positive"] + counts["label_negative"] == len(expected)
    assert len(list((tmp_path / "logs" / "completions").iterdir())) == 2  # both tasks marked done


def test_bad_options_are_refused_where_given(bulk_model):
    with pytest.raises(ValueError, match="keep_labels or drop_labels, not both"):
        GRUClassifier(str(bulk_model), keep_labels=["positive"], drop_labels=["negative"])
    with pytest.raises(ValueError, match="label\\(s\\) postive are not labels of .*; it has: negative, positive"):
        GRUClassifier(str(bulk_model), keep_labels=["postive"])
    with pytest.raises(ValueError, match="min_score must be a probability"):
        GRUClassifier(str(bulk_model), min_score=1.5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        GRUClassifier(str(bulk_model), batch_size=0)
