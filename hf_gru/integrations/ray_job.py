"""`hf-gru predict --engine ray`: a sharded corpus labelled on Ray, one output shard per input shard, resumable.

The driver finds the shards, checks the model and every pending shard before anything starts, and hands the
shards to a Ray Data actor pool (`ShardLabeller`, one CPU each, the model loaded once per actor). Each actor reads a
shard exactly as `hf-gru predict` reads a file (`predict_records`), writes its output shard under a temporary name
and renames it when complete (`shards.write_shard`), and streams progress back. Outputs are written by the workers,
so the driver carries no text; on a cluster, the input and output folders must be on storage every node sees.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from . import require
from .shards import (
    Shard,
    check_manifest,
    find_shards,
    model_fingerprint,
    output_lock,
    plan_outputs,
    remove_stale_temporaries,
    write_shard,
)

logger = logging.getLogger(__name__)


@dataclass
class CorpusSummary:
    """What a run did: texts written this run, shards written / skipped (finished before) / failed, workers."""

    texts: int = 0
    seconds: float = 0.0
    shards_written: int = 0
    shards_skipped: int = 0
    workers: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (shard, error)
    output_dir: str = ""

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        line = (
            f"labelled {self.texts:,} texts in {self.seconds:.1f} s ({self.texts_per_second:,.0f} texts/s) on "
            f"{self.workers} worker(s): {self.shards_written} shard(s) written, {self.shards_skipped} already done"
        )
        if self.failed:
            line += f", {len(self.failed)} failed (first: {self.failed[0][0]}: {self.failed[0][1]})"
        return f"{line} -> {self.output_dir}"


class ShardLabeller:
    """A Ray Data actor: labels whole shards (one a call) with one model loaded at start, writing each output
    shard itself, and yields a progress row per chunk written. A shard that cannot be read is reported, not fatal:
    the others go on, and a rerun retries it."""

    def __init__(self, model: str, options: dict[str, Any]):
        from ..backends import load_backend
        from ..hub import local_model

        self.options = options
        self.classifier = load_backend(
            local_model(model), backend=options["backend"], precision=options["precision"], threads=options["threads"]
        )

    def __call__(self, batch: Any) -> Any:
        from ..predict import predict_records

        for item in batch.to_pylist():
            shard, target = Shard(**json.loads(item["shard"])), Path(item["target"])
            try:
                records = predict_records(
                    self.classifier, shard.local_path(), batch_size=self.options["batch_size"],
                    text_column=self.options["text_column"],
                )  # fmt: skip
                rows = ({"source": shard.source, **record} for record in records)
                for count in write_shard(rows, target, self.options["output_format"]):
                    yield _progress(shard, count)
                yield _progress(shard, 0, done=True)
            except Exception as error:  # one bad shard must not stop a corpus: reported at the end, retried on rerun
                logger.warning("shard %s failed: %s", shard.source, error)
                yield _progress(shard, 0, error=f"{type(error).__name__}: {error}")


def _progress(shard: Shard, texts: int, *, done: bool = False, error: str = "") -> dict[str, list[Any]]:
    return {"shard": [shard.source], "texts": [texts], "done": [done], "error": [error]}


def _quiet(dataset: Any) -> Any:
    """`dataset` with one progress row a chunk reaching the driver as it is written (not held until the shard's task
    ends, as Ray holds small outputs), and Ray Data's own bars and per-dataset log lines off: the run has one bar."""
    context = dataset.context
    context.target_max_block_size = 1  # every progress row its own block
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # also its warning that its progress bars are off
    return dataset


def label_corpus(
    model: str,
    input_reference: str,
    output_dir: str | Path,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    text_column: str | None = None,
    output_format: str = "parquet",
    batch_size: int = 64,
    backend: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> CorpusSummary:
    """Labels every shard of `input_reference` (a glob, folder or Hub dataset id) into `output_dir` on Ray.

    Shards whose output exists are skipped (finished by an earlier run), unless `overwrite`. Without
    `ray_address` a local Ray is started (and stopped) here; `"auto"` joins a running cluster; an already
    initialised Ray is used as it is. `threads` is per worker (default 1); `workers` defaults to the cluster's CPUs.
    """
    from ..backends import check_positive, load_backend
    from ..hub import local_model
    from ..predict import read_input

    ray = require("ray")
    require("ray.data")
    check_positive(workers, "--workers")
    check_positive(batch_size, "--batch-size")
    output_dir = Path(output_dir)
    shards = find_shards(input_reference)
    targets = plan_outputs(shards, output_dir, output_format, input_reference)
    model_dir = local_model(model)
    # the model and backend are checked here (one line for a missing export), before any worker starts
    chosen = load_backend(model_dir, backend=backend, precision=precision, threads=1).name
    worker_model = str(Path(model).resolve()) if Path(model).exists() else model  # the same on every node
    settings = {
        "model": worker_model, "model_sha256": model_fingerprint(model_dir), "precision": precision,
        "text_column": text_column, "output_format": output_format,
    }  # fmt: skip
    summary = CorpusSummary(output_dir=str(output_dir))
    with output_lock(output_dir):
        pending = [(shard, target) for shard, target in zip(shards, targets) if overwrite or not target.exists()]
        summary.shards_skipped = len(shards) - len(pending)
        for shard, _ in pending:  # format and text column of every local shard, before anything is written
            if shard.path is not None:
                _close(read_input(shard.path, text_column))
        check_manifest(output_dir, settings, overwrite=overwrite)
        remove_stale_temporaries(targets)
        if not pending:
            return summary
        started = _connect(ray, ray_address, workers)
        try:
            summary.workers = min(workers or _cluster_cpus(ray), len(pending))
            options = {
                "backend": chosen, "precision": precision, "threads": threads or 1, "batch_size": batch_size,
                "text_column": text_column, "output_format": output_format,
            }  # fmt: skip
            _run(worker_model, options, pending, summary, progress)
        finally:
            if started:
                ray.shutdown()
    return summary


def _run(model: str, options: dict[str, Any], pending: list, summary: CorpusSummary, progress: bool) -> None:
    import ray.data

    items = [{"shard": json.dumps(shard.to_item()), "target": str(target.resolve())} for shard, target in pending]
    shards = _quiet(ray.data.from_items(items, override_num_blocks=len(items)))
    # one shard in flight per actor: a free actor takes the next shard, so uneven shards still balance
    pool = ray.data.ActorPoolStrategy(size=summary.workers, max_tasks_in_flight_per_actor=1)
    labelled = shards.map_batches(
        ShardLabeller, fn_constructor_kwargs={"model": model, "options": options}, batch_size=1,
        batch_format="pyarrow", compute=pool, num_cpus=1,
    )  # fmt: skip
    written: dict[str, int] = {}
    started = time.perf_counter()
    with tqdm(desc="predict (ray)", unit=" texts", disable=not progress, smoothing=0.1) as bar:
        bar.set_postfix(shards=f"0/{len(pending)}")
        for row in labelled.iter_rows():
            if row["error"]:
                summary.failed.append((row["shard"], row["error"]))
            elif row["done"]:
                summary.shards_written += 1
                summary.texts += written.pop(row["shard"], 0)
                bar.set_postfix(shards=f"{summary.shards_written}/{len(pending)}")
            else:
                written[row["shard"]] = written.get(row["shard"], 0) + row["texts"]
                bar.update(row["texts"])
    summary.seconds = time.perf_counter() - started


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Joins `address` or starts a local Ray (unless one is initialised already); True when this call started it."""
    if ray.is_initialized():
        return False
    cores = os.cpu_count() or 1
    local = {} if address else {"num_cpus": max(cores, workers or 0)}  # --workers above the cores: oversubscribed
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, **local)
    except ConnectionError as error:
        raise ValueError(f"--ray-address {address}: no Ray cluster answered ({error}); start one with `ray start "
                         "--head`, or leave --ray-address out for a local Ray") from None  # fmt: skip
    return True


def _cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _close(records: Any) -> None:
    close = getattr(records, "close", None)
    if close is not None:
        close()
