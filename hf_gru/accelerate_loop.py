"""A plain `accelerate` training loop: the `Trainer`'s recipe written out, for any hardware and any number of processes.

`scripts/train_accelerate.py` and the tests call `run_accelerate_training`. It reads the same argument dataclasses as
`hf-gru train` (plus `LoopArguments`), builds the same model from the same data, collator and metric modules, follows
the Trainer's defaults (AdamW without decay on biases, linear warmup and decay, clipping, the best checkpoint kept,
early stopping) and leaves the same output directory: model, tokenizer, `all_results.json`, plots and model card.
Only the main process writes files, apart from each process's own RNG state inside a checkpoint.

Where this differs from the Trainer on purpose:
- length-grouped batches are grouped over the global batch (all processes, all accumulation steps), so a run on N
  processes sees the very batches of a one-process run with the same global batch;
- the sampler's generator is reseeded with `seed + epoch` at each epoch, so a run resumed mid-epoch replays the
  epoch's order exactly and skips what it had done (`skip_first_batches`);
- `--streaming` trains on a `datasets` iterable dataset sharded by process (`split_dataset_by_node`), with
  `--max_steps`: the label set and a trained tokenizer come from the first `--head_rows` rows.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from datasets import ClassLabel, Dataset, DatasetDict, Features, IterableDataset, Value
from datasets.distributed import split_dataset_by_node
from safetensors.torch import load_file
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
from transformers import HfArgumentParser, Trainer, TrainerState, TrainingArguments, get_scheduler, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler

from .data import (
    PreparedData,
    build_data_collator,
    has_split,
    label_names_of,
    load_streaming_dataset,
    open_training_stream,
    resolve_max_length,
    tokenize_datasets,
    tokenize_streaming,
    tokenizer_fingerprint,
)
from .metrics import build_compute_metrics
from .modeling_gru import GRUForSequenceClassification
from .tokenization import load_tokenizer, train_tokenizer
from .training import (
    PRECISIONS,
    DataArguments,
    GRUTrainingArguments,
    ModelArguments,
    apply_best_metric_default,
    build_model,
    check_mixed_precision,
    check_same_on_all_ranks,
    device_type,
    final_split,
    parse_training_arguments,
    prepare_output_dir,
    prepare_training_data,
    push_trained_model,
    resolve_checkpoint,
    save_results,
    write_outputs,
)

logger = logging.getLogger(__name__)

LOOP_STATE_FILE = "loop_state.json"
WEIGHTS_IN_CHECKPOINT = "model.safetensors"  # what `Accelerator.save_state` names the first model's weights


@dataclass
class LoopArguments:
    """Options of the accelerate loop that the Trainer's arguments have no word for."""

    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16; default: --bf16/--fp16, else `accelerate launch --mixed_precision` or the "
            "accelerate config, else no. fp16 needs a GPU (refused on CPU); bf16 needs Ampere or newer, or a CPU"
        },
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "stream the training split instead of loading it (corpora larger than memory); needs --max_steps"
        },
    )
    label_set: str | None = field(
        default=None,
        metadata={"help": "streaming: the label names in id order, comma-separated (default: read from --head_rows)"},
    )
    head_rows: int = field(
        default=10_000,
        metadata={
            "help": "streaming: training rows read up front to fix the label set and train the tokenizer; without a "
            "validation split, validation_fraction of them become the validation set and training skips them"
        },
    )
    shuffle_buffer: int = field(default=10_000, metadata={"help": "streaming: shuffle buffer size, in rows"})

    def __post_init__(self) -> None:
        if self.mixed_precision is not None and self.mixed_precision not in PRECISIONS:
            raise ValueError(f"--mixed_precision {self.mixed_precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.head_rows < 1 or self.shuffle_buffer < 1:
            raise ValueError("--head_rows and --shuffle_buffer must be positive")


def parse_accelerate_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, GRUTrainingArguments, LoopArguments]:
    """`parse_training_arguments` (the options of `hf-gru train`) plus the loop's own `LoopArguments`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    loop_parser = HfArgumentParser(LoopArguments, allow_abbrev=False, add_help=False)
    if "-h" in argv or "--help" in argv:
        print(loop_parser.format_help().replace("usage:", "accelerate loop options; usage:", 1))
    loop_args, rest = loop_parser.parse_known_args(argv)
    return (*parse_training_arguments(rest), LoopArguments(**vars(loop_args)))


def resolve_precision(loop_args: LoopArguments, training_args: TrainingArguments) -> str:
    """The precision from --mixed_precision, --bf16/--fp16 or accelerate's launcher/config, checked for the device."""
    flag = "fp16" if training_args.fp16 else "bf16" if training_args.bf16 else None
    if loop_args.mixed_precision and flag and loop_args.mixed_precision != flag:
        raise ValueError(f"--mixed_precision {loop_args.mixed_precision} contradicts --{flag}; give one of them")
    precision = loop_args.mixed_precision or flag or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    check_mixed_precision(precision, device_type(training_args.use_cpu))
    return precision


@dataclass
class LoopState:
    """Where training stands, saved in every checkpoint beside accelerate's own state (`loop_state.json`)."""

    global_step: int = 0  # optimizer steps
    epoch: int = 0  # epochs (streaming: passes over the stream) completed
    batches_in_epoch: int = 0  # batches this process consumed in the current epoch
    best_metric: float | None = None
    best_step: int | None = None
    best_checkpoint: str | None = None  # folder name, relative to the checkpoint's parent
    patience_counter: int = 0
    loss_sum: float = 0.0  # sum of the global mean loss of every batch, for train_loss
    loss_count: int = 0
    samples_seen: int = 0  # all processes
    tokens_seen: int = 0  # real (unpadded) tokens, all processes
    log_history: list[dict[str, float]] = field(default_factory=list)

    def save(self, directory: Path) -> None:
        (directory / LOOP_STATE_FILE).write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> LoopState:
        path = directory / LOOP_STATE_FILE
        if not path.is_file():
            raise ValueError(
                f"--resume_from_checkpoint {directory} was not written by the accelerate loop (no {path.name})"
            )
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class LoopOutcome:
    output_dir: Path
    metrics: dict[str, float]
    data: PreparedData
    log_history: list[dict[str, float]]
    is_main_process: bool


# ------------------------------------------------------------------------------------------------------ streaming


def _materialize(stream: IterableDataset) -> Dataset:
    """A (small) validation or test stream as an in-memory Dataset, so evaluation is exact under any process count."""
    return Dataset.from_list(list(stream), features=stream.features)


def prepare_streaming_data(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    loop_args: LoopArguments,
    tokenizer_source: str | None,
) -> tuple[PreparedData, IterableDataset]:
    """(evaluation data in memory, the tokenized training stream of this process).

    The label set cannot come from a full pass: it is `--label_set`, else the source's ClassLabel names, else the
    labels of the first `--head_rows` rows (a label first seen later raises while training, naming it). The same
    rows train the tokenizer. Validation and test splits are read into memory; without a validation split it is
    carved from the head rows, which training then skips.
    """
    reference = data_args.dataset
    cleaned, source_names = open_training_stream(
        reference, text_column=data_args.text_column, label_column=data_args.label_column, seed=training_args.seed
    )
    head_rows = list(cleaned.take(loop_args.head_rows))
    if not head_rows:
        raise ValueError(f"the training split of {reference!r} has no usable rows (non-empty text and a label)")
    head = Dataset.from_list(head_rows, features=Features({"text": Value("string"), "label": Value("string")}))
    if loop_args.label_set:
        names = tuple(name.strip() for name in loop_args.label_set.split(",") if name.strip())
    else:
        names = label_names_of(head, source_names)
        logger.info("streaming: label set %s, read from the first %d rows", ", ".join(names), len(head_rows))
    label2id = {name: i for i, name in enumerate(names)}
    features = Features({"text": Value("string"), "label": ClassLabel(names=list(names))})

    def load(split: str) -> IterableDataset:
        return load_streaming_dataset(
            reference,
            split=split,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            label2id=label2id,
        )

    train_stream = load("train")
    unseen = sorted({row["label"] for row in head_rows} - set(names))
    if unseen:
        raise ValueError(f"--label_set {loop_args.label_set!r} lacks labels found in the data: {', '.join(unseen)}")
    head_encoded = Dataset.from_list(
        [{"text": r["text"], "label": label2id[r["label"]]} for r in head_rows], features=features
    )
    raw: dict[str, Dataset] = {}
    if has_split(reference, "validation"):
        raw["validation"] = _materialize(load("validation"))
        raw["train"] = head_encoded
    else:
        held_out = max(1, round(len(head_rows) * data_args.validation_fraction))
        if held_out >= len(head_rows):
            raise ValueError(f"--head_rows {loop_args.head_rows} is too few to carve a validation set from")
        logger.info("streaming: no validation split; the first %d training rows are the validation set", held_out)
        raw["validation"], raw["train"] = (
            head_encoded.select(range(held_out)),
            head_encoded.select(range(held_out, len(head_encoded))),
        )
        train_stream = train_stream.skip(held_out)
    if has_split(reference, "test"):
        raw["test"] = _materialize(load("test"))

    if tokenizer_source:
        tokenizer = load_tokenizer(tokenizer_source)
    else:
        tokenizer = train_tokenizer(
            iter(raw["train"]["text"]),
            algorithm=model_args.tokenizer_algorithm,
            vocab_size=model_args.vocab_size,
            min_frequency=model_args.min_frequency,
            lowercase=model_args.lowercase,
        )
    tokenizer.model_max_length = resolve_max_length(tokenizer, data_args.max_length)
    check_same_on_all_ranks(tokenizer_fingerprint(tokenizer), "the tokenizer")

    evaluation = DatasetDict({split: ds for split, ds in raw.items() if split != "train"})
    data = PreparedData(
        raw=DatasetDict({s: raw[s] for s in ("train", "validation", "test") if s in raw}),
        tokenized=tokenize_datasets(evaluation, tokenizer, max_length=data_args.max_length),
        tokenizer=tokenizer,
        id2label=dict(enumerate(names)),
        label2id=label2id,
        num_labels=len(names),
        reference=str(reference),
    )
    if data_args.max_train_samples is not None:
        train_stream = train_stream.take(data_args.max_train_samples)
    stream = tokenize_streaming(
        train_stream.shuffle(seed=training_args.seed, buffer_size=loop_args.shuffle_buffer),
        tokenizer,
        max_length=data_args.max_length,
    )
    return data, split_dataset_by_node(stream, rank=training_args.process_index, world_size=training_args.world_size)


# ------------------------------------------------------------------------------------------------------- helpers


def _steps(value: float, total: int) -> int:
    """`logging_steps`/`eval_steps`/`save_steps`: a count, or a share of all optimizer steps when below 1."""
    return max(1, math.ceil(total * value)) if value < 1 else int(value)


def _train_sampler(
    dataset: Dataset, training_args: TrainingArguments, global_batch: int, generator: torch.Generator
) -> torch.utils.data.Sampler:
    strategy = training_args.train_sampling_strategy
    if strategy == "group_by_length" and "length" in dataset.column_names:
        return LengthGroupedSampler(global_batch, lengths=list(dataset["length"]), generator=generator)
    if strategy == "sequential":
        return SequentialSampler(dataset)
    return RandomSampler(dataset, generator=generator)


def _optimizer(model: GRUForSequenceClassification, training_args: TrainingArguments) -> torch.optim.Optimizer:
    """The Trainer's optimizer: its class and options from the arguments, no weight decay on biases and norms."""
    decay = set(Trainer.get_decay_parameter_names(None, model))  # uses no Trainer state: the rule is all we take
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay and p.requires_grad]},
        {"params": [p for n, p in model.named_parameters() if n not in decay and p.requires_grad]},
    ]
    groups[0]["weight_decay"], groups[1]["weight_decay"] = training_args.weight_decay, 0.0
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, model)
    return optimizer_cls(groups, **optimizer_kwargs)


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


# ---------------------------------------------------------------------------------------------------- the loop


def run_accelerate_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: GRUTrainingArguments,
    loop_args: LoopArguments | None = None,
    step_callback: Callable[[LoopState], None] | None = None,
) -> LoopOutcome:
    """Data → tokenizer → model → accelerate loop → best model, tokenizer, all_results.json, plots and card.

    `step_callback(state)` runs after every optimizer step on every process (benchmarks time steps with it).
    """
    loop_args = loop_args or LoopArguments()
    if not training_args.output_dir:
        raise ValueError("--output_dir is required: the directory that receives the trained model")
    if loop_args.streaming and training_args.max_steps <= 0:
        raise ValueError(
            "--streaming needs --max_steps N: a stream has no length, so neither the number of optimizer steps nor "
            "the learning-rate schedule can be derived from --num_train_epochs"
        )
    precision = resolve_precision(loop_args, training_args)
    training_args.fp16, training_args.bf16 = precision == "fp16", precision == "bf16"  # what the model card says
    if training_args.push_to_hub:
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME: the repository to create or update")
        from .hub import check_can_push

        check_can_push(training_args.hub_model_id, token=training_args.hub_token)  # fail before training, not after

    output_dir = Path(training_args.output_dir)
    trackers = [name for name in training_args.report_to if name == "tensorboard"]
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=training_args.gradient_accumulation_steps,
        cpu=training_args.use_cpu,
        step_scheduler_with_optimizer=False,  # stepped by the loop, once per optimizer step that was not skipped
        log_with=trackers or None,
        project_dir=str(output_dir / "runs"),
    )
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    with accelerator.main_process_first():  # the others wait until the directory is checked (and emptied if asked)
        if accelerator.is_main_process:
            prepare_output_dir(output_dir, overwrite=training_args.overwrite_output_dir, resuming=bool(checkpoint))
    set_seed(training_args.seed)
    logger.info(
        "accelerate: %s, %d process(es), precision %s", accelerator.device, accelerator.num_processes, precision
    )

    # A resumed run must read its texts with the very tokenizer it started with, not a freshly trained one.
    tokenizer_source = checkpoint or model_args.model_name_or_path or model_args.tokenizer
    if loop_args.streaming:
        data, stream = prepare_streaming_data(model_args, data_args, training_args, loop_args, tokenizer_source)
    else:
        data, stream = prepare_training_data(model_args, data_args, training_args, tokenizer_source), None
    if trackers:
        accelerator.init_trackers(output_dir.name)
    loop = _Loop(accelerator, build_model(model_args, data.tokenizer, data.id2label), data, stream, training_args)
    loop.step_callback = step_callback
    if checkpoint is not None:
        loop.load(Path(checkpoint))
    loop.train()

    metrics = loop.train_metrics()
    eval_metrics, eval_logits, eval_labels = loop.evaluate("validation", "eval")
    metrics.update(eval_metrics)
    split = final_split(data)
    logits, labels = eval_logits, eval_labels
    if split == "test":
        test_metrics, logits, labels = loop.evaluate("test", "test")
        metrics.update(test_metrics)
    loop.save_final(output_dir)
    if accelerator.is_main_process:
        save_results(output_dir, metrics)
        write_outputs(
            output_dir,
            model=accelerator.unwrap_model(loop.model),
            data=data,
            model_args=model_args,
            data_args=data_args,
            training_args=training_args,
            log_history=loop.state.log_history,
            confusion=(labels, logits.argmax(-1)) if loop.problem_type == "single_label_classification" else None,
        )
        if stream is not None:
            _record_streamed_size(output_dir, loop.state.samples_seen)
        if training_args.push_to_hub:
            push_trained_model(output_dir, training_args)
    logger.info(
        "rank %d/%d finished: %d optimizer steps, tokenizer %s",
        accelerator.process_index,
        accelerator.num_processes,
        loop.state.global_step,
        tokenizer_fingerprint(data.tokenizer)[:16],
    )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return LoopOutcome(output_dir, metrics, data, loop.state.log_history, accelerator.is_main_process)


class _Loop:
    """The training loop's parts: prepared objects, the schedule of logs, evaluations and checkpoints, its state."""

    def __init__(
        self,
        accelerator: Accelerator,
        model: GRUForSequenceClassification,
        data: PreparedData,
        stream: IterableDataset | None,
        args: GRUTrainingArguments,
    ) -> None:
        self.accelerator, self.data, self.stream, self.args = accelerator, data, stream, args
        self.output_dir = Path(args.output_dir)
        self.problem_type = apply_best_metric_default(model, args)
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

    # ------------------------------------------------------------------------------------------ checkpoints

    def load(self, checkpoint: Path) -> None:
        self.accelerator.load_state(str(checkpoint))
        self.state = LoopState.load(checkpoint)
        self.best_weights = (
            _load_best_weights(checkpoint.parent, self.state) if self.args.load_best_model_at_end else None
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
        name = f"checkpoint-{self.state.global_step}"
        if self.state.best_step == self.state.global_step:
            self.state.best_checkpoint = name
        staging = self.output_dir / f"tmp-{name}"  # renamed once complete: a killed run leaves no half checkpoint
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
            _rotate_checkpoints(self.output_dir, self.args.save_total_limit, self.state.best_checkpoint)
        self.accelerator.wait_for_everyone()

    def save_final(self, output_dir: Path) -> None:
        """Model, tokenizer, training_args.bin and trainer_state.json, as `Trainer.save_model()` and `save_state()`."""
        state_dict = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, state_dict=state_dict)
            self.data.tokenizer.save_pretrained(output_dir)
            torch.save(self.args, output_dir / "training_args.bin")
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
            ).save_to_json(str(output_dir / "trainer_state.json"))
        self.accelerator.wait_for_everyone()

    # ----------------------------------------------------------------------------------------- evaluation

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

    # ------------------------------------------------------------------------------------------- training

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


def _load_best_weights(checkpoints: Path, state: LoopState) -> dict[str, torch.Tensor] | None:
    """The best checkpoint's weights on resume, so load_best_model_at_end still ends on the best model."""
    if state.best_checkpoint is None:
        return None
    path = checkpoints / state.best_checkpoint / WEIGHTS_IN_CHECKPOINT
    if not path.is_file():
        logger.warning("the best checkpoint %s is gone: the run will end with its best model since resuming", path)
        return None
    weights = load_file(str(path))
    consume_prefix_in_state_dict_if_present(weights, "module.")  # saved from a DDP-wrapped model
    return weights


def _rotate_checkpoints(output_dir: Path, limit: int | None, best: str | None) -> None:
    """Keep the newest `limit` checkpoints and the best one, like the Trainer's `save_total_limit`."""
    if not limit:
        return
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=_checkpoint_step)
    keep = {c.name for c in checkpoints[-limit:]} | {best}
    for path in checkpoints:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _record_streamed_size(output_dir: Path, samples_seen: int) -> None:
    """A streamed train split has no size: the card reports the training examples seen instead of the head rows."""
    from .model_card import TrainingSummary, write_model_card

    summary = TrainingSummary.load(output_dir)
    summary.split_sizes["train"] = samples_seen
    summary.save(output_dir)
    write_model_card(output_dir)
