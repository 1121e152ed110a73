"""Adapters to engines that run beside hf_gru: Ray Data (`ray.GRUPredictor`, `ray_job.label_corpus`) and datatrove
(`datatrove.GRUClassifier`).

Each is optional (the `ray` and `datatrove` extras) and imported by nothing but the CLI and users. They sit on
`hf_gru.backends` and `hf_gru.predict` (the same reading, batching and answers as `hf-gru predict`) and only add what
the engine needs: batches in its formats, shards, actors, stats.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {"ray": "ray", "ray.data": "ray", "datatrove": "datatrove"}


def require(module: str) -> ModuleType:
    """`module`, or an ImportError that names the extra to install (one line at the CLI)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module, module.split(".")[0])
        raise ImportError(f"{module} is not installed; install the {extra} extra: pip install 'hf-gru[{extra}]'") from (
            error
        )
