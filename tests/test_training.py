"""Training end to end on real data: accuracy, the output directory, resuming after SIGKILL, argument defaults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TRAINED_MODEL_FILES, shared_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from hf_gru import GRUForSequenceClassification
from hf_gru.arguments import BEST_METRIC, MODEL_PRESETS, parse_training_arguments
from hf_gru.run_directory import RESULTS_FILE, plan_run_directory, staging_dir
from hf_gru.training import run_training

QUIET = ["--report_to", "none", "--disable_tqdm", "true"]
NO_EVALUATION = ["--eval_strategy", "no", "--save_strategy", "no", "--load_best_model_at_end", "false"]


@pytest.mark.slow
def test_trec_default_training_reaches_90_percent_test_accuracy(tmp_path):
    """The default start (all-MiniLM-L6-v2's embeddings for English) measured 92.0 over 3 seeds; from scratch 87.2.
    How long it takes is benchmarks/accuracy.py's to measure, not a test's to assert."""
    trec = shared_dataset("trec")
    outcome = run_training(*parse_training_arguments(["--dataset", str(trec), "--output_dir", str(tmp_path), *QUIET]))
    print(f"trec: test accuracy {outcome.metrics['test_accuracy']:.4f}")
    assert outcome.metrics["test_accuracy"] >= 0.90
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["init_embeddings"].startswith(
        "sentence-transformers/all-MiniLM-L6-v2"
    )

    # The directory holds everything the issue promises, and it reloads with the Auto classes and pipeline.
    files = {p.name for p in tmp_path.iterdir()}
    assert TRAINED_MODEL_FILES <= files
    results = json.loads((tmp_path / RESULTS_FILE).read_text())
    assert results["test_accuracy"] == pytest.approx(outcome.metrics["test_accuracy"])
    assert {"train_loss", "eval_accuracy", "eval_f1_macro", "test_f1_macro"} <= set(results)
    assert (tmp_path / "training_curves.png").read_bytes()[:4] == b"\x89PNG"

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert isinstance(model, GRUForSequenceClassification)
    assert set(model.config.id2label.values()) == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    classifier = pipeline("text-classification", model=str(tmp_path))
    assert classifier("How many miles is it from London to Paris ?")[0]["label"] == "NUM"
    assert classifier("Who wrote Hamlet ?")[0]["label"] == "HUM"
    scores = classifier("Where is the Eiffel Tower ?", top_k=None)
    assert {s["label"] for s in scores} == set(model.config.id2label.values())
    assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer.model_max_length == 2048  # inference reads as far as training did


RESUME_ARGS = [
    "--preset", "small",
    "--embedding_size", "64",
    "--hidden_size", "64",
    "--vocab_size", "4000",
    "--max_train_samples", "1200",
    "--num_train_epochs", "2",
    "--per_device_train_batch_size", "32",
    "--eval_strategy", "epoch",
    "--save_strategy", "steps",
    "--save_steps", "10",
    "--save_total_limit", "100",
    "--load_best_model_at_end", "false",
    "--logging_steps", "5",
    "--seed", "7",
]  # fmt: skip


def _train_command(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    cli = [sys.executable, "-m", "hf_gru.cli", "train"]
    return [*cli, "--dataset", str(dataset), "--output_dir", str(output_dir), *RESUME_ARGS, *QUIET, *extra]


@pytest.mark.slow
def test_run_killed_with_sigkill_resumes_to_the_same_final_metrics(tmp_path):
    trec = shared_dataset("trec")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    straight = subprocess.run(_train_command(trec, tmp_path / "straight"), env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(trec, killed_dir), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(list(killed_dir.glob("checkpoint-*/trainer_state.json"))) >= 3:  # killed mid-epoch 1, after a save
            break
        time.sleep(0.2)
    assert process.poll() is None, "training finished before it could be killed; lower --save_steps"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / RESULTS_FILE).exists()

    resumed = subprocess.run(
        _train_command(trec, killed_dir, "--resume_from_checkpoint", "last"), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    first = json.loads((tmp_path / "straight" / RESULTS_FILE).read_text())
    second = json.loads((killed_dir / RESULTS_FILE).read_text())
    for key in ("eval_accuracy", "eval_loss", "test_accuracy", "test_f1_macro", "test_loss"):
        assert second[key] == pytest.approx(first[key], abs=1e-6), key


def test_existing_output_directory_is_never_overwritten_silently(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="overwrite_output_dir"):
        plan_run_directory(tmp_path, overwrite=False, resuming_in=None)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    planned = plan_run_directory(tmp_path, overwrite=True, resuming_in=None)  # validates only: builds beside it
    assert planned.staged and planned.work == staging_dir(tmp_path) and planned.final == tmp_path
    assert (tmp_path / "notes.txt").read_text() == "mine"
    file_path = tmp_path / "file"
    file_path.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        plan_run_directory(file_path, overwrite=True, resuming_in=None)


def test_cli_refuses_a_non_empty_output_directory(tmp_path):
    from hf_gru.cli import main

    (tmp_path / "keep.txt").write_text("mine")
    assert main(["train", "--dataset", "demo", "--output-dir", str(tmp_path)]) == 2
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_training_defaults_suit_grus():
    model_args, data_args, args = parse_training_arguments(["--output_dir", "x", "--epochs", "3"])
    assert args.num_train_epochs == 3
    assert 1e-3 <= args.learning_rate <= 3e-3
    assert args.max_grad_norm == 1.0 and args.warmup_steps > 0 and args.load_best_model_at_end
    assert args.train_sampling_strategy == "group_by_length"
    assert args.best_metric_from_problem_type and BEST_METRIC["single_label_classification"] == ("accuracy", True)
    assert model_args.architecture() == MODEL_PRESETS["base"]
    overridden, _, _ = parse_training_arguments(["--output_dir", "x", "--preset", "small", "--pooling", "mean"])
    assert overridden.architecture() == {**MODEL_PRESETS["small"], "pooling": "mean"}
    with pytest.raises(ValueError, match="known presets"):
        parse_training_arguments(["--output_dir", "x", "--preset", "huge"])


def test_gru_weights_train_and_stay_finite_on_a_real_batch(tmp_path):
    """A few real optimisation steps lower the loss: the model, collator and labels fit together."""
    outcome = run_training(
        *parse_training_arguments(
            [
                "--dataset",
                str(shared_dataset("sst2")),
                "--output_dir",
                str(tmp_path),
                "--preset",
                "small",
                "--max_train_samples",
                "512",
                "--num_train_epochs",
                "3",
                *NO_EVALUATION,
                "--logging_steps",
                "4",
                *QUIET,
            ]
        )  # fmt: skip
    )
    losses = [entry["loss"] for entry in outcome.log_history if "loss" in entry]
    assert len(losses) >= 4 and all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < losses[0]


def test_embedding_table_learns_at_its_own_rate_in_both_engines(tmp_path):
    from hf_gru import GRUConfig
    from hf_gru.accelerate_loop import _optimizer
    from hf_gru.training import GRUTrainer

    *_, args = parse_training_arguments(
        [
            "--output_dir",
            str(tmp_path),
            "--embedding_learning_rate_multiplier",
            "30",
            *NO_EVALUATION,
            *QUIET,
        ]
    )
    model = GRUForSequenceClassification(GRUConfig(vocab_size=50, embedding_size=8, hidden_size=8, num_labels=2))
    table = model.get_input_embeddings().weight
    trainer = GRUTrainer(model=model, args=args)
    assert parse_training_arguments(["--output_dir", "x"])[2].embedding_learning_rate_multiplier == 1.0  # default
    for optimizer in (trainer.create_optimizer(), trainer.create_optimizer(), _optimizer(model, args)):
        groups = [g for g in optimizer.param_groups if g["params"]]
        params = [p for g in groups for p in g["params"]]
        assert len(params) == len(list(model.parameters())) == len({id(p) for p in params})  # each exactly once
        (embedding,) = [g for g in groups if any(p is table for p in g["params"])]
        assert embedding["params"] == [table] and embedding["lr"] == pytest.approx(30 * args.learning_rate)
        assert all(g["lr"] == args.learning_rate for g in groups if g is not embedding)
