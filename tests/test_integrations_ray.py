"""Ray: `hf-gru predict --engine ray` and `GRUPredictor` give `hf-gru predict`'s answers, on one local Ray (2 CPUs)
shared by the module; datatrove's RayPipelineExecutor runs the hf_gru step on it."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from fixtures.bulk import mixed_corpus, predict_rows, read_output, sst2_texts

from hf_gru.cli import main
from hf_gru.integrations.shards import output_name

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'hf-gru[ray]')")
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")


@pytest.fixture(scope="module")
def classifier(bulk_model):
    from hf_gru.backends import load_backend

    return load_backend(bulk_model, backend="onnx", threads=1)


def _texts(count: int) -> list[str]:
    """sst2 sentences with what a real corpus also holds: blanks, and long documents the backend must clip."""
    texts = sst2_texts(count)
    long_document = " ".join(texts[:600])  # ~60,000 characters: clipped to the model's 64 tokens
    for fraction, odd in (
        (0.0003, ""),
        (0.035, "   "),
        (0.075, long_document),
        (0.45, long_document[::-1]),
        (0.9995, ""),
    ):
        texts[int(fraction * count)] = odd
    return texts


def _assert_same_rows(output: list[dict], expected: list[dict], source: str) -> None:
    assert len(output) == len(expected), source
    for got, want in zip(output, expected):
        assert got["source"] == source
        assert (got["line"], got["text"], got["label"]) == (want["line"], want["text"], want["label"]), source
        if want["score"] is None:
            assert got["score"] is None
        else:
            assert abs(got["score"] - want["score"]) <= 1e-5


def test_engine_ray_labels_mixed_shards_as_predict_does(bulk_model, classifier, ray_cluster, tmp_path, capsys):
    shards = mixed_corpus(tmp_path / "corpus", _texts(20_000))
    output = tmp_path / "labelled"
    argv = ["predict", "--engine", "ray", "--model", str(bulk_model), "--input", str(tmp_path / "corpus"),
            "--output", str(output), "--workers", "2", "--backend", "onnx"]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "labelled 20,000 texts" in summary and "on 2 worker(s): 8 shard(s) written, 0 already done" in summary
    for shard in shards:
        rows = read_output(output / output_name(shard.name, "parquet"))
        _assert_same_rows(rows, predict_rows(bulk_model, shard, classifier), str(shard))
    labels = {row["label"] for row in read_output(output / "part-00.parquet")}
    assert labels == {"negative", "positive", None}  # a trained model, not a constant answer; a blank has none

    # a rerun finds every shard done: nothing starts, nothing is rewritten
    before = {path: path.stat().st_mtime_ns for path in output.glob("*.parquet")}
    assert main(argv) == 0
    assert "0 shard(s) written, 8 already done" in capsys.readouterr().out
    assert before == {path: path.stat().st_mtime_ns for path in output.glob("*.parquet")}


def test_glob_input_and_json_lines_output(bulk_model, classifier, ray_cluster, tmp_path):
    texts = sst2_texts(3000)
    corpus = tmp_path / "corpus"
    shards = mixed_corpus(corpus / "nested", texts, formats=("csv", "jsonl.gz", "txt"))
    output = tmp_path / "out"
    argv = ["predict", "--engine", "ray", "--model", str(bulk_model), "--input", f"{corpus}/**/*.[cj]*",
            "--output", str(output), "--output-format", "jsonl", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.jsonl")) == [
        "nested/part-00.jsonl",
        "nested/part-01.jsonl",
    ]  # the glob took the csv and the jsonl.gz, not the txt; paths kept under the glob's folder
    for shard in shards[:2]:
        rows = read_output(output / "nested" / (shard.name.split(".")[0] + ".jsonl"))
        _assert_same_rows(rows, predict_rows(bulk_model, shard, classifier), str(shard))


def test_predictor_in_every_batch_format_keeps_columns(bulk_model, classifier, ray_cluster, tmp_path):
    import ray.data

    from hf_gru.integrations.ray import GRUPredictor

    texts = _texts(1600)
    (shard,) = mixed_corpus(tmp_path / "corpus", texts, formats=("sentence.parquet",))
    dataset = ray.data.read_parquet(str(shard))
    for batch_format, prefix in (("numpy", "np_"), ("pandas", "pd_"), ("pyarrow", "pa_")):  # three pools, one run
        dataset = dataset.map_batches(
            GRUPredictor, fn_constructor_kwargs={"model": str(bulk_model), "prefix": prefix, "logits": True,
                                                 "text_column": "sentence"},
            batch_size=500, batch_format=batch_format, compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25,
        )  # fmt: skip
    rows = sorted(dataset.take_all(), key=lambda row: row["id"])
    expected = predict_rows(bulk_model, shard, classifier)
    logits = classifier.predict_logits([t for t in texts if t.strip()])
    assert [row["id"] for row in rows] == list(range(len(texts)))
    assert [row["sentence"] for row in rows] == texts  # every input column passes through
    present = 0
    for row, want in zip(rows, expected):
        for prefix in ("np_", "pd_", "pa_"):
            label, score = row[prefix + "label"], row[prefix + "score"]
            if want["label"] is None:
                assert label is None and (score is None or np.isnan(score)), (prefix, row["id"])
                continue
            assert label == want["label"] and abs(score - want["score"]) <= 1e-5, (prefix, row["id"])
            np.testing.assert_allclose(np.asarray(row[prefix + "logits"]), logits[present], atol=1e-5)
        present += want["label"] is not None
    assert present == len(logits)


def test_hub_dataset_id_as_input(bulk_model, classifier, ray_cluster, local_hub, tmp_path, monkeypatch):
    texts = sst2_texts(1200)
    shards = mixed_corpus(tmp_path / "upload" / "data", texts, formats=("parquet", "jsonl.gz"))
    api = local_hub.api()
    api.create_repo("alice/reviews", repo_type="dataset")
    api.upload_folder(repo_id="alice/reviews", repo_type="dataset", folder_path=tmp_path / "upload")
    monkeypatch.setenv("HF_ENDPOINT", local_hub.endpoint)
    output = tmp_path / "out"
    argv = ["predict", "--engine", "ray", "--model", str(bulk_model), "--input", "alice/reviews", "--output",
            str(output), "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    revision = api.dataset_info("alice/reviews").sha
    for shard in shards:
        rows = read_output(output / "data" / (shard.name.split(".")[0] + ".parquet"))
        source = f"hf://datasets/alice/reviews@{revision}/data/{shard.name}"
        _assert_same_rows(rows, predict_rows(bulk_model, shard, classifier), source)


def test_datatrove_step_under_ray_executor(bulk_model, classifier, ray_cluster, tmp_path):
    pytest.importorskip("datatrove", reason="the datatrove extra is not installed (pip install 'hf-gru[datatrove]')")
    from datatrove.executor import RayPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from hf_gru.integrations.datatrove import GRUClassifier

    shards = mixed_corpus(tmp_path / "corpus", sst2_texts(800), formats=("jsonl.gz", "jsonl.gz"))
    pipeline = [
        JsonlReader(str(tmp_path / "corpus")),
        GRUClassifier(str(bulk_model)),
        JsonlWriter(str(tmp_path / "out")),
    ]
    executor = RayPipelineExecutor(pipeline, tasks=2, logging_dir=str(tmp_path / "logs"), mem_per_cpu_gb=0.5)
    executor.run()
    labelled = {}
    for path in (tmp_path / "out").glob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                document = json.loads(line)
                labelled[document["text"]] = document["metadata"]["label"]
    expected = {row["text"]: row["label"] for shard in shards for row in predict_rows(bulk_model, shard, classifier)}
    assert labelled == expected
    stats = json.loads((tmp_path / "logs" / "stats.json").read_text())
    total = next(step for step in stats if "hf_gru" in step["name"])["stats"]["total"]
    assert (total["total"] if isinstance(total, dict) else total) == 800  # merged over tasks: a summary


def test_predictor_reads_missing_values_as_blank_and_refuses_to_replace_a_column(bulk_model, classifier):
    import pandas as pd
    import pyarrow as pa

    from hf_gru.integrations.ray import GRUPredictor

    predictor = GRUPredictor(str(bulk_model))  # called as an actor calls it, no Ray needed
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "text": ["a fine film", None, float("nan"), "dull"]})
    out = predictor(frame)
    assert list(out.columns) == ["id", "text", "label", "score"] and out["label"][1:3].isna().all()
    assert out["label"][0] == next(iter(classifier.classify(["a fine film"]))).label
    table = predictor(pa.table({"review": ["dull", ""], "stars": [1, 2]}))  # the column training would detect
    assert table.column_names == ["review", "stars", "label", "score"] and table.column("label")[1].as_py() is None
    with pytest.raises(ValueError, match="already has a column 'label'; pass prefix='pred_'"):
        predictor({"text": np.array(["dull"], dtype=object), "label": np.array(["negative"], dtype=object)})
    with pytest.raises(ValueError, match="the Ray dataset: "):
        GRUPredictor(str(bulk_model), text_column="body")({"text": np.array(["dull"], dtype=object)})
