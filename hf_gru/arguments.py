"""What a run is asked to do: the argument dataclasses, model presets and their parsing, for every engine.

`hf-gru train`, `scripts/train.py`, `scripts/train_accelerate.py`, distillation and the tests all read these
dataclasses; every default lives here or in `GRUConfig`, nowhere else.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from transformers import HfArgumentParser, TrainingArguments

from .hardware import PRECISIONS, check_mixed_precision, device_type

logger = logging.getLogger(__name__)

# Named model sizes. A preset sets the architecture; any field given explicitly overrides it.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(embedding_size=128, hidden_size=128, num_layers=1, pooling="mean"),
    "base": dict(embedding_size=256, hidden_size=256, num_layers=1, pooling="mean"),
    "large": dict(embedding_size=300, hidden_size=384, num_layers=2, pooling="mean"),
    # hf-gru distill's default: sized to serve ~20x faster than MiniLM-L6 on a CPU (measured, README)
    "student": dict(embedding_size=128, hidden_size=96, num_layers=1, pooling="mean"),
}
# How every preset reads a long document (README "Long documents"): the GRU in windows of 256 tokens and the mean
# and max of the token embeddings over the whole text beside it. Texts are read up to DataArguments.max_length. The
# TF-IDF bag of tokens (`--bag_of_tokens auto`) is added where the training texts are documents: see
# `resolve_bag_of_tokens`.
WHOLE_DOCUMENT_READING: dict[str, Any] = dict(chunk_size=256, embedding_pooling="mean_max")
# `--bag_of_tokens auto` turns the bag on when the median training text has at least this many tokens. Measured
# (README "Long documents"): it lifts 20 Newsgroups 82.4 -> 85.5 and BBC News 97.0 -> 97.6, and costs TREC 0.9 points
# (92.3 -> 91.3). The shared sets fall far from the line on both sides: documents have medians of 233-422 tokens,
# sentences, questions, headlines and short reviews 13-55.
BAG_OF_TOKENS_MEDIAN_TOKENS = 128
for _preset in MODEL_PRESETS.values():
    _preset.update(WHOLE_DOCUMENT_READING)
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
    "embedding_init_std",
    "chunk_size",
    "embedding_pooling",
    "bag_of_tokens",
    "bag_bigram_buckets",
)
_HAS_TENSORBOARD = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
_TENSORBOARD = "tensorboard" if _HAS_TENSORBOARD else "none"

# The metric that picks the best checkpoint, and whether greater is better, by the model's problem type.
BEST_METRIC = {
    "single_label_classification": ("accuracy", True),
    "multi_label_classification": ("f1_micro", True),
    "regression": ("mse", False),
}


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
    embedding_init_std: float | None = field(
        default=None, metadata={"help": "std of the normal init of an embedding table learnt from scratch"}
    )
    chunk_size: int | None = field(
        default=None,
        metadata={"help": "the GRU reads texts longer than this many tokens as windows of this size (0: never)"},
    )
    embedding_pooling: str | None = field(
        default=None, metadata={"help": "mean_max (mean and max of the token embeddings beside the GRU) or none"}
    )
    bag_of_tokens: str = field(
        default="auto",
        metadata={
            "help": "add a linear classifier over the text's TF-IDF bag of tokens to the logits: auto (when the "
            f"median training text has at least {BAG_OF_TOKENS_MEDIAN_TOKENS} tokens: documents), true or false"
        },
    )
    bag_bigram_buckets: int | None = field(
        default=None,
        metadata={
            "help": "with the bag of tokens, also count pairs of consecutive tokens hashed into this many "
            "columns (default 0: single tokens)"
        },
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "path or Hub id of an existing tokenizer; default: train one on the data"}
    )
    init_embeddings: str | None = field(
        default="auto",
        metadata={
            "help": "the pretrained start: 'auto' (all-MiniLM-L6-v2 for English, multilingual-e5-small otherwise; "
            "from scratch with a warning when neither can be had), 'none' (from scratch: a tokenizer trained on "
            "the data), or a transformers model (path or Hub id) whose tokenizer and input embeddings (reduced to "
            "embedding_size) the GRU starts from"
        },
    )
    prune_vocabulary: str = field(
        default="auto",
        metadata={
            "help": "keep only the encoder's tokens the training texts use: auto (when it has over 100k), yes or no"
        },
    )
    tokenizer_algorithm: str = field(default="wordpiece", metadata={"help": "wordpiece, bpe or unigram"})
    vocab_size: int = field(default=30_000, metadata={"help": "vocabulary size of a trained tokenizer"})
    min_frequency: int = field(default=2, metadata={"help": "minimum token frequency of a trained tokenizer"})
    lowercase: bool = field(default=True, metadata={"help": "lowercase text in a trained tokenizer"})

    def __post_init__(self) -> None:
        if self.preset not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {self.preset!r}; known presets: {', '.join(MODEL_PRESETS)}")
        if self.init_embeddings is not None and self.init_embeddings.lower() in ("auto", "none", ""):
            self.init_embeddings = self.init_embeddings.lower() or "none"
        setting = str(self.bag_of_tokens).lower()
        self.bag_of_tokens = {"yes": "true", "1": "true", "no": "false", "0": "false"}.get(setting, setting)
        if self.bag_of_tokens not in ("auto", "true", "false"):
            raise ValueError(f"--bag_of_tokens {self.bag_of_tokens!r}: choose auto, true or false")
        if self.prune_vocabulary not in ("auto", "yes", "no"):
            raise ValueError(f"--prune_vocabulary {self.prune_vocabulary!r}: choose auto, yes or no")
        if self.named_encoder() and (self.tokenizer or self.model_name_or_path):
            raise ValueError(
                "--init_embeddings brings its own tokenizer (embedding rows follow its vocabulary); drop --tokenizer "
                "and --model_name_or_path, or use --init_embeddings none"
            )

    def named_encoder(self) -> str | None:
        """The encoder asked for by name or path (not auto, not none)."""
        return None if self.init_embeddings in (None, "auto", "none") else self.init_embeddings

    def architecture(self) -> dict[str, Any]:
        """The preset with explicit overrides applied."""
        values = dict(MODEL_PRESETS[self.preset])
        values.update({name: getattr(self, name) for name in ARCHITECTURE_FIELDS if getattr(self, name) is not None})
        if values.get("bag_of_tokens") == "auto":
            del values["bag_of_tokens"]  # decided from the training texts (`resolve_bag_of_tokens`); off until then
        elif "bag_of_tokens" in values:
            values["bag_of_tokens"] = values["bag_of_tokens"] == "true"
        if values.get("chunk_size") == 0:
            values["chunk_size"] = None  # 0 on the command line: read every text as one sequence
        return values

    def resolve_bag_of_tokens(self, token_counts: list[int]) -> bool:
        """`auto` decided from the training texts' token counts (and fixed on the arguments); true/false as given."""
        if self.bag_of_tokens == "auto":
            median = statistics.median(token_counts) if token_counts else 0
            on = median >= BAG_OF_TOKENS_MEDIAN_TOKENS
            logger.info(
                "TF-IDF bag of tokens %s: the median training text has %g tokens (auto: on from %d)",
                "on" if on else "off",
                median,
                BAG_OF_TOKENS_MEDIAN_TOKENS,
            )
            self.bag_of_tokens = "true" if on else "false"
        return self.bag_of_tokens == "true"

    def tokenizer_source(self) -> str | None:
        """An explicitly given tokenizer (a saved model's or --tokenizer); None: an encoder's, or trained on the
        data (the run skeleton's `Start` decides)."""
        return self.model_name_or_path or self.tokenizer


@dataclass
class DataArguments:
    """What to train on."""

    dataset: str = field(
        default="demo",
        metadata={"help": "a data directory, a data file, a folder-per-class directory, a Hub dataset id, or 'demo'"},
    )
    text_column: str | None = field(default=None, metadata={"help": "text column (default: detected)"})
    label_column: str | None = field(default=None, metadata={"help": "label column (default: detected)"})
    max_length: int | None = field(
        default=2048, metadata={"help": "read at most this many tokens of a text (the rest is cut)"}
    )
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
    embedding_learning_rate_multiplier: float = field(
        default=1.0,
        metadata={
            "help": "the embedding table's learning rate / learning_rate (10 moved SST-2 and MR up about 1 point "
            "from scratch and TREC and SST-5 down: BENCHMARKS.md)"
        },
    )
    bag_learning_rate_multiplier: float = field(
        default=10.0,
        metadata={"help": "the TF-IDF bag's learning rate / learning_rate (bag_of_tokens: a linear model from zero)"},
    )
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


def parse_training_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, GRUTrainingArguments]:
    """The one parser for `hf-gru train` and `scripts/train.py` (`--epochs` is short for `--num_train_epochs`)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments))
    return parser.parse_args_into_dataclasses(args=expand_aliases(argv or []))


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


def expand_aliases(argv: list[str]) -> list[str]:
    """`--epochs` is short for `--num_train_epochs`, on every entry point."""
    argv = ["--num_train_epochs" if a == "--epochs" else a for a in argv]
    return [re.sub(r"^--epochs=", "--num_train_epochs=", a) for a in argv]


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
