"""Shared by the benchmark scripts: where results live, what machine measured them, progress lines."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
TEACHERS_DIR = RESULTS_DIR / "models" / "teachers"  # one fine-tuned MiniLM teacher per dataset, for every script
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SHARED_DATA = Path(os.environ.get("HF_GRU_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on, stored beside them."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_json(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress on stdout with the time since start: a full run takes minutes."""
    print(f"[{time.perf_counter() - STARTED:7.1f} s] {message}", flush=True)
