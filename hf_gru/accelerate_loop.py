"""The accelerate engine: the `Trainer`'s recipe as a plain `accelerate` loop, plugged into the run skeleton.

Same arguments as `hf-gru train` (plus `LoopArguments`), same data and model from `start_run`, the Trainer's defaults
(AdamW without decay on biases, linear warmup and decay, clipping, best checkpoint kept, early stopping), same output
directory through `finish_run`. Only the main process writes files, apart from each process's RNG state.
Where this differs from the Trainer on purpose:
- length-grouped batches are grouped over the global batch (all processes, all accumulation steps), so a run on N
  processes sees the very batches of a one-process run with the same global batch;
- the sampler's generator is reseeded with `seed + epoch` at each epoch, so a run resumed mid-epoch replays the
  epoch's order exactly and skips what it had done (`skip_first_batches`);
- `--streaming` trains on an iterable dataset sharded by process (`hf_gru.data.streaming`), with `--max_steps`.
"""

from __future__ import annotations

import itertools
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from datasets import Dataset, IterableDataset
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from transformers import Trainer, TrainerState, TrainingArguments, get_scheduler
from transformers.trainer_pt_utils import LengthGroupedSampler

from .accelerate_state import LoopState, load_best_weights, rotate_checkpoints
from .arguments import (
    DataArguments,
    GRUTrainingArguments,
    LoopArguments,
    ModelArguments,
    parse_accelerate_arguments,
    resolve_precision,
)
from .data import PreparedData, build_data_collator, tokenizer_fingerprint
from .data.splits import LANGUAGE_SAMPLE
from .data.streaming import prepare_streaming_data
from .encoders import scale_embedding_learning_rate
from .hardware import check_same_on_all_ranks
from .metrics import build_compute_metrics
from .modeling_gru import GRUForSequenceClassification
from .run import RunOutcome, Start, finish_run, start_run, tokenizer_training_options
from .run_directory import (
    CHECKPOINT_PREFIX,
    CHECKPOINT_STAGING_PREFIX,
    TENSORBOARD_DIR,
    TRAINER_STATE_FILE,
    TRAINING_ARGS_FILE,
)
from .tokenization import load_tokenizer, train_tokenizer

__all__ = ["LoopArguments", "LoopState", "parse_accelerate_arguments", "run_accelerate_training"]

logger = logging.getLogger(__name__)


def _streaming_loader(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    loop_args: LoopArguments,
    streams: list[IterableDataset],
) -> Callable[[Start], PreparedData]:
    """`start_run`'s data step for `--streaming`: evaluation splits in memory, this process's training stream kept.
    The start follows the head rows' language; a stream is never seen whole, so no vocabulary is pruned."""

    def load(start: Start) -> PreparedData:
        def build_tokenizer(texts: list[str]):
            source = start.tokenizer_for(texts[:LANGUAGE_SAMPLE])
            if source:
                return load_tokenizer(source)
            return train_tokenizer(iter(texts), **tokenizer_training_options(model_args))

        data, stream = prepare_streaming_data(
            data_args.dataset,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            seed=training_args.seed,
            head_rows=loop_args.head_rows,
            label_set=loop_args.label_set,
            validation_fraction=data_args.validation_fraction,
            max_length=data_args.max_length,
            shuffle_buffer=loop_args.shuffle_buffer,
            max_train_samples=data_args.max_train_samples,
            build_tokenizer=build_tokenizer,
            process_index=training_args.process_index,
            world_size=training_args.world_size,
        )
        check_same_on_all_ranks(tokenizer_fingerprint(data.tokenizer), "the tokenizer")
        streams.append(stream)
        return data

    return load


def run_accelerate_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GRUTrainingArguments,
    loop_args: LoopArguments | None = None,
    step_callback: Callable[[LoopState], None] | None = None,
) -> RunOutcome:
    """Data → tokenizer → model → accelerate loop → best model, tokenizer, all_results.json, plots and card.

    `step_callback(state)` runs after every optimizer step on every process (benchmarks time steps with it).
    """
    loop_args = loop_args or LoopArguments()
    if loop_args.streaming and training_args.max_steps <= 0:
        raise ValueError(
            "--streaming needs --max_steps N: a stream has no length, so neither the number of optimizer steps nor "
            "the learning-rate schedule can be derived from --num_train_epochs"
        )
    precision = resolve_precision(loop_args, training_args)
    training_args.fp16, training_args.bf16 = precision == "fp16", precision == "bf16"  # what the model card says
    trackers = [name for name in training_args.report_to if name == "tensorboard"]
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        cpu=training_args.use_cpu,
        step_scheduler_with_optimizer=False,  # stepped by the loop, once per optimizer step that was not skipped
        log_with=trackers or None,
    )
    streams: list[IterableDataset] = []
    load_data = (
        _streaming_loader(model_args, data_args, training_args, loop_args, streams) if loop_args.streaming else None
    )
    run = start_run(model_args, data_args, training_args, load_data=load_data if loop_args.streaming else None)
    stream = streams[0] if streams else None
    logger.info(
        "accelerate: %s, %d process(es), precision %s", accelerator.device, accelerator.num_processes, precision
    )
    if trackers:
        accelerator.project_configuration.set_directories(str(run.directory.work / TENSORBOARD_DIR))
        accelerator.init_trackers(run.directory.final.name)
    loop = _Loop(accelerator, run.model, run.data, stream, training_args, run.problem_type)
    loop.step_callback = step_callback
    if run.checkpoint is not None:
        loop.load(run.checkpoint)
    loop.train()

    metrics = loop.train_metrics()
    eval_metrics, logits, labels = loop.evaluate("validation", "eval")
    metrics.update(eval_metrics)
    if run.data.final_split == "test":
        test_metrics, logits, labels = loop.evaluate("test", "test")
        metrics.update(test_metrics)
    loop.save_final(run.directory.work)
    logger.info(
        "rank %d/%d finished: %d optimizer steps, tokenizer %s",
        accelerator.process_index,
        accelerator.num_processes,
        loop.state.global_step,
        tokenizer_fingerprint(run.data.tokenizer)[:16],
    )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    sizes = {name: len(ds) for name, ds in run.data.raw.items()}
    return finish_run(
        run,
        model=accelerator.unwrap_model(loop.model),
        metrics=metrics,
        log_history=loop.state.log_history,
        predictions=(labels, logits),
        is_main_process=accelerator.is_main_process,
        # A streamed train split has no size: the card reports the training examples seen instead of the head rows.
        summary_fields={"split_sizes": {**sizes, "train": loop.state.samples_seen}} if stream is not None else None,
    )


def _steps(value: float, total: int) -> int:
    """`logging_steps`/`eval_steps`/`save_steps`: a count, or a share of all optimizer steps when below 1."""
    return max(1, math.ceil(total * value)) if value < 1 else int(value)


def _train_sampler(
    dataset: Dataset, training_args: TrainingArguments, global_batch: int, generator: torch.Generator
) -> torch.utils.data.Sampler:
    strategy = training_args.train_sampling_strategy
    if strategy == "group_by_length" and "length" in dataset.column_names:
        lengths = dataset.with_format("arrow")["length"].to_pylist()  # one Arrow read
        return LengthGroupedSampler(global_batch, lengths=lengths, generator=generator)
    if strategy == "sequential":
        return SequentialSampler(dataset)
    return RandomSampler(dataset, generator=generator)


def _optimizer(model: GRUForSequenceClassification, training_args: TrainingArguments) -> torch.optim.Optimizer:
    """The Trainer's optimizer: its class and options from the arguments, no weight decay on biases and norms, the
    embedding table at its own rate (as `GRUTrainer`)."""
    decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state: the rule is all we take
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad]},
    ]
    groups[0]["weight_decay"], groups[1]["weight_decay"] = training_args.weight_decay, 0.0
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    optimizer = optimizer_cls(groups, **optimizer_kwargs)
    scale_embedding_learning_rate(optimizer, model, training_args)
    return optimizer


class _Loop:
    """The training loop's parts: prepared objects, the schedule of logs, evaluations and checkpoints, its state."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: GRUForSequenceClassification,
        data: PreparedData,
        stream: IterableDataset | None,
        args: GRUTrainingArguments,
        problem_type: str,
    ) -> None:
        self.accelerator, self.data, self.stream, self.args = accelerator, data, stream, args
        self.output_dir = Path(args.output_dir)
        self.problem_type = problem_type
        self.best_key = f"eval_{args.metric_for_best_model.removeprefix('eval_')}"
        self.compute_metrics = build_compute_metrics(self.problem_type)
        self.generator = torch.Generator()  # the training order's only source of randomness: reseeded every epoch
        options: dict[str, Any] = dict(collate_fn=build_data_collator(data.tokenizer))
        options["num_workers"] = args.dataloader_num_workers
        options["pin_memory"] = args.dataloader_pin_memory and accelerator.device.type == "cuda"
        options["persistent_workers"] = args.dataloader_persistent_workers and args.dataloader_num_workers > 0
        batch, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
        if stream is None:
            train_set = data.tokenized["train"]
            sampler = _train_sampler(train_set, args, batch * accumulation * accelerator.num_processes, self.generator)
            train_loader = DataLoader(
                train_set,
                batch,
                sampler=sampler,
                generator=self.generator,
                drop_last=args.dataloader_drop_last,
                **options,
            )
        else:
            train_loader = DataLoader(stream, batch, **options)
        splits = [split for split in ("validation", "test") if split in data.tokenized]
        eval_loaders = [DataLoader(data.tokenized[s], args.per_device_eval_batch_size, **options) for s in splits]
        if stream is None:
            self.model, self.optimizer, self.train_loader, *eval_loaders = accelerator.prepare(
                model, _optimizer(model, args), train_loader, *eval_loaders
            )
        else:  # already sharded by split_dataset_by_node: accelerate must not shard it again
            self.model, self.optimizer, *eval_loaders = accelerator.prepare(
                model, _optimizer(model, args), *eval_loaders
            )
            self.train_loader = train_loader
        self.eval_loaders = dict(zip(splits, eval_loaders))

        if stream is None:
            steps_per_epoch = math.ceil(len(self.train_loader) / accumulation)
            self.total_steps = (
                args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
            )
            self.num_epochs: int | None = math.ceil(self.total_steps / steps_per_epoch)
        else:
            self.total_steps, self.num_epochs = args.max_steps, None
        self.scheduler = accelerator.prepare(
            get_scheduler(
                args.lr_scheduler_type,
                optimizer=self.optimizer,
                num_warmup_steps=args.get_warmup_steps(self.total_steps),
                num_training_steps=self.total_steps,
                scheduler_specific_kwargs=args.lr_scheduler_kwargs,
            )
        )
        self.logging_steps = _steps(args.logging_steps, self.total_steps)
        self.eval_strategy, self.save_strategy = str(args.eval_strategy.value), str(args.save_strategy.value)
        self.eval_steps = _steps(args.eval_steps or args.logging_steps, self.total_steps)
        self.save_steps = _steps(args.save_steps, self.total_steps)
        patience = args.early_stopping_patience
        self.patience = patience if patience and self.eval_strategy != "no" and args.load_best_model_at_end else None
        if stream is not None and self.eval_strategy == "epoch":
            logger.warning(
                "--streaming with --eval_strategy epoch evaluates after each full pass over the stream only; use "
                "--eval_strategy steps --eval_steps N (and --save_strategy steps) to evaluate regularly"
            )
        self.state = LoopState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        # Per-process sums since the last log, reduced across processes only when logging: loss, tokens, samples.
        self.pending = torch.zeros(3, dtype=torch.float64, device=accelerator.device)
        self.pending_batches = 0
        self.grad_norm: torch.Tensor | None = None
        self.runtime = 0.0
        self.step_callback: Callable[[LoopState], None] | None = None

    def load(self, checkpoint: Path) -> None:
        self.accelerator.load_state(str(checkpoint))
        self.state = LoopState.load(checkpoint)
        self.best_weights = (
            load_best_weights(checkpoint.parent, self.state) if self.args.load_best_model_at_end else None
        )
        state = self.state
        logger.info(
            "resumed from %s: step %d, epoch %d, batch %d",
            checkpoint,
            state.global_step,
            state.epoch,
            state.batches_in_epoch,
        )

    def save_checkpoint(self) -> None:
        name = f"{CHECKPOINT_PREFIX}{self.state.global_step}"
        if self.state.best_step == self.state.global_step:
            self.state.best_checkpoint = name
        staging = (
            self.output_dir / f"{CHECKPOINT_STAGING_PREFIX}{name}"
        )  # renamed once complete: a killed run leaves no half checkpoint
        self.accelerator.save_state(str(staging))
        if self.accelerator.is_main_process:
            self.state.save(staging)
            self.data.tokenizer.save_pretrained(staging)  # a resumed run must tokenize exactly as this one did
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            final = self.output_dir / name
            if final.exists():
                shutil.rmtree(final)
            staging.rename(final)
            rotate_checkpoints(self.output_dir, self.args.save_total_limit, self.state.best_checkpoint)
        self.accelerator.wait_for_everyone()

    def save_final(self, output_dir: Path) -> None:
        """Model, tokenizer, training_args.bin and trainer_state.json, as `Trainer.save_model()` and `save_state()`."""
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
            self.data.tokenizer.save_pretrained(output_dir)
            torch.save(self.args, output_dir / TRAINING_ARGS_FILE)
            state = self.state
            TrainerState(
                epoch=float(state.epoch),
                global_step=state.global_step,
                max_steps=self.total_steps,
                num_train_epochs=self.num_epochs or 0,
                train_batch_size=self.args.per_device_train_batch_size,
                log_history=state.log_history,
                best_metric=state.best_metric,
                best_global_step=state.best_step,
                best_model_checkpoint=str(output_dir / state.best_checkpoint) if state.best_checkpoint else None,
                num_input_tokens_seen=state.tokens_seen,
            ).save_to_json(str(output_dir / TRAINER_STATE_FILE))
        self.accelerator.wait_for_everyone()

    def evaluate(self, split: str, prefix: str) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Loss and metrics on a split, from predictions gathered across processes without accelerate's padding.

        The loss is the model's own loss over all gathered logits: a mean of per-batch means would count the samples
        accelerate repeats to even out the last batch across processes.
        """
        was_training = self.model.training
        self.model.eval()
        started = time.perf_counter()
        logits, labels = [], []
        with torch.no_grad():
            for batch in self.eval_loaders[split]:
                outputs = self.model(**batch)
                logit, label = self.accelerator.gather_for_metrics((outputs.logits, batch["labels"]))
                logits.append(logit.float().cpu())
                labels.append(label.cpu())
        self.model.train(was_training)
        all_logits, all_labels = torch.cat(logits), torch.cat(labels)
        loss = self.accelerator.unwrap_model(self.model)._loss(all_logits, all_labels)
        runtime = time.perf_counter() - started
        metrics = {f"{prefix}_loss": float(loss)}
        scores = self.compute_metrics((all_logits.numpy(), all_labels.numpy()))
        metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
        metrics[f"{prefix}_runtime"] = round(runtime, 4)
        metrics[f"{prefix}_samples_per_second"] = round(len(all_labels) / runtime, 3)
        metrics[f"{prefix}_samples"] = len(all_labels)
        return metrics, all_logits.numpy(), all_labels.numpy()

    def evaluate_and_track(self, epoch: float) -> bool:
        """Evaluate on validation and keep the best weights; True when early stopping ends training."""
        metrics, _, _ = self.evaluate("validation", "eval")
        state = self.state
        state.log_history.append({**metrics, "epoch": epoch, "step": state.global_step})
        self.accelerator.log(metrics, step=state.global_step)
        logger.info("step %d: %s", state.global_step, {k: round(v, 4) for k, v in metrics.items()})
        value = metrics[self.best_key]
        improved = state.best_metric is None or (
            value > state.best_metric if self.args.greater_is_better else value < state.best_metric
        )
        if improved:
            state.best_metric, state.best_step, state.patience_counter = value, state.global_step, 0
            if self.args.load_best_model_at_end:
                weights = self.accelerator.get_state_dict(self.model)
                self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        else:
            state.patience_counter += 1
        return self.patience is not None and state.patience_counter >= self.patience

    def flush(self, epoch: float | None = None) -> None:
        """Reduce the pending sums across processes into the state; log them when `epoch` is given."""
        if not self.pending_batches:
            return
        loss_sum, tokens, samples = self.accelerator.reduce(self.pending, "sum").tolist()
        batches = self.pending_batches * self.accelerator.num_processes
        state = self.state
        state.loss_sum, state.loss_count = state.loss_sum + loss_sum, state.loss_count + batches
        state.tokens_seen, state.samples_seen = state.tokens_seen + int(tokens), state.samples_seen + int(samples)
        self.pending.zero_()
        self.pending_batches = 0
        if epoch is None:
            return
        entry = {"loss": round(loss_sum / batches, 6), "learning_rate": self.scheduler.get_last_lr()[0]}
        if self.grad_norm is not None:
            entry["grad_norm"] = float(self.grad_norm)
        state.log_history.append({**entry, "epoch": round(epoch, 4), "step": state.global_step})
        self.accelerator.log(entry, step=state.global_step)
        logger.info("step %d/%d: %s", state.global_step, self.total_steps, entry)

    def step(self, batch: dict[str, torch.Tensor]) -> bool:
        """One micro-batch; True when it completed an optimizer step."""
        accelerator, args = self.accelerator, self.args
        with accelerator.accumulate(self.model):
            loss = self.model(**batch).loss
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm:
                self.grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
            self.optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                self.scheduler.step()  # not on steps the fp16 loss scaler skipped, as the Trainer does
            self.optimizer.zero_grad()
        self.pending[0] += loss.detach().double()
        self.pending[1] += batch["attention_mask"].sum()
        self.pending[2] += batch["labels"].shape[0]
        self.pending_batches += 1
        self.state.batches_in_epoch += 1
        return accelerator.sync_gradients

    def train(self) -> None:
        state, args = self.state, self.args
        epochs = itertools.count(state.epoch) if self.num_epochs is None else range(state.epoch, self.num_epochs)
        skip = state.batches_in_epoch  # resuming mid-epoch: the epoch's first batches were done before
        done = state.global_step >= self.total_steps
        started = time.perf_counter()
        self.model.train()
        for epoch in () if done else epochs:
            self.generator.manual_seed(args.seed + epoch)
            if self.stream is not None:
                self.stream.set_epoch(epoch)
            loader = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
            skip, stopped_early, exhausted = 0, False, True
            for batch in loader:
                if self.stream is not None:
                    batch = send_to_device(batch, self.accelerator.device)
                if not self.step(batch):
                    continue
                state.global_step += 1
                if self.step_callback is not None:
                    self.step_callback(state)
                progress = epoch + (state.batches_in_epoch / len(self.train_loader) if self.stream is None else 0)
                done = state.global_step >= self.total_steps
                if state.global_step % self.logging_steps == 0 or done:
                    self.flush(progress)
                if self.eval_strategy == "steps" and state.global_step % self.eval_steps == 0:
                    stopped_early = self.evaluate_and_track(round(progress, 4))
                if (self.save_strategy == "steps" and state.global_step % self.save_steps == 0) or (
                    self.save_strategy == "best" and state.best_step == state.global_step
                ):
                    self.save_checkpoint()
                if stopped_early or done:
                    exhausted = self.stream is None and state.batches_in_epoch >= len(self.train_loader)
                    break
            if exhausted:
                state.epoch, state.batches_in_epoch = epoch + 1, 0
            if not stopped_early and (exhausted or done):
                if self.eval_strategy == "epoch":
                    stopped_early = self.evaluate_and_track(float(epoch + 1))
                if self.save_strategy == "epoch":
                    self.save_checkpoint()
            if stopped_early or done:
                break
        self.runtime = time.perf_counter() - started
        self.flush()
        if args.load_best_model_at_end and self.best_weights is not None:
            logger.info("loading the best model (step %s, %s %.4f)", state.best_step, self.best_key, state.best_metric)
            self.accelerator.unwrap_model(self.model).load_state_dict(self.best_weights)

    def train_metrics(self) -> dict[str, float]:
        state, runtime = self.state, max(self.runtime, 1e-9)
        return {
            "train_loss": state.loss_sum / max(1, state.loss_count),
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(state.samples_seen / runtime, 3),
            "train_steps_per_second": round(state.global_step / runtime, 3),
            "train_tokens_per_second": round(state.tokens_seen / runtime, 1),
            "train_wall_seconds": round(runtime, 2),
            "train_samples": len(self.data.tokenized["train"]) if self.stream is None else state.samples_seen,
            "epoch": float(state.epoch),
        }
