"""The run directory: every output file's name, and the one way a run prepares, resumes, fills and finishes it.

This is the only module that spells an output file name; everything else imports the names from here. It imports
no other hf_gru module, so every module (tokenizer, model card, Hub, engines) can import these names at its top without
a circle. The card and plots of a finished run are written by `hf_gru.model_card`; the push is the skeleton's
(`hf_gru.run`), after the directory is committed.

Safety: nothing the user had is destroyed before a run has proven it can succeed. `plan_run_directory` only
validates; the engine opens the directory after the data and model are built; a run that replaces a non-empty
directory (`--overwrite_output_dir`) is built in a staging sibling and swapped in by `RunDirectory.commit` only
when it finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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
ONNX_SOURCE_FILE = "source.json"  # in an export folder: sha256 of the weights and config it was exported from
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
    resuming: bool = False  # the work folder holds the checkpoints of a killed run: keep them

    @property
    def staged(self) -> bool:
        return self.work != self.final

    def open(self) -> None:
        """Create the working directory (main process only), after everything else has been validated."""
        if self.staged:
            if self.work.exists() and not self.resuming:  # a killed earlier replacement: ours (marked), so it may go
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True, exist_ok=True)
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


def export_staging_dir(output_dir: Path) -> Path:
    """Where `hf-gru export` builds its files: one fixed name, so the next export clears what a killed one left."""
    return output_dir.with_name(f".{output_dir.name}.hf_gru-export-staging")


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
        return RunDirectory(final=output_dir, work=staging_dir(output_dir) if staged else output_dir, resuming=True)
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


# ------------------------------------------------------------------------------------------- the ONNX export


def export_source(model_dir: str | Path) -> dict[str, str]:
    """sha256 of the files an ONNX export is made from (weights, config): recorded in the export as
    `ONNX_SOURCE_FILE`, compared before the export is used. File times cannot tell: `cp -p`, `rsync -t`,
    `git checkout` or an unpacked archive put older weights in place with an older time."""
    model_dir = Path(model_dir)
    return {name: _sha256(model_dir / name) for name in (WEIGHTS_FILE, CONFIG_FILE)}


def export_is_fresh(model_dir: str | Path, export_dir: str | Path) -> bool:
    """Whether `export_dir` was exported from `model_dir`'s current weights and config (False when it records no
    source: an export older than the fingerprint, or one interrupted while moving into place)."""
    try:
        recorded = json.loads((Path(export_dir) / ONNX_SOURCE_FILE).read_text(encoding="utf-8"))
        return recorded == export_source(model_dir)
    except (OSError, ValueError):
        return False


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
