"""Shared fixtures: where the real benchmark data lives, and a skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("HF_GRU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of `../shared/data/<name>`, or a skip naming what is missing and how to point at it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is absent; set HF_GRU_SHARED_DATA to the folder holding '{name}'")
    return path


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    """Tests never reach the real Hub; a test that needs a Hub starts the local one."""
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
