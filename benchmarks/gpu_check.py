"""The GPU check: Trainer and accelerate-loop training on sst2 in fp32 / bf16 / fp16, against a bare loop.

For every precision it trains the same model on the same data three ways and reports steady-state training tokens/s
(real tokens only, after `--warmup-epochs`), peak GPU memory and validation accuracy:
- `trainer`: the `hf-gru train` path (`prepare_training_data`, `build_model`, `build_trainer`), timed per step;
- `loop`: `run_accelerate_training`, the plain accelerate loop, timed per step;
- `raw`: the model's forward + backward + the Trainer's AdamW step over the very same (length-grouped) batches,
  collated once and already on the device: the ceiling, since it does no data loading, scheduling or clipping
  (`raw_fwd_bwd` drops the optimizer step too). The Trainer should reach at least 90% of `raw`.
It also runs the GPU tests (`pytest -m gpu`) and records what cuDNN's GRU computes in under each autocast dtype.

    bash benchmarks/gpu_check.sh            # the GPU run: about 3-5 minutes on an H100
    bash benchmarks/gpu_check.sh --smoke    # tiny sizes, works on a CPU (fp16 then shows as refused)

Results: a table on stdout and `benchmarks/results/gpu_check.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from hf_gru.accelerate_loop import run_accelerate_training
from hf_gru.accelerate_state import LoopState
from hf_gru.arguments import parse_accelerate_arguments, parse_training_arguments
from hf_gru.data import build_data_collator
from hf_gru.run import apply_best_metric_default, build_model, prepare_training_data
from hf_gru.training import build_trainer

REPO = Path(__file__).resolve().parents[1]
FLAGS = {"fp32": [], "bf16": ["--bf16", "true"], "fp16": ["--fp16", "true"]}
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class _StepClock:
    """Wall time at the end of every optimizer step, the device drained first so steps are not undercounted."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def __call__(self, *_: Any) -> None:
        _sync(self.device)
        self.times.append(time.perf_counter())

    def tokens_per_second(self, tokens_per_epoch: int, steps_per_epoch: int, warmup_epochs: int) -> float:
        start = warmup_epochs * steps_per_epoch - 1  # the last step of the warm-up epochs
        epochs = (len(self.times) - 1 - start) / steps_per_epoch
        return tokens_per_epoch * epochs / (self.times[-1] - self.times[start])


class _TrainerClock(TrainerCallback):
    def __init__(self, clock: _StepClock) -> None:
        self.clock = clock

    def on_step_end(self, args, state, control, **kwargs):
        self.clock()


def _peak_memory(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None


def _reset_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _argv(options: argparse.Namespace, output_dir: Path, precision: str) -> list[str]:
    argv = [
        "--dataset", str(options.data), "--output_dir", str(output_dir), "--preset", options.preset,
        "--per_device_train_batch_size", str(options.batch_size), "--per_device_eval_batch_size", "1024",
        "--num_train_epochs", str(options.epochs), "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--report_to", "none", "--disable_tqdm", "true",
        "--logging_steps", "50", "--seed", "42", "--dataloader_num_workers", str(options.workers),
        "--max_length", str(options.max_length), *FLAGS[precision], *options.model_options,
    ]  # fmt: skip
    if options.workers:
        argv += ["--dataloader_persistent_workers", "true"]
    if options.max_train_samples:
        argv += ["--max_train_samples", str(options.max_train_samples)]
    return argv


def run_trainer(options: argparse.Namespace, precision: str, work: Path) -> dict[str, Any]:
    model_args, data_args, training_args = parse_training_arguments(_argv(options, work / "trainer", precision))
    set_seed(training_args.seed)  # as run_training does: the same initial weights in every path and repeat
    data = prepare_training_data(model_args, data_args, training_args, model_args.tokenizer)
    model = build_model(model_args, data.tokenizer, data.id2label)
    trainer = build_trainer(model, training_args, data, apply_best_metric_default(model, training_args))
    clock = _StepClock(options.device)
    trainer.add_callback(_TrainerClock(clock))
    _reset_memory(options.device)
    trainer.train()
    memory = _peak_memory(options.device)
    lengths = data.tokenized["train"]["length"]
    steps = math.ceil(len(lengths) / options.batch_size)
    accuracy = trainer.evaluate()["eval_accuracy"]
    return {
        "tokens_per_second": clock.tokens_per_second(sum(lengths), steps, options.warmup_epochs),
        "peak_memory_mib": memory,
        "eval_accuracy": accuracy,
        "steps": len(clock.times),
    }


def run_loop(options: argparse.Namespace, precision: str, work: Path) -> dict[str, Any]:
    clock = _StepClock(options.device)
    args = parse_accelerate_arguments(_argv(options, work / "loop", precision))
    _reset_memory(options.device)

    def step(state: LoopState) -> None:
        clock()

    outcome = run_accelerate_training(*args, step_callback=step)
    lengths = outcome.data.tokenized["train"]["length"]
    steps = math.ceil(len(lengths) / options.batch_size)
    return {
        "tokens_per_second": clock.tokens_per_second(sum(lengths), steps, options.warmup_epochs),
        "peak_memory_mib": _peak_memory(options.device),
        "eval_accuracy": outcome.metrics["eval_accuracy"],
        "steps": len(clock.times),
    }


def run_raw(options: argparse.Namespace, precision: str, work: Path) -> dict[str, Any]:
    """The same model and length-grouped batches in a bare loop: batches collated once and moved to the device."""
    model_args, data_args, training_args = parse_training_arguments(_argv(options, work / "raw", precision))
    data = prepare_training_data(model_args, data_args, training_args, model_args.tokenizer)
    train = data.tokenized["train"]
    lengths = list(train["length"])
    order = list(LengthGroupedSampler(options.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    collate = build_data_collator(data.tokenizer)
    rows = train.remove_columns([c for c in train.column_names if c not in ("input_ids", "attention_mask", "labels")])
    batches = [
        {k: v.to(options.device) for k, v in collate([rows[i] for i in order[s : s + options.batch_size]]).items()}
        for s in range(0, len(order), options.batch_size)
    ]
    result: dict[str, Any] = {}
    for name, with_optimizer in (("raw", True), ("raw_fwd_bwd", False)):
        set_seed(training_args.seed)
        model = build_model(model_args, data.tokenizer, data.id2label).to(options.device).train()
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)  # same AdamW
        optimizer = optimizer_cls(model.parameters(), **optimizer_kwargs)
        scaler = torch.amp.GradScaler(options.device, enabled=precision == "fp16")
        dtype = AUTOCAST[precision]
        clock = _StepClock(options.device)
        _reset_memory(options.device)
        for _ in range(options.epochs):
            for batch in batches:
                with torch.autocast(options.device, dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss = model(**batch).loss
                scaler.scale(loss).backward()
                if with_optimizer:
                    scaler.step(optimizer)
                    scaler.update()
                optimizer.zero_grad(set_to_none=True)
                clock()
        result[name] = {
            "tokens_per_second": clock.tokens_per_second(sum(lengths), len(batches), options.warmup_epochs),
            "peak_memory_mib": _peak_memory(options.device),
            "eval_accuracy": None,
            "steps": len(clock.times),
        }
    return result


def cudnn_autocast_dtypes(device: str) -> dict[str, str]:
    """What dtype the GRU kernel's output has under each autocast dtype (cuDNN runs RNNs in fp16 under bf16 too)."""
    gru = torch.nn.GRU(64, 64, batch_first=True).to(device)
    x = torch.randn(8, 16, 64, device=device)
    found = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        try:
            with torch.autocast(device, dtype=dtype):
                found[name] = str(gru(x)[0].dtype).removeprefix("torch.")
        except RuntimeError as error:
            found[name] = f"error: {error}"
    return found


def run_tests(device: str) -> dict[str, Any]:
    marker = "gpu" if device == "cuda" else "gpu or not gpu"
    command = [sys.executable, "-m", "pytest", "-m", marker, str(REPO / "tests" / "test_accelerate.py"), "-q", "-rs"]
    if device != "cuda":  # smoke: only the quick in-process checks, to prove the wiring
        command += ["-k", "autocast or refused or arguments"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    tail = (done.stdout + done.stderr).strip().splitlines()[-12:]
    return {"command": " ".join(command[2:]), "returncode": done.returncode, "tail": tail}


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "device": device}
    if device == "cuda":
        info.update(
            gpu=torch.cuda.get_device_name(),
            capability=".".join(map(str, torch.cuda.get_device_capability())),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,  # fp32 cuDNN RNNs use TF32 tensor cores when True
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        info.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the sst2 folder (train/validation/test .jsonl.gz)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch-size", type=int, default=1024, help="GRUs need large batches on a GPU")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup-epochs", type=int, default=2, help="epochs left out of tokens/s")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--workers", type=int, default=4, help="dataloader workers of the Trainer and the loop")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--paths", default="trainer,loop,raw")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the median is reported")
    parser.add_argument(
        "--model-option", dest="model_options", action="append", default=[], help="e.g. --hidden_size=64"
    )
    parser.add_argument("--no-tests", dest="tests", action="store_false")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check.json")
    options = parser.parse_args(argv)
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU is visible (use --smoke on a CPU)")
    if options.epochs <= options.warmup_epochs:
        parser.error("--epochs must exceed --warmup-epochs")

    report: dict[str, Any] = {"environment": environment(options.device), "settings": {}, "runs": [], "summary": {}}
    report["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    report["cudnn_gru_output_dtype_under_autocast"] = cudnn_autocast_dtypes(options.device)
    if options.tests:
        report["gpu_tests"] = run_tests(options.device)
    precisions, paths = options.precisions.split(","), options.paths.split(",")
    runners = {"trainer": run_trainer, "loop": run_loop, "raw": run_raw}
    measured: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        for repeat in range(options.repeats):
            for precision in precisions:
                for path in paths:
                    work = Path(tmp) / f"{precision}-{path}-{repeat}"
                    started = time.perf_counter()
                    try:
                        result = runners[path](options, precision, work)
                    except ValueError as error:  # a precision this hardware refuses: recorded, not fatal
                        result = {"refused": str(error)}
                    wall = round(time.perf_counter() - started, 1)
                    for name, row in result.items() if path == "raw" and "refused" not in result else [(path, result)]:
                        measured.setdefault((precision, name), []).append({**row, "wall_seconds": wall})
    for (precision, path), rows in measured.items():
        row = dict(rows[0])
        if "tokens_per_second" in row:
            row["tokens_per_second"] = round(statistics.median(r["tokens_per_second"] for r in rows), 1)
            row["tokens_per_second_all"] = [round(r["tokens_per_second"], 1) for r in rows]
        report["runs"].append({"precision": precision, "path": path, **row})
    for precision in precisions:
        raw = measured.get((precision, "raw"), [{}])[0].get("tokens_per_second")
        for path in ("trainer", "loop"):
            rows = [r for r in report["runs"] if r["precision"] == precision and r["path"] == path]
            if raw and rows and "tokens_per_second" in rows[0]:
                ratio = rows[0]["tokens_per_second"] / raw
                report["summary"][f"{path}_over_raw_{precision}"] = round(ratio, 3)
    if "gpu_tests" in report:
        report["summary"]["gpu_tests_passed"] = report["gpu_tests"]["returncode"] == 0
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    print(f"\nwritten to {options.out}")
    return 0


def table(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"device: {env.get('gpu', env.get('cpu'))} | torch {env['torch']} | cuDNN {env.get('cudnn', '-')}",
        f"cuDNN GRU output dtype under autocast: {report['cudnn_gru_output_dtype_under_autocast']}",
        "",
        f"{'precision':<9} {'path':<12} {'tokens/s':>12} {'vs raw':>7} {'peak MiB':>9} {'val acc':>8}  note",
    ]
    for row in report["runs"]:
        ratio = report["summary"].get(f"{row['path']}_over_raw_{row['precision']}")
        if "refused" in row:
            dashes = f"{'-':>12} {'-':>7} {'-':>9} {'-':>8}"
            lines.append(f"{row['precision']:<9} {row['path']:<12} {dashes}  refused: {row['refused'][:70]}")
            continue
        memory = "-" if row["peak_memory_mib"] is None else f"{row['peak_memory_mib']:.0f}"
        accuracy = "-" if row["eval_accuracy"] is None else f"{row['eval_accuracy']:.4f}"
        lines.append(
            f"{row['precision']:<9} {row['path']:<12} {row['tokens_per_second']:>12,.0f} "
            f"{'' if ratio is None else f'{ratio:.0%}':>7} {memory:>9} {accuracy:>8}"
        )
    if "gpu_tests" in report:
        tests = report["gpu_tests"]
        lines += [
            "",
            f"tests ({tests['command']}): {'passed' if tests['returncode'] == 0 else 'FAILED'}",
            *tests["tail"][-3:],
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
