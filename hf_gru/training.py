"""The `Trainer` engine: `hf-gru train` and `scripts/train.py` plug the HF `Trainer` into the run skeleton.

`run_training` = `start_run` (validation, data, tokenizer, model, directory) → `Trainer.train` → best model saved →
`finish_run` (results, plots, card, push). Defaults live in `hf_gru.arguments` and `GRUConfig`.
"""

from __future__ import annotations

import time

import datasets
import torch
from transformers import EarlyStoppingCallback, Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from .arguments import DataArguments, GRUTrainingArguments, ModelArguments, parse_training_arguments
from .data import PreparedData, build_data_collator
from .encoders import scale_embedding_learning_rate
from .metrics import build_compute_metrics
from .modeling_gru import GRUForSequenceClassification
from .run import Run, RunOutcome, finish_run, start_run

__all__ = ["GRUTrainer", "build_trainer", "parse_training_arguments", "run_training"]


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order drawn from `seed + epoch` alone, so a resumed run replays each epoch's order exactly.

    The stock sampler draws from torch's global generator, whose state on resume depends on how far the killed run
    got; the Trainer calls `set_epoch` before each epoch, as it does for distributed samplers.
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class GRUTrainer(Trainer):
    """`Trainer` whose length-grouped sampler reads the precomputed `length` column and is seeded per epoch, and
    whose embedding table learns at `embedding_learning_rate_multiplier` × the learning rate.

    The stock Trainer drops columns the model does not take before building the sampler, then measures every
    example again in Python; with the column kept here, building the sampler is instant on large datasets.
    """

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        scale_embedding_learning_rate(optimizer, self.model if model is None else model, self.args)
        return optimizer

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and isinstance(dataset, datasets.Dataset)
            and column in dataset.column_names
        ):
            return EpochSeededLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=dataset.with_format("arrow")[column].to_pylist(),  # one Arrow read, not a row-by-row loop
                seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            )
        return super()._get_train_sampler(train_dataset)


def build_trainer(
    model: GRUForSequenceClassification,
    training_args: GRUTrainingArguments,
    data: PreparedData,
    problem_type: str,
    trainer_class: type[GRUTrainer] = GRUTrainer,
    **trainer_kwargs,
) -> GRUTrainer:
    """Trainer with GRU defaults filled in: early stopping, dynamic padding, metrics by problem type."""
    callbacks = []
    patience = training_args.early_stopping_patience
    if patience and training_args.eval_strategy != "no" and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    options = dict(
        model=model,
        args=training_args,
        train_dataset=data.tokenized["train"],
        eval_dataset=data.tokenized["validation"],
        data_collator=build_data_collator(data.tokenizer),
        processing_class=data.tokenizer,
        compute_metrics=build_compute_metrics(problem_type),
        callbacks=callbacks,
    )
    return trainer_class(**{**options, **trainer_kwargs})


def train_and_evaluate(run: Run, trainer: GRUTrainer) -> tuple[dict[str, float], tuple | None]:
    """Train (resuming when asked), save the best model, evaluate; returns (metrics, (labels, logits) on the final
    split). Shared by the engines built on the `Trainer`."""
    started = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    metrics = dict(train_result.metrics)
    metrics["train_wall_seconds"] = round(time.perf_counter() - started, 2)
    metrics["train_samples"] = len(run.data.tokenized["train"])
    trainer.save_model()  # the best model (load_best_model_at_end) and its tokenizer
    trainer.save_state()
    trainer.remove_callback(EarlyStoppingCallback)  # it only understands eval_* metrics
    metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    split = run.data.final_split
    prediction = trainer.predict(run.data.tokenized[split], metric_key_prefix=split)
    if split == "test":
        metrics.update(prediction.metrics)
    return metrics, (prediction.label_ids, prediction.predictions)


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: GRUTrainingArguments
) -> RunOutcome:
    """Data → tokenizer → model → Trainer → best model, tokenizer, all_results.json, plots and card in output_dir."""
    run = start_run(model_args, data_args, training_args)
    trainer = build_trainer(run.model, training_args, run.data, run.problem_type)
    metrics, predictions = train_and_evaluate(run, trainer)
    return finish_trainer_run(run, trainer, metrics, predictions)


def finish_trainer_run(
    run: Run, trainer: GRUTrainer, metrics: dict[str, float], predictions: tuple | None, **summary_fields
) -> RunOutcome:
    """`finish_run` with what a `Trainer` holds: its (best) model, log and process rank.

    Every process has saved by now and rank 0 alone writes the rest, so the process group closes here, as the
    accelerate loop's does: a worker that exits with a gloo group still open can abort in its C++ teardown
    ("terminate called without an active exception") and fail the whole launch.
    """
    is_main_process = trainer.is_world_process_zero()
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return finish_run(
        run,
        model=trainer.model,
        metrics=metrics,
        log_history=trainer.state.log_history,
        predictions=predictions,
        is_main_process=is_main_process,
        summary_fields=summary_fields or None,
    )
