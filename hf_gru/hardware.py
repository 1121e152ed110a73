"""The hardware a run or a prediction uses, and the checks made on it before any data is read."""

from __future__ import annotations

import os

import torch

PRECISIONS = ("no", "fp16", "bf16")


def device_type(use_cpu: bool = False) -> str:
    """The device type training will run on ("cpu", "cuda", ...), decided before any distributed state exists."""
    if use_cpu or os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes"):
        return "cpu"
    if hasattr(torch, "accelerator"):  # torch >= 2.6: CUDA, XPU, MPS, ...
        accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return accelerator.type if accelerator is not None else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_device() -> torch.device:
    """Where inference runs when no device is named: the accelerator training would use, else the CPU."""
    return torch.device(device_type())


def check_mixed_precision(precision: str, device: str) -> None:
    """Refuse, before any data is read, a precision the hardware cannot run.

    Without this, accelerate quietly trains fp16 on a CPU in fp32 (no autocast, while the model card says fp16), and
    TrainingArguments answers bf16 on a CPU with a message about GPUs. One check for every engine.
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


def check_same_on_all_ranks(value: str, what: str) -> None:
    """Raise on every rank if the processes of a distributed run disagree on `value` (e.g. a tokenizer's hash)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    values: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    if len(set(values)) > 1:
        raise RuntimeError(f"the processes of this run disagree on {what} ({', '.join(map(str, values))})")
