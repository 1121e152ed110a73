"""Shared fixtures: where the real benchmark data lives (a skip when it is absent), one intra-op thread."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from fixtures.bulk import bulk_model, ray_cluster  # noqa: F401  (fixtures: a tiny exported model, a local Ray)
from fixtures.hub_server import local_hub  # noqa: F401  (fixture: a local Hub-compatible server)

from hf_gru import run_directory

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# What a finished training run leaves in its output directory, all of which a Hub push uploads.
TRAINED_MODEL_FILES = frozenset(
    {
        run_directory.CARD_FILE,
        run_directory.CONFIG_FILE,
        run_directory.WEIGHTS_FILE,
        "configuration_gru.py",  # the model's own code, saved beside it (remote code)
        "modeling_gru.py",
        "modeling_gru_layers.py",
        run_directory.TOKENIZER_VOCAB_FILES[0],  # tokenizer.json
        run_directory.TOKENIZER_CONFIG_FILE,
        run_directory.RESULTS_FILE,
        run_directory.TRAINING_SUMMARY_FILE,
        run_directory.TRAINING_CURVES_FILE,
        run_directory.CONFUSION_MATRIX_FILE,
    }
)

SHARED_DATA = Path(os.environ.get("HF_GRU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def shared_dataset(name: str) -> Path:
    """Path of `../shared/data/<name>`, or a skip naming what is missing and how to point at it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {path} is absent; set HF_GRU_SHARED_DATA to the folder holding '{name}'")
    return path


@pytest.fixture(scope="module")
def private_datasets_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep a module's Arrow caches out of the user's cache (and fresh for the cache-reuse tests)."""
    import datasets

    saved = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = tmp_path_factory.mktemp("hf_datasets_cache")
    yield
    datasets.config.HF_DATASETS_CACHE = saved


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, then the count it had. On a loaded 2-core machine two OpenMP threads make a
    small GRU ~100x slower, and a multi-threaded matmul may split (and round) the sums of each shape differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
