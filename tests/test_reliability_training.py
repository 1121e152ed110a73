"""Reliability of `hf-gru train` (issue 12): nothing lost on failure, exact resume, incomplete checkpoints, no tokens
on disk. Data-loss cases compare the sha256 of every file before and after."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from conftest import shared_dataset
from safetensors.torch import load_file

from hf_gru.arguments import parse_training_arguments
from hf_gru.cli import main
from hf_gru.run_directory import (
    CHECKPOINT_PREFIX,
    RESULTS_FILE,
    TRAINER_STATE_FILE,
    WEIGHTS_FILE,
    plan_run_directory,
    resolve_checkpoint,
    staging_dir,
)
from hf_gru.training import run_training

QUIET = ["--report_to", "none", "--disable_tqdm", "true"]
TINY = ["--preset", "small", "--hidden_size", "32", "--embedding_size", "32", "--vocab_size", "2000", *QUIET]


def _fingerprint(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory) -> Path:
    """A finished small run: the 'previous model' that a failed overwrite must leave intact."""
    trec = shared_dataset("trec")
    output = tmp_path_factory.mktemp("previous") / "model"
    run_training(
        *parse_training_arguments(
            ["--dataset", str(trec), "--output_dir", str(output), *TINY, "--max_train_samples", "300", "--epochs", "1"]
        )
    )
    return output


@pytest.mark.parametrize(
    "case", ["missing dataset", "single-class dataset", "output holds the dataset", "output is the dataset's parent"]
)
def test_a_failing_overwrite_leaves_every_previous_file_intact(trained_dir: Path, tmp_path: Path, case: str, capsys):
    before = _fingerprint(trained_dir)
    output = trained_dir
    if case == "missing dataset":
        dataset = str(tmp_path / "no-such-folder")
    elif case == "single-class dataset":
        dataset = str(
            _write_jsonl(tmp_path / "one" / "train.jsonl", [{"text": f"t {i}", "label": "a"} for i in range(20)])
        )
    else:
        data_dir = trained_dir / "data"
        _write_jsonl(data_dir / "train.jsonl", [{"text": f"t {i}", "label": "ab"[i % 2]} for i in range(20)])
        before = _fingerprint(trained_dir)
        dataset = str(data_dir)
        output = trained_dir if case == "output is the dataset's parent" else data_dir
    code = main(["train", "--dataset", dataset, "--output_dir", str(output), "--overwrite_output_dir", *TINY])
    assert code == 2
    message = capsys.readouterr().err
    assert message.strip().splitlines()[-1].startswith("hf-gru: error:") and "Traceback" not in message
    if case.startswith("output"):
        assert "holds the input" in message
    assert _fingerprint(trained_dir) == before
    assert not staging_dir(trained_dir).exists()
    if case == "single-class dataset":
        shutil.rmtree(tmp_path / "one")


def test_single_class_training_split_writes_nothing(tmp_path: Path, capsys):
    dataset = _write_jsonl(tmp_path / "one" / "train.jsonl", [{"text": f"t {i}", "label": "yes"} for i in range(20)])
    output = tmp_path / "out"
    assert main(["train", "--dataset", str(dataset), "--output_dir", str(output), *TINY]) == 2
    assert "one label" in capsys.readouterr().err
    assert not output.exists()


def test_a_run_that_fails_while_training_leaves_the_previous_model(trained_dir: Path, monkeypatch):
    from hf_gru import training

    before = _fingerprint(trained_dir)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash in the middle of training")

    monkeypatch.setattr(training.GRUTrainer, "train", crash)
    args = ["--dataset", str(shared_dataset("trec")), "--output_dir", str(trained_dir), "--overwrite_output_dir", *TINY]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(*parse_training_arguments([*args, "--max_train_samples", "100"]))
    assert _fingerprint(trained_dir) == before  # the half-built replacement stays in its staging folder
    shutil.rmtree(staging_dir(trained_dir))


def test_a_successful_overwrite_replaces_the_directory(tmp_path: Path):
    trec = shared_dataset("trec")
    output = tmp_path / "model"
    output.mkdir()
    (output / "old-notes.txt").write_text("from an earlier run")
    args = ["--dataset", str(trec), "--output_dir", str(output), "--overwrite_output_dir", *TINY]
    outcome = run_training(*parse_training_arguments([*args, "--max_train_samples", "200", "--epochs", "1"]))
    assert outcome.output_dir == output and (output / RESULTS_FILE).is_file() and (output / WEIGHTS_FILE).is_file()
    assert not (output / "old-notes.txt").exists()
    assert not staging_dir(output).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    for state in output.rglob(TRAINER_STATE_FILE):  # recorded checkpoint paths point at the final directory
        assert str(staging_dir(output)) not in state.read_text()


RESUME = [
    *TINY,
    "--max_train_samples", "640",
    "--num_train_epochs", "3",
    "--per_device_train_batch_size", "32",
    "--eval_strategy", "steps", "--eval_steps", "10",
    "--save_strategy", "steps", "--save_steps", "10",
    "--save_total_limit", "100",
    "--load_best_model_at_end", "false",  # so the final model is the one trained after resuming
    "--logging_steps", "5",
    "--seed", "3",
]  # fmt: skip


def test_trainer_resume_reproduces_the_uninterrupted_run_exactly(tmp_path: Path, caplog):
    """20 steps an epoch, 60 in all; kill after checkpoint-30 (mid-epoch 2) with checkpoint-40 half-written."""
    trec = shared_dataset("trec")
    straight = tmp_path / "straight"
    first = run_training(*parse_training_arguments(["--dataset", str(trec), "--output_dir", str(straight), *RESUME]))

    killed = tmp_path / "killed"
    killed.mkdir()
    for step in (10, 20, 30):
        shutil.copytree(straight / f"{CHECKPOINT_PREFIX}{step}", killed / f"{CHECKPOINT_PREFIX}{step}")
    half = killed / f"{CHECKPOINT_PREFIX}40"  # a SIGKILL while saving: config and code only
    half.mkdir()
    for name in ("config.json", "configuration_gru.py", "modeling_gru.py"):
        shutil.copy(straight / f"{CHECKPOINT_PREFIX}40" / name, half / name)

    with caplog.at_level(logging.WARNING, logger="hf_gru"):
        assert resolve_checkpoint("last", killed) == killed / f"{CHECKPOINT_PREFIX}30"
    assert "skipping incomplete checkpoint" in caplog.text
    second = run_training(
        *parse_training_arguments(
            ["--dataset", str(trec), "--output_dir", str(killed), *RESUME, "--resume_from_checkpoint", "last"]
        )
    )
    # Timings differ, and the Trainer's train_loss averages only the steps the resumed process ran.
    skipped = ("runtime", "per_second", "wall_seconds", "train_loss")
    for key, value in first.metrics.items():
        if not key.endswith(skipped):
            assert second.metrics[key] == pytest.approx(value, abs=1e-6), key
    first_weights, second_weights = load_file(straight / WEIGHTS_FILE), load_file(killed / WEIGHTS_FILE)
    for name, tensor in first_weights.items():
        assert torch.equal(tensor, second_weights[name]), name


def test_an_explicit_incomplete_checkpoint_is_refused_with_the_way_out(tmp_path: Path):
    half = tmp_path / f"{CHECKPOINT_PREFIX}5"
    half.mkdir()
    (half / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="incomplete.*--resume_from_checkpoint last"):
        resolve_checkpoint(str(half), tmp_path)
    with pytest.raises(ValueError, match="no complete checkpoint"):
        resolve_checkpoint("last", tmp_path)


def test_hub_token_is_never_written_to_disk(tmp_path: Path):
    secret = "hf_NeverOnDisk0123456789abcdefXYZ"
    output = tmp_path / "model"
    args = ["--dataset", str(shared_dataset("trec")), "--output_dir", str(output), *TINY, "--hub_token", secret]
    run_training(*parse_training_arguments([*args, "--max_train_samples", "100", "--epochs", "1"]))
    files = [p for p in output.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files)
    assert not [p for p in files if secret.encode() in p.read_bytes()]


def test_resuming_a_killed_replacement_keeps_the_checkpoints_in_its_staging_folder(tmp_path: Path) -> None:
    """`--overwrite_output_dir` run killed, then resumed: its staging folder holds the checkpoints to continue from
    (opening the directory used to delete it, so a killed teacher or student silently restarted from nothing)."""
    output = tmp_path / "out"
    output.mkdir()
    (output / "previous.txt").write_text("the user's earlier run")
    staged = staging_dir(output)
    (staged / "checkpoint-10").mkdir(parents=True)
    (staged / "checkpoint-10" / "model.safetensors").write_bytes(b"weights")
    plan_run_directory(output, overwrite=True, resuming_in=staged).open()
    assert (staged / "checkpoint-10" / "model.safetensors").read_bytes() == b"weights"
    assert (output / "previous.txt").is_file()
    plan_run_directory(output, overwrite=True, resuming_in=None).open()  # a fresh replacement starts clean
    assert not (staged / "checkpoint-10").exists()
