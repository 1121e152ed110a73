"""Bulk labelling when things go wrong: a killed driver, a bad shard, bad options, a missing extra, a busy or
foreign output folder. Checks that need no worker run before Ray is touched; the rest share one local Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from fixtures.bulk import mixed_corpus, read_output, sst2_texts

from hf_gru.cli import main
from hf_gru.integrations import shards as shard_module
from hf_gru.integrations.shards import find_shards, output_lock, plan_outputs, write_shard

pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")


def _ray_predict(model: Path, source: str, output: Path, *extra: str) -> list[str]:
    return ["predict", "--engine", "ray", "--model", str(model), "--input", source, "--output", str(output), *extra]


def _input_rows(shards: list[Path]) -> Counter:
    from hf_gru.predict import read_input

    return Counter((str(shard), number) for shard in shards for number, _ in read_input(shard))


def _output_rows(output: Path) -> Counter:
    return Counter((row["source"], row["line"]) for path in output.rglob("*.parquet") for row in read_output(path))


# ------------------------------------------------------------------------------ refused before any worker starts


def test_a_missing_extra_is_one_line_naming_the_install(bulk_model, tmp_path, monkeypatch, capsys):
    mixed_corpus(tmp_path / "corpus", sst2_texts(10), formats=("jsonl",))
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    assert main(_ray_predict(bulk_model, str(tmp_path / "corpus"), tmp_path / "out")) == 2
    error = capsys.readouterr().err.strip()
    assert error == "hf-gru: error: ray is not installed; install the ray extra: pip install 'hf-gru[ray]'"
    monkeypatch.setitem(sys.modules, "datatrove", None)
    with pytest.raises(ImportError, match=r"pip install 'hf-gru\[datatrove\]'"):
        sys.modules.pop("hf_gru.integrations.datatrove", None)
        import hf_gru.integrations.datatrove  # noqa: F401


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "{tmp}/nothing-*.jsonl"], "matches no file"),
        (["--input", "{tmp}/empty_dir"], "holds no data files"),
        (["--output", "{tmp}/corpus/out"], "is inside --input"),
        (["--output", "{tmp}/corpus/part-00.jsonl"], "is a file; name a folder"),
        (["--text-column", "body"], "body"),
        (["--backend", "onnx", "--model", "{tmp}/torch_only"], "hf-gru export"),
        (["--device", "cuda"], "drop --device"),
    ],
)
def test_bad_options_are_refused_before_work(bulk_model, tmp_path, capsys, argv, message):
    mixed_corpus(tmp_path / "corpus", sst2_texts(20), formats=("jsonl", "csv"))
    (tmp_path / "empty_dir").mkdir()
    torch_only = tmp_path / "torch_only"
    torch_only.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (torch_only / name).write_bytes((bulk_model / name).read_bytes())
    base = {"--model": str(bulk_model), "--input": str(tmp_path / "corpus"), "--output": str(tmp_path / "out")}
    extra = [value.format(tmp=tmp_path) for value in argv]
    for option in ("--model", "--input", "--output"):
        if option in extra:
            base[option] = extra.pop(extra.index(option) + 1)
            extra.remove(option)
    full = ["predict", "--engine", "ray", *[part for pair in base.items() for part in pair], *extra]
    assert main(full) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    assert not list((tmp_path / "out").glob("*.parquet")) if (tmp_path / "out").exists() else True


def test_ray_options_without_the_ray_engine_are_refused(bulk_model, tmp_path, capsys):
    (shard,) = mixed_corpus(tmp_path / "corpus", sst2_texts(5), formats=("jsonl",))
    for option in (["--workers", "2"], ["--ray-address", "auto"], ["--output-format", "jsonl"]):
        assert main(["predict", "--model", str(bulk_model), "--input", str(shard), *option]) == 2
        assert "is an option of --engine ray" in capsys.readouterr().err


def test_shards_that_would_collide_or_overwrite_inputs_are_refused(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.jsonl", "a.csv"):
        (corpus / name).write_text("text\nhello\n")
    with pytest.raises(ValueError, match="would both be written to"):
        plan_outputs(find_shards(str(corpus)), tmp_path / "out", "parquet", str(corpus))
    (corpus / "a.csv").unlink()
    with pytest.raises(ValueError, match="is an input shard"):  # a glob's output folder is the input folder
        plan_outputs(find_shards(f"{corpus}/*.jsonl"), corpus, "jsonl", f"{corpus}/*.jsonl")


def test_an_output_folder_of_another_model_or_a_running_job_is_refused(bulk_model, tmp_path, capsys):
    mixed_corpus(tmp_path / "corpus", sst2_texts(10), formats=("jsonl",))
    output = tmp_path / "out"
    output.mkdir()
    (output / shard_module.MANIFEST_FILE).write_text('{"model": "someone/else"}')
    assert main(_ray_predict(bulk_model, str(tmp_path / "corpus"), output)) == 2
    assert "holds predictions made with another model ('someone/else'" in capsys.readouterr().err
    (output / shard_module.MANIFEST_FILE).unlink()
    with output_lock(output):  # as a second run would find it while this one holds the folder
        assert main(_ray_predict(bulk_model, str(tmp_path / "corpus"), output)) == 2
    assert "is being written by another" in capsys.readouterr().err


def test_a_shard_writer_stopped_early_leaves_no_file(tmp_path):
    target = tmp_path / "out" / "a.parquet"
    rows = ({"source": "a", "line": i, "label": None if i < 3000 else "x"} for i in range(5000))
    writer = write_shard(rows, target, "parquet")
    next(writer)  # the first chunk holds blank labels only: its schema waits for a typed one
    writer.close()
    assert not target.exists() and not list(target.parent.iterdir())
    assert sum(write_shard(({"line": i, "label": None if i < 3000 else "x"} for i in range(5000)), target,
                           "parquet")) == 5000  # fmt: skip
    assert [row["label"] for row in read_output(target)][2999:3001] == [None, "x"]


# -------------------------------------------------------------------------------------- faults on a real Ray


def test_a_killed_driver_resumes_with_every_row_exactly_once(bulk_model, ray_cluster, tmp_path):
    shards = mixed_corpus(tmp_path / "corpus", sst2_texts(12_000), formats=("jsonl", "csv", "parquet") * 4)
    output = tmp_path / "out"
    argv = _ray_predict(bulk_model, str(tmp_path / "corpus"), output, "--workers", "1", "--ray-address", ray_cluster)
    driver = subprocess.Popen([sys.executable, "-m", "hf_gru.cli", *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    deadline = time.monotonic() + 240
    while len(list(output.glob("*.parquet"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    finished = len(list(output.glob("*.parquet")))
    assert 2 <= finished < len(shards), driver.stderr.read().decode()[-2000:]  # killed part-way through

    assert main(argv) == 0  # the rerun skips what was finished and labels the rest
    assert _output_rows(output) == _input_rows(shards)  # every input row, exactly once
    assert not list(output.glob(".*.tmp"))  # what the killed run was writing is gone


def test_a_bad_shard_fails_alone_and_a_rerun_finishes_it(bulk_model, ray_cluster, tmp_path, capsys):
    shards = mixed_corpus(tmp_path / "corpus", sst2_texts(3000), formats=("jsonl", "jsonl", "csv"))
    good = shards[1].read_text(encoding="utf-8")
    lines = good.splitlines(keepends=True)
    shards[1].write_text("".join(lines[:500]) + "{not json\n" + "".join(lines[500:]), encoding="utf-8")
    output = tmp_path / "out"
    argv = _ray_predict(bulk_model, str(tmp_path / "corpus"), output, "--workers", "2")
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "2 shard(s) written, 0 already done, 1 failed" in captured.out
    assert f"{shards[1]}: DataFileError: cannot read {shards[1]} line 501: invalid JSON" in captured.err
    assert sorted(p.name for p in output.glob("*.parquet")) == ["part-00.parquet", "part-02.parquet"]
    shards[1].write_text(good, encoding="utf-8")
    assert main(argv) == 0
    assert "1 shard(s) written, 2 already done" in capsys.readouterr().out
    assert _output_rows(output) == _input_rows(shards)
