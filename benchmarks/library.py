"""The benchmarks' one door into hf_gru's training: `hf-gru train` and `hf-gru distill` through the library."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import log

ARCHITECTURE = (
    "vocab_size",
    "embedding_size",
    "hidden_size",
    "num_layers",
    "pooling",
    "chunk_size",
    "embedding_pooling",
    "bag_of_tokens",
    "bag_bigram_buckets",
)


def run_command(
    command: str, dataset_dir: Path, output_dir: Path, preset: str | None, seed: int, extra: list[str]
) -> dict:
    """`hf-gru {train,distill} --dataset D --output_dir O [--preset P] --seed S EXTRA...`; the final model only is kept
    (no preset: the command's default).

    Returns the run's metrics (`all_results.json`'s), the wall time, the argv, the parameter count and architecture.
    """
    argv = [
        "--dataset", str(dataset_dir),
        "--output_dir", str(output_dir),
        "--overwrite_output_dir", "true",
        *(["--preset", preset] if preset else []),
        "--seed", str(seed),
        "--report_to", "none",
        "--disable_tqdm", "true",
        "--save_total_limit", "1",
        *extra,
    ]  # fmt: skip
    log(f"hf-gru {command} {' '.join(argv)}")
    started = time.perf_counter()
    if command == "distill":
        from hf_gru.distillation import distill

        outcome = distill(argv)
    else:
        from hf_gru.arguments import parse_training_arguments
        from hf_gru.training import run_training

        outcome = run_training(*parse_training_arguments(argv))
    seconds = time.perf_counter() - started
    for checkpoint in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(checkpoint)  # the final model is all the benchmarks need
    return {
        "metrics": dict(outcome.metrics),
        "results": read_results(output_dir),  # all_results.json: also what is not a metric (the start, pruning)
        "seconds": round(seconds, 1),
        "argv": argv,
        **describe_model(output_dir),
    }


def train_hf_gru(dataset_dir: Path, output_dir: Path, preset: str, seed: int, extra: list[str]) -> dict[str, Any]:
    return run_command("train", dataset_dir, output_dir, preset, seed, extra)


def describe_model(model_dir: Path) -> dict[str, Any]:
    """Parameter count and architecture of a saved hf_gru model, read back from its directory."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return {
        "parameters": model.num_parameters(),
        "architecture": {k: getattr(config, k) for k in ARCHITECTURE if hasattr(config, k)},
    }


def read_results(model_dir: Path) -> dict[str, Any]:
    """The `all_results.json` a training run left in `model_dir` (empty when there is none)."""
    from hf_gru.run_directory import RESULTS_FILE

    path = Path(model_dir) / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
