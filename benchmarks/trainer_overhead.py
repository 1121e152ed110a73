"""Training throughput: `hf-gru train`'s Trainer against a bare PyTorch loop over the same model, batches and optimizer.

Tokens/s (real tokens, after warm-up steps) of the Trainer built by `hf_gru.training.build_trainer` against a bare
loop over the same model initialisation, the very batches of `trainer.get_train_dataloader()`, the same optimizer, LR
schedule and gradient clipping; segments alternate, overhead = bare / Trainer - 1. Where the overhead passes the
target (or on `--profile`), both loops are profiled (cProfile) over their steady steps.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import SHARED_DATA, log

TRAINER_OVERHEAD_TARGET = 0.10


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

    from hf_gru.arguments import parse_training_arguments
    from hf_gru.run import apply_best_metric_default, build_model, prepare_training_data
    from hf_gru.training import build_trainer

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
        trainer = build_trainer(model, training_args, data, apply_best_metric_default(model, training_args))
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
