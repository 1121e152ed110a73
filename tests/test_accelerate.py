"""Training on any hardware: several processes, resuming, mixed precision and streaming, for both training paths.

Multi-process runs start real process groups (`accelerate launch` with the checked-in DDP config, `torchrun`) on the
CPU, where hf_gru makes them one gloo group, and are compared with one process given the same global batch. Dropout
is off in those comparisons: each process draws its own masks, which no single process reproduces. What remains is
float reduction order (DDP averages two half-batch gradients, one process takes one full-batch mean; oneDNN picks
kernels by batch shape), hence the small loss tolerances and accuracies equal to within one example.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import shared_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_gru import GRUConfig, GRUForSequenceClassification
from hf_gru.accelerate_loop import run_accelerate_training
from hf_gru.arguments import parse_accelerate_arguments, parse_training_arguments
from hf_gru.modeling_gru import GRUPooler
from hf_gru.run_directory import CHECKPOINT_STAGING_PREFIX, LOOP_STATE_FILE
from hf_gru.training import run_training

REPO = Path(__file__).resolve().parents[1]
DDP_CONFIG = REPO / "scripts" / "accelerate_ddp.yaml"
SMALL = [
    "--preset", "small", "--embedding_size", "64", "--hidden_size", "64", "--vocab_size", "4000",
    "--report_to", "none", "--disable_tqdm", "true", "--seed", "7",
]  # fmt: skip
NO_DROPOUT = ["--embedding_dropout", "0", "--layer_dropout", "0", "--classifier_dropout", "0"]
ON_CPU = ["--use_cpu", "true"]  # comparisons stay on one device kind, also on a machine with a GPU
OUTPUT_FILES = {
    "config.json", "model.safetensors", "configuration_gru.py", "modeling_gru.py", "tokenizer.json",
    "tokenizer_config.json", "all_results.json", "training_curves.png", "confusion_matrix.png", "README.md",
    "training_summary.json",
}  # fmt: skip
QUESTIONS = ["How many miles is it from London to Paris ?", "Who wrote Hamlet ?", "What is a caldera ?"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _cpu_env() -> dict[str, str]:
    # CPU processes even where a GPU exists (two processes cannot share one GPU's NCCL rank), one thread each.
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as s:  # other runs may hold accelerate's default port 29500 on a shared machine
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate_launch(*args: str) -> list[str]:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(DDP_CONFIG)]
    return [*launch, "--num_processes", "2", "--main_process_port", str(_free_port()), *args]


def _run(command: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, env=_cpu_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _results(directory: Path) -> dict:
    return json.loads((directory / "all_results.json").read_text())


def _global_step(directory: Path) -> int:
    return json.loads((directory / "trainer_state.json").read_text())["global_step"]


def _assert_same_metrics(one: dict, two: dict, loss_tolerance: float) -> None:
    """Accuracy and macro F1 within one example of trec's smaller held-out split (500 texts), losses as given."""
    for split in ("eval", "test"):
        for name in ("accuracy", "f1_macro"):
            assert two[f"{split}_{name}"] == pytest.approx(one[f"{split}_{name}"], abs=1 / 500), f"{split}_{name}"
        assert two[f"{split}_loss"] == pytest.approx(one[f"{split}_loss"], abs=loss_tolerance), split


def _logits(directory: Path, texts: list[str]) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    with torch.no_grad():
        return model(**tokenizer(texts, padding=True, return_tensors="pt")).logits


# ------------------------------------------------------------------------------------------------ processes


def test_accelerate_loop_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path, one_thread):
    trec = shared_dataset("trec")
    common = [
        "--dataset", str(trec), *SMALL, *ON_CPU, *NO_DROPOUT, "--max_train_samples", "512", "--num_train_epochs", "2",
        "--logging_steps", "4", "--save_strategy", "no", "--load_best_model_at_end", "false",
    ]  # fmt: skip
    script = str(REPO / "scripts" / "train_accelerate.py")
    two = _run(
        _accelerate_launch(
            script, *common, "--output_dir", str(tmp_path / "two"), "--per_device_train_batch_size", "16"
        )
    )
    finished = [line for line in two.stderr.splitlines() if "finished:" in line]
    assert any("[rank 0]" in line and "rank 0/2 finished" in line for line in finished), two.stderr[-3000:]
    assert any("[rank 1]" in line and "rank 1/2 finished" in line for line in finished), two.stderr[-3000:]
    assert len({line.rsplit("tokenizer ", 1)[1] for line in finished}) == 1  # every rank trained the same tokenizer

    one_dir = tmp_path / "one"
    run_accelerate_training(
        *parse_accelerate_arguments([*common, "--output_dir", str(one_dir), "--per_device_train_batch_size", "32"])
    )
    two_dir = tmp_path / "two"
    assert OUTPUT_FILES <= {p.name for p in two_dir.iterdir()}
    assert _global_step(two_dir) == _global_step(one_dir) == 2 * math.ceil(512 / 32)  # 2 x 16 per step, not 16
    _assert_same_metrics(_results(one_dir), _results(two_dir), loss_tolerance=1e-4)
    assert _results(two_dir)["train_loss"] == pytest.approx(_results(one_dir)["train_loss"], abs=1e-4)
    # The saved models agree, and load through the Auto classes.
    torch.testing.assert_close(_logits(two_dir, QUESTIONS), _logits(one_dir, QUESTIONS), atol=1e-3, rtol=1e-3)


def test_trainer_path_under_accelerate_launch_and_torchrun_matches_one_process(tmp_path, one_thread):
    trec = shared_dataset("trec")
    common = [
        "--dataset", str(trec), *SMALL, *ON_CPU, *NO_DROPOUT, "--max_train_samples", "512", "--num_train_epochs", "2",
        "--logging_steps", "4", "--save_strategy", "no", "--load_best_model_at_end", "false",
        "--train_sampling_strategy", "random",  # the Trainer groups lengths per process: random keeps batches equal
    ]  # fmt: skip
    half = ["--per_device_train_batch_size", "16"]
    launched = tmp_path / "accelerate"
    _run(_accelerate_launch("-m", "hf_gru.cli", "train", *common, *half, "--output_dir", str(launched)))
    torchrun = tmp_path / "torchrun"
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    _run([*run, str(REPO / "scripts" / "train.py"), *common, *half, "--output_dir", str(torchrun)])

    one_dir = tmp_path / "one"
    run_training(
        *parse_training_arguments([*common, "--per_device_train_batch_size", "32", "--output_dir", str(one_dir)])
    )
    for two_dir in (launched, torchrun):
        assert OUTPUT_FILES <= {p.name for p in two_dir.iterdir()}
        assert _global_step(two_dir) == _global_step(one_dir) == 2 * math.ceil(512 / 32)
        summary = json.loads((two_dir / "training_summary.json").read_text())
        assert summary["hyperparameters"]["train_batch_size"] == 32
        # The Trainer's eval loss is a mean of batch means, and under two processes accelerate pads the last
        # batch with repeated examples that count in its mean: a few 1e-3 off, where the loop's is exact.
        _assert_same_metrics(_results(one_dir), _results(two_dir), loss_tolerance=5e-3)
        torch.testing.assert_close(_logits(two_dir, QUESTIONS), _logits(one_dir, QUESTIONS), atol=1e-3, rtol=1e-3)


def test_resumed_accelerate_loop_reproduces_the_uninterrupted_run(tmp_path, one_thread):
    """Kill after the mid-epoch checkpoint-15 (a later one half-written), resume with `last`: the same run."""
    trec = shared_dataset("trec")
    args = [
        "--dataset", str(trec), *SMALL, *ON_CPU, "--max_train_samples", "320", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "32", "--logging_steps", "5", "--eval_strategy", "steps", "--eval_steps", "5",
        "--save_strategy", "steps", "--save_steps", "5", "--save_total_limit", "100",
        "--load_best_model_at_end", "false",  # so the final model is the one trained after resuming
    ]  # fmt: skip
    straight = tmp_path / "straight"
    first = run_accelerate_training(*parse_accelerate_arguments([*args, "--output_dir", str(straight)]))
    assert {p.name for p in straight.glob("checkpoint-*")} == {f"checkpoint-{s}" for s in (5, 10, 15, 20)}

    killed = tmp_path / "killed"
    killed.mkdir()
    for step in (5, 10, 15):
        shutil.copytree(straight / f"checkpoint-{step}", killed / f"checkpoint-{step}")
    half_written = killed / f"{CHECKPOINT_STAGING_PREFIX}checkpoint-20"  # being written when killed
    shutil.copytree(straight / "checkpoint-20", half_written)
    (half_written / LOOP_STATE_FILE).unlink()
    state = json.loads((killed / "checkpoint-15" / LOOP_STATE_FILE).read_text())
    assert (state["epoch"], state["batches_in_epoch"]) == (1, 5)  # mid-epoch: skip_first_batches has work to do

    second = run_accelerate_training(
        *parse_accelerate_arguments([*args, "--output_dir", str(killed), "--resume_from_checkpoint", "last"])
    )
    timing = ("runtime", "per_second", "wall_seconds")
    for key, value in first.metrics.items():
        if not key.endswith(timing):
            assert second.metrics[key] == pytest.approx(value, abs=1e-6), key

    def after_15(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if not k.endswith(timing)} for e in history if e["step"] > 15]

    assert after_15(second.log_history) and after_15(second.log_history) == after_15(first.log_history)


def test_accelerate_loop_stops_early_keeps_the_best_checkpoint_and_pushes(tmp_path, one_thread, local_hub):
    """No improvement after the first evaluation (learning rate 0): stopped after `patience` more, like the Trainer."""
    out = tmp_path / "early"
    argv = [
        "--dataset", str(shared_dataset("trec")), *SMALL, *ON_CPU, "--max_train_samples", "320",
        "--num_train_epochs", "3", "--per_device_train_batch_size", "32", "--learning_rate", "0",
        "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
        "--save_total_limit", "1", "--early_stopping_patience", "2", "--output_dir", str(out),
        "--push_to_hub", "--hub_model_id", "alice/from-loop", "--hub_token", local_hub.token,
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "train_accelerate.py"), *argv],
        env={**local_hub.subprocess_env(token=False), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and state["best_global_step"] == 2  # evaluations at 2 (best), 4, 6: stop
    assert {p.name for p in out.glob("checkpoint-*")} == {"checkpoint-2", "checkpoint-6"}  # the best is kept
    assert not list(out.glob("tmp-checkpoint-*"))
    pushed = set(local_hub.api().list_repo_files("alice/from-loop"))
    assert {"model.safetensors", "config.json", "modeling_gru.py", "all_results.json", "README.md"} <= pushed
    assert not any(name.startswith("checkpoint-") for name in pushed)


# ------------------------------------------------------------------------------------------- mixed precision


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_fp16_without_a_gpu_is_refused_before_any_work(tmp_path):
    for argv in (["--mixed_precision", "fp16"], ["--fp16", "true"]):
        with pytest.raises(ValueError, match="fp16 mixed precision needs a GPU.*bf16"):
            run_accelerate_training(*parse_accelerate_arguments(["--output_dir", str(tmp_path / "x"), *argv]))
    with pytest.raises(ValueError, match="fp16 mixed precision needs a GPU"):
        parse_training_arguments(["--output_dir", str(tmp_path / "x"), "--fp16", "true"])  # the Trainer path
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="contradicts"):
        argv = ["--output_dir", str(tmp_path / "x"), "--bf16", "true", "--mixed_precision", "no"]
        run_accelerate_training(*parse_accelerate_arguments(argv))


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU autocast path")
def test_bf16_on_cpu_trains_with_finite_loss_on_both_paths(tmp_path, one_thread):
    trec = shared_dataset("trec")
    common = [
        "--dataset", str(trec), *SMALL, "--max_train_samples", "512", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "32", "--logging_steps", "4", "--save_strategy", "no",
        "--load_best_model_at_end", "false",
    ]  # fmt: skip
    loop = run_accelerate_training(
        *parse_accelerate_arguments([*common, "--output_dir", str(tmp_path / "loop"), "--mixed_precision", "bf16"])
    )
    trainer = run_training(
        *parse_training_arguments([*common, "--output_dir", str(tmp_path / "trainer"), "--bf16", "true"])
    )
    histories = {"loop": loop.log_history, "trainer": trainer.log_history}
    for path, history in histories.items():
        losses = [e["loss"] for e in history if "loss" in e]
        assert len(losses) >= 4 and all(math.isfinite(x) for x in losses), path
        assert min(losses[-3:]) < losses[0], path  # it learns
        summary = json.loads((tmp_path / path / "training_summary.json").read_text())
        assert summary["hyperparameters"]["precision"] == "bf16"
        assert math.isfinite(_results(tmp_path / path)["test_loss"])


def _model(pooling: str) -> GRUForSequenceClassification:
    torch.manual_seed(0)
    config = GRUConfig(
        vocab_size=100, pad_token_id=0, num_labels=3, embedding_size=32, hidden_size=32, num_layers=2, pooling=pooling
    )
    return GRUForSequenceClassification(config).eval()


def _batch(device: str = "cpu") -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 100, (6, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    mask[2, :] = 0  # an empty text: every position masked
    mask[3, :3] = 0  # left padding
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pooling", ["max", "attention", "mean", "last"])
def test_gru_under_cpu_autocast_is_close_to_fp32(pooling, dtype, one_thread):
    """Pooling masks with `finfo(dtype).min`: finite in half precision too, empty texts included."""
    model, batch = _model(pooling), _batch()
    with torch.no_grad():
        reference = model.gru(**batch).pooler_output
        with torch.autocast("cpu", dtype=dtype):
            pooled = model.gru(**batch).pooler_output
            logits = model(**batch).logits
    assert torch.isfinite(pooled).all() and torch.isfinite(logits).all()
    torch.testing.assert_close(pooled.float(), reference, atol=2e-2, rtol=2e-2)
    # The pooler itself on half-precision inputs (what it gets from cuDNN under CUDA autocast).
    outputs = torch.randn(6, 12, model.config.output_size, generator=torch.Generator().manual_seed(2))
    mask = batch["attention_mask"].bool()
    pooler = GRUPooler(model.config)
    expected = pooler(outputs, mask, mask.sum(1))
    half = pooler.to(dtype)(outputs.to(dtype), mask, mask.sum(1))
    assert torch.isfinite(half).all() and not half[2].any()  # the empty text pools to zeros
    torch.testing.assert_close(half.float(), expected, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cudnn_gru_under_cuda_autocast_is_close_to_fp32_with_finite_gradients(dtype):
    """torch's cuDNN autocast wrapper (aten/src/ATen/cudnn/AutocastRNN.cpp) runs RNNs in float16 under bf16 too."""
    model, batch = _model("max").cuda().train(), _batch("cuda")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    labels = torch.tensor([0, 1, 2, 0, 1, 2], device="cuda")
    reference = model(**batch, labels=labels)
    reference.loss.backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.autocast("cuda", dtype=dtype):
        rnn_output, _ = model.gru.layers[0].forward_rnn(model.gru.embeddings(batch["input_ids"]))
        output = model(**batch, labels=labels)
    print(f"cuDNN GRU output dtype under {dtype} autocast: {rnn_output.dtype}")
    assert rnn_output.dtype in (torch.float16, torch.bfloat16)
    output.loss.backward()
    torch.testing.assert_close(output.logits.float(), reference.logits, atol=3e-2, rtol=3e-2)
    for name, grad in reference_grads.items():
        low = dict(model.named_parameters())[name].grad
        assert torch.isfinite(low).all(), name
        relative = (low.float() - grad).norm() / grad.norm().clamp(min=1e-12)
        assert relative < 0.1, (name, float(relative))


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16", "no"])
def test_accelerate_loop_trains_on_cuda_in_each_precision(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        with pytest.raises(ValueError, match="compute capability 8.0"):
            run_accelerate_training(*parse_accelerate_arguments(["--output_dir", str(tmp_path), "--bf16", "true"]))
        return
    argv = [
        "--dataset", str(shared_dataset("trec")), *SMALL, "--max_train_samples", "1024", "--num_train_epochs", "2",
        "--per_device_train_batch_size", "64", "--logging_steps", "2", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--mixed_precision", precision, "--output_dir", str(tmp_path),
    ]  # fmt: skip
    outcome = run_accelerate_training(*parse_accelerate_arguments(argv))
    losses = [e["loss"] for e in outcome.log_history if "loss" in e]
    assert losses and all(math.isfinite(x) for x in losses)
    assert math.isfinite(outcome.metrics["test_loss"]) and outcome.metrics["train_tokens_per_second"] > 0


# ------------------------------------------------------------------------------------------------ streaming


def test_streaming_trains_with_max_steps_and_refuses_without(tmp_path, one_thread):
    sst2 = shared_dataset("sst2")
    common = [
        "--dataset",
        str(sst2),
        *SMALL,
        "--streaming",
        "--head_rows",
        "1000",
        "--per_device_train_batch_size",
        "32",
    ]
    with pytest.raises(ValueError, match="--streaming needs --max_steps.*no length"):
        run_accelerate_training(*parse_accelerate_arguments([*common, "--output_dir", str(tmp_path / "refused")]))
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="lacks labels found in the data: positive"):
        argv = [*common, "--max_steps", "5", "--label_set", "negative", "--output_dir", str(tmp_path / "labels")]
        run_accelerate_training(*parse_accelerate_arguments(argv))

    out = tmp_path / "streamed"
    argv = [
        *common, "--max_steps", "30", "--logging_steps", "5", "--eval_strategy", "steps", "--eval_steps", "15",
        "--save_strategy", "steps", "--save_steps", "15", "--output_dir", str(out),
    ]  # fmt: skip
    outcome = run_accelerate_training(*parse_accelerate_arguments(argv))
    assert _global_step(out) == 30 and outcome.metrics["train_samples"] == 30 * 32
    losses = [e["loss"] for e in outcome.log_history if "loss" in e]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert OUTPUT_FILES <= {p.name for p in out.iterdir()}
    assert {"eval_accuracy", "test_accuracy", "test_f1_macro"} <= set(_results(out))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}  # fixed up front from the head rows
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["split_sizes"]["train"] == 30 * 32  # examples seen, not the head rows


def test_streaming_on_two_processes_finishes(tmp_path):
    sst2 = shared_dataset("sst2")
    out = tmp_path / "streamed"
    argv = [
        "--dataset", str(sst2), *SMALL, "--streaming", "--head_rows", "1000", "--max_steps", "20",
        "--per_device_train_batch_size", "16", "--logging_steps", "5", "--eval_strategy", "steps", "--eval_steps", "10",
        "--save_strategy", "steps", "--save_steps", "10", "--output_dir", str(out),
    ]  # fmt: skip
    done = _run(_accelerate_launch(str(REPO / "scripts" / "train_accelerate.py"), *argv))
    assert (
        "rank 0/2 finished: 20 optimizer steps" in done.stderr
        and "rank 1/2 finished: 20 optimizer steps" in done.stderr
    )
    results = _results(out)
    assert results["train_samples"] == 20 * 2 * 16 and math.isfinite(results["train_loss"])
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (out / "checkpoint-20").iterdir()}


def test_loop_arguments_extend_the_train_options(capsys):
    model_args, data_args, training_args, loop_args = parse_accelerate_arguments(
        [
            "--output-dir",
            "x",
            "--epochs",
            "3",
            "--dataset",
            "trec",
            "--streaming",
            "--max_steps",
            "7",
            "--preset",
            "small",
        ]
    )
    assert (training_args.output_dir, training_args.num_train_epochs, training_args.max_steps) == ("x", 3, 7)
    assert (data_args.dataset, model_args.preset, loop_args.streaming, loop_args.mixed_precision) == (
        "trec",
        "small",
        True,
        None,
    )
    with pytest.raises(SystemExit):
        parse_accelerate_arguments(["--help"])
    shown = capsys.readouterr().out
    assert "--mixed_precision" in shown and "--streaming" in shown and "--per_device_train_batch_size" in shown
    with pytest.raises(ValueError, match="--mixed_precision 'fp8'"):
        parse_accelerate_arguments(["--output_dir", "x", "--mixed_precision", "fp8"])
