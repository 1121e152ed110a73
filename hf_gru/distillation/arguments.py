"""What `hf-gru distill` adds to `hf-gru train`'s options: the teacher, the transfer set and the loss, checked
where they enter (a bad value is refused before anything is read or written), and their one parser."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ..arguments import DataArguments, GRUTrainingArguments, ModelArguments, expand_aliases
from ..encoders import METHODS
from ..run_directory import TEACHER_FINGERPRINT_FILE
from .augment import AugmentationSettings

LOSSES = ("mse", "kl")
# The small student learns for more epochs than the wide one did (measured on TREC: 2 epochs 91.4, 6 epochs 93.4).
DISTILL_DEFAULTS = {"num_train_epochs": 6.0, "preset": "student"}


@dataclass
class DistillationArguments:
    """What `hf-gru distill` adds to the options of `hf-gru train`."""

    teacher: str | None = field(
        default=None,
        metadata={"help": "a fine-tuned AutoModelForSequenceClassification (path or Hub id) whose labels match"},
    )
    teacher_base: str | None = field(
        default=None,
        metadata={"help": "a pretrained encoder to fine-tune on the training split first (saved in DIR/teacher)"},
    )
    teacher_epochs: float = field(default=3.0, metadata={"help": "epochs of the teacher fine-tuning"})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "learning rate of the teacher fine-tuning"})
    teacher_batch_size: int = field(default=32, metadata={"help": "batch size of the teacher fine-tuning"})
    teacher_max_length: int = field(default=128, metadata={"help": "tokens the teacher reads per window"})
    teacher_windows: str = field(
        default="1",
        metadata={"help": "windows of teacher_max_length tokens the teacher reads per text, its logits averaged over "
                  "them: 1 (the first window: best measured, as the teacher is fine-tuned on first windows; BBC News "
                  "98.9 against 97.1 for all windows), a number, or auto (as many as cover the student's max_length)"},
    )  # fmt: skip
    teacher_max_train_samples: int | None = field(
        default=None,
        metadata={"help": "fine-tune the teacher on this many training texts (seeded subset; the student still "
                  "learns from the teacher's logits on the whole transfer set)"},
    )  # fmt: skip
    teacher_save_steps: int | None = field(
        default=None,
        metadata={"help": "checkpoint the teacher every N steps instead of every epoch (it is evaluated there too, "
                  "for selection and early stopping): a killed fine-tuning resumes with --resume_from_checkpoint "
                  "last, losing at most N steps"},
    )  # fmt: skip
    teacher_freeze_embeddings: str = field(
        default="auto",
        metadata={"help": "keep the teacher's input-embedding matrix fixed while fine-tuning: auto (when it has over "
                  "100k rows, e.g. multilingual-e5-small's 250k: its dense AdamW update dominated each step), yes, no"},
    )  # fmt: skip
    labelling_batch_size: int = field(default=128, metadata={"help": "texts per teacher forward pass in labelling"})
    augment_copies: int = field(default=10, metadata={"help": "augmented copies drawn per training text (0: none)"})
    mask_probability: float = field(default=0.1, metadata={"help": "per-word masking probability (Tang et al.)"})
    replace_probability: float = field(
        default=0.1, metadata={"help": "per-word probability of a random word of the training vocabulary"}
    )
    ngram_probability: float = field(default=0.25, metadata={"help": "probability of keeping only a random n-gram"})
    augment_seed: int | None = field(
        default=None,
        metadata={"help": "seed of the augmentation (default: --seed); fix it to train several students on one "
                  "labelled transfer set"},
    )  # fmt: skip
    reuse_teacher_logits: str | None = field(
        default=None,
        metadata={"help": "the teacher_logits/ folder of an earlier run with the same teacher, training split "
                  "(a dataset with a validation split, or the same --seed) and augmentation: copied in instead of "
                  "labelling again (refused if it was made for other texts)"},
    )  # fmt: skip
    unlabeled: str | None = field(
        default=None, metadata={"help": "in-domain texts without labels for the teacher to label (a dataset or .txt)"}
    )
    distillation_loss: str = field(
        default="kl",
        metadata={"help": "kl (temperature-scaled, + gold-label CE; the measured default) or mse (on logits, Tang)"},
    )
    temperature: float = field(default=2.0, metadata={"help": "softmax temperature of the kl loss"})
    gold_weight: float = field(
        default=0.5, metadata={"help": "kl loss: weight of the cross-entropy on gold labels (training texts only)"}
    )
    embedding_init: str = field(
        default="pca", metadata={"help": "reduce the teacher's embeddings to embedding_size by pca or learned"}
    )

    def __post_init__(self) -> None:
        if bool(self.teacher) == bool(self.teacher_base):
            raise ValueError(
                "give exactly one of --teacher (a fine-tuned classifier) and --teacher_base (an encoder to fine-tune)"
            )
        if self.distillation_loss not in LOSSES:
            raise ValueError(f"--distillation_loss {self.distillation_loss!r}: choose one of {', '.join(LOSSES)}")
        if self.embedding_init not in METHODS:
            raise ValueError(f"--embedding_init {self.embedding_init!r}: choose one of {', '.join(METHODS)}")
        for name in ("teacher_max_train_samples", "teacher_save_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.teacher_windows != "auto" and not (self.teacher_windows.isdigit() and int(self.teacher_windows) > 0):
            raise ValueError(f"--teacher_windows {self.teacher_windows!r}: choose auto or a positive whole number")
        for name in ("teacher_batch_size", "teacher_max_length", "labelling_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        # A negative weight rewards the student for disagreeing (test accuracy 0.0, exit 0); NaN/inf poison the loss.
        for name, least, fix in (
            ("gold_weight", 0.0, "a finite number >= 0 (0: no gold-label term)"),
            ("temperature", None, "a finite number > 0 (1: plain softmax; default 2)"),
            ("teacher_epochs", None, "a finite number > 0"),
            ("teacher_learning_rate", None, "a finite number > 0"),
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or (value < least if least is not None else value <= 0):
                raise ValueError(f"--{name} must be {fix}, got {value}")
        if self.reuse_teacher_logits and not (Path(self.reuse_teacher_logits) / TEACHER_FINGERPRINT_FILE).is_file():
            raise ValueError(
                f"--reuse_teacher_logits {self.reuse_teacher_logits}: not a teacher_logits/ folder of `hf-gru distill` "
                f"({TEACHER_FINGERPRINT_FILE} is missing)"
            )
        AugmentationSettings(
            copies=self.augment_copies,
            mask_probability=self.mask_probability,
            replace_probability=self.replace_probability,
            ngram_probability=self.ngram_probability,
        )

    @property
    def teacher_reference(self) -> str:
        return self.teacher or self.teacher_base or ""

    def windows_for(self, student_max_length: int) -> int:
        """Windows the teacher reads per text: `auto` covers as many tokens as the student reads."""
        if self.teacher_windows == "auto":
            return max(1, math.ceil(student_max_length / self.teacher_max_length))
        return int(self.teacher_windows)


def parse_distillation_arguments(
    argv: list[str] | None = None,
) -> tuple[ModelArguments, DataArguments, GRUTrainingArguments, DistillationArguments]:
    """The one parser of `hf-gru distill` and `scripts/distill.py`: `hf-gru train`'s options plus the teacher's."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = expand_aliases(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments, DistillationArguments))
    parser.set_defaults(**DISTILL_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=argv)
