"""The accelerate engine's resumable state: what a checkpoint holds beside accelerate's own, and checkpoint rotation."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from .run_directory import LOOP_STATE_FILE, WEIGHTS_FILE, list_checkpoints

logger = logging.getLogger(__name__)


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


def load_best_weights(checkpoints: Path, state: LoopState) -> dict[str, torch.Tensor] | None:
    """The best checkpoint's weights on resume, so load_best_model_at_end still ends on the best model."""
    if state.best_checkpoint is None:
        return None
    path = checkpoints / state.best_checkpoint / WEIGHTS_FILE
    if not path.is_file():
        logger.warning("the best checkpoint %s is gone: the run will end with its best model since resuming", path)
        return None
    weights = load_file(str(path))
    consume_prefix_in_state_dict_if_present(weights, "module.")  # saved from a DDP-wrapped model
    return weights


def rotate_checkpoints(output_dir: Path, limit: int | None, best: str | None) -> None:
    """Keep the newest `limit` checkpoints and the best one, like the Trainer's `save_total_limit`."""
    if not limit:
        return
    checkpoints = list_checkpoints(output_dir)
    keep = {c.name for c in checkpoints[-limit:]} | {best}
    for path in checkpoints:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
