"""Labelling a large corpus: `hf-gru predict` (one process) against `hf-gru predict --engine ray` (1 and 2 workers).

The corpus: the English shared sets (sst2, mr, sst5, trec, ag_news; all splits) repeated and shuffled to 1 M texts,
and the first 250 k of them, written as Parquet shards of 62,500 texts (Ray's input) and as one Parquet file
(the local predictor's input). The model: the sst2 student `benchmarks/serve_load.py` trains (`hf-gru train --preset
student`, 1 epoch, exported to ONNX). Every system is the real command in its own process, one after another on the
same cores, writing JSON Lines with the texts (the same work); a sampler reads the memory of the command's whole
process tree (driver, Ray's processes, its workers) four times a second. 2-core rows run on both corpora, 1-core
rows on the small one. Nothing here asserts a timing: the
issue's targets are computed and reported, met or not.

    python benchmarks/bulk_predict.py            # the full run (~15 min); results/bulk_predict.json, BENCHMARKS.md
    python benchmarks/bulk_predict.py --smoke    # 20 k and 5 k texts, nothing written
    python benchmarks/bulk_predict.py --report-only
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, SHARED_DATA, log, machine, write_json

ENGLISH_SETS = ("sst2", "mr", "sst5", "trec", "ag_news")
SIZES = (1_000_000, 250_000)
SHARD_ROWS = 62_500
NODE_CORES = 16  # the node the hours-per-billion estimate assumes
NODES = (1, 8, 64)
WORK = Path(os.environ.get("HF_GRU_BULK_WORK", "/tmp/hf_gru_bulk_predict"))


# ------------------------------------------------------------------------------------------------------ corpus


def corpus_texts(total: int, seed: int = 0) -> list[str]:
    """The shared English texts, repeated to `total` and shuffled (the same order for every size)."""
    texts: list[str] = []
    for name in ENGLISH_SETS:
        for path in sorted((SHARED_DATA / name).glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                texts += [json.loads(line)["text"] for line in handle]
    repeated = [texts[i % len(texts)] for i in range(max(total, len(texts)))]
    random.Random(seed).shuffle(repeated)
    return repeated[:total]


def write_corpus(texts: list[str], folder: Path, shard_rows: int) -> dict[str, Any]:
    """`folder/shards/part-NNNN.parquet` and `folder/all.parquet` (an `id` and a `text` column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "shards").mkdir(parents=True)
    table = pa.table({"id": list(range(len(texts))), "text": texts})
    pq.write_table(table, folder / "all.parquet")
    for number, start in enumerate(range(0, len(texts), shard_rows)):
        pq.write_table(table.slice(start, shard_rows), folder / "shards" / f"part-{number:04d}.parquet")
    return {"texts": len(texts), "shards": -(-len(texts) // shard_rows), "mean_chars": round(sum(map(len, texts)) /
            len(texts), 1)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- measuring


class TreeSampler(threading.Thread):
    """Peak resident memory of a process and of everything it starts (Ray's raylet, GCS and workers included),
    and the CPU seconds the tree used (each process's last reading)."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stopping = pid, interval, threading.Event()
        self.driver_peak = self.worker_peak = self.total_peak = 0
        self.cpu: dict[int, float] = {}

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stopping.is_set():
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    times = process.cpu_times()
                    title = " ".join(process.cmdline()[:1])
                except psutil.Error:
                    continue
                total += rss
                self.cpu[process.pid] = times.user + times.system
                if process.pid == self.pid:
                    self.driver_peak = max(self.driver_peak, rss)
                elif title.startswith("ray::") and "IDLE" not in title:  # an actor (a MapWorker): the labeller
                    self.worker_peak = max(self.worker_peak, rss)
            self.total_peak = max(self.total_peak, total)
            self.stopping.wait(self.interval)

    def result(self) -> dict[str, Any]:
        mib = 1 << 20
        return {"driver_peak_mib": round(self.driver_peak / mib), "worker_peak_mib": round(self.worker_peak / mib)
                or None, "total_peak_mib": round(self.total_peak / mib),
                "cpu_seconds": round(sum(self.cpu.values()), 1)}  # fmt: skip


def run_system(key: str, argv: list[str], output: Path, texts: int) -> dict[str, Any]:
    """One command, timed end to end (start-up included), its memory sampled; its output's labels counted."""
    _remove(output)  # a Ray output folder left over would be skipped as finished
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
    stderr_path = WORK / f"{key}.stderr"
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "hf_gru.cli", *argv], stdout=subprocess.PIPE, stderr=stderr,
                                   env=env, text=True)  # fmt: skip
        sampler = TreeSampler(process.pid)
        sampler.start()
        stdout, _ = process.communicate()
        sampler.stopping.set()
    wall = time.perf_counter() - started
    sampler.join()
    if process.returncode != 0:
        tail = stderr_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{key} exited {process.returncode}:\n{tail}")
    labels = _label_counts(output)
    _remove(output)
    found = re.search(r"labelled ([\d,]+) texts in ([\d.]+) s", stdout or "")
    labelling = float(found.group(2)) if found else None
    row = {"system": key, "texts": texts, "wall_seconds": round(wall, 1), "texts_per_second": round(texts / wall, 1),
           "labelling_seconds": labelling, "labelled_texts_per_second": round(texts / labelling, 1) if labelling
           else None, "load_average_before": round(load, 2), "labels": labels, **sampler.result()}  # fmt: skip
    log(f"  {key:10s} {texts:>9,} texts  {wall:7.1f} s  {row['texts_per_second']:>8,.0f} texts/s  driver "
        f"{row['driver_peak_mib']} MiB  worker {row['worker_peak_mib']} MiB  all {row['total_peak_mib']} MiB  "
        f"cpu {row['cpu_seconds']} s  load {row['load_average_before']}")  # fmt: skip
    return row


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _label_counts(output: Path) -> dict[str, int]:
    counts: Counter = Counter()
    files = sorted(output.rglob("*.jsonl")) if output.is_dir() else [output]
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                counts[json.loads(line)["label"]] += 1
    return dict(sorted((str(k), v) for k, v in counts.items()))


def systems(model: Path, folder: Path, size_tag: str, one_core: bool) -> list[tuple[str, list[str], Path]]:
    """(key, argv, output) of each command measured on one corpus; the 1-core rows only where asked (the small
    corpus: at 1 core the large one takes 5 minutes a row, and the team's lock is shared)."""
    local_out, ray_out = WORK / f"local-{size_tag}.jsonl", WORK / f"ray-{size_tag}"
    local = ["predict", "--model", str(model), "--input", str(folder / "all.parquet"), "--output", str(local_out),
             "--overwrite"]  # fmt: skip
    ray = ["predict", "--engine", "ray", "--model", str(model), "--input", str(folder / "shards"), "--output",
           str(ray_out), "--output-format", "jsonl"]  # fmt: skip
    ones = [("local_1", [*local, "--threads", "1"], local_out), ("ray_1", [*ray, "--workers", "1"], ray_out)]
    twos = [("local_2", [*local, "--threads", "2"], local_out), ("ray_2", [*ray, "--workers", "2"], ray_out)]
    return (ones if one_core else []) + twos


# ---------------------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    from serve_load import STUDENT_DIR, ensure_student

    sizes = (20_000, 5_000) if args.smoke else SIZES
    shard_rows = 2_500 if args.smoke else SHARD_ROWS
    student = ensure_student(args.student or STUDENT_DIR)
    model = Path(args.student or STUDENT_DIR)
    WORK.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts(max(sizes))
    corpora, rows = {}, []
    for index, size in enumerate(sizes):
        folder = WORK / f"corpus-{size}"
        corpora[size] = write_corpus(texts[:size], folder, shard_rows)
        log(f"corpus of {size:,} texts: {corpora[size]['shards']} shards, {corpora[size]['mean_chars']} chars a text")
        for key, argv, output in systems(model, folder, str(size), one_core=index == 1):
            rows.append(run_system(key, argv, output, size))
        shutil.rmtree(folder, ignore_errors=True)
    return {"machine": machine(), "student": student, "sizes": list(sizes), "shard_rows": shard_rows,
            "corpora": {str(k): v for k, v in corpora.items()}, "rows": rows,
            "acceptance": acceptance(rows, sizes), "estimate": estimate(rows, sizes[0])}  # fmt: skip


def _row(rows: list[dict], system: str, texts: int) -> dict[str, Any]:
    return next(row for row in rows if row["system"] == system and row["texts"] == texts)


def acceptance(rows: list[dict], sizes: tuple[int, ...] | list[int]) -> list[dict[str, Any]]:
    """The issue's targets, from this run: Ray's overhead at equal cores (2 cores on the large corpus, 1 core on the
    small), 2 workers against 1 (small corpus), memory flat in the number of texts (peak at the large corpus against
    the small, 4x fewer texts), the same labels everywhere."""
    big, small = sizes

    def tps(system: str, texts: int = big) -> float:
        if system.endswith("_1"):
            texts = small
        return _row(rows, system, texts)["texts_per_second"]

    def growth(system: str, field: str) -> float:
        return _row(rows, system, big)[field] / _row(rows, system, small)[field]

    bars = [
        ("Ray's overhead at 1 core (small corpus): 1 - (ray, 1 worker) / (local, 1 thread)",
         1 - tps("ray_1") / tps("local_1"), 0.15, "<="),
        ("Ray's overhead at 2 cores (large corpus): 1 - (ray, 2 workers) / (local, 2 threads)",
         1 - tps("ray_2") / tps("local_2"), 0.15, "<="),
        ("ray, 2 workers / 1 worker (small corpus)", tps("ray_2", small) / tps("ray_1"), 1.7, ">="),
        ("ray driver's peak memory, 4x the texts", growth("ray_2", "driver_peak_mib"), 1.1, "<="),
        ("ray worker's peak memory, 4x the texts", growth("ray_2", "worker_peak_mib"), 1.1, "<="),
        ("local predictor's peak memory, 4x the texts", growth("local_2", "driver_peak_mib"), 1.1, "<="),
    ]  # fmt: skip
    same = all(row["labels"] == _row(rows, "local_2", row["texts"])["labels"] for row in rows)
    bars.append(("every system gave the same label counts (1 = yes)", float(same), 1.0, ">="))
    return [{"bar": bar, "value": round(value, 3), "target": target, "op": op,
             "met": value >= target if op == ">=" else value <= target} for bar, value, target, op in bars]  # fmt: skip


def estimate(rows: list[dict], texts: int) -> dict[str, Any]:
    """Hours per billion texts on N nodes of NODE_CORES cores, from the measured rate per core of the 2-worker Ray
    run (end to end, start-up included): linear in cores, as shards are independent."""
    per_core = _row(rows, "ray_2", texts)["texts_per_second"] / 2
    hours = {str(n): round(1e9 / (per_core * NODE_CORES * n) / 3600, 2) for n in NODES}
    return {"texts_per_core_second": round(per_core, 1), "node_cores": NODE_CORES, "hours_per_billion": hours}


def report(results: dict[str, Any]) -> None:
    from report import number, write_section

    names = {
        "local_1": "`hf-gru predict --threads 1`",
        "local_2": "`hf-gru predict --threads 2`",
        "ray_1": "`hf-gru predict --engine ray --workers 1`",
        "ray_2": "`hf-gru predict --engine ray --workers 2`",
    }
    cores = {"local_1": 1, "ray_1": 1, "local_2": 2, "ray_2": 2}
    table_rows = [
        [names[row["system"]], cores[row["system"]], number(row["texts"]), f"{row['wall_seconds']:.1f}",
         number(row["texts_per_second"]), number(row["labelled_texts_per_second"]) if row["labelled_texts_per_second"]
         else "–", row["driver_peak_mib"], row["worker_peak_mib"] or "–", row["total_peak_mib"],
         f"{row['cpu_seconds']:.0f}", row["load_average_before"]]
        for row in results["rows"]
    ]  # fmt: skip
    write_section("bulk", "bulk.md.j2", table_rows=table_rows, **results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=None, help="an sst2 model folder (trained if missing)")
    parser.add_argument("--smoke", action="store_true", help="20 k and 5 k texts; nothing written")
    parser.add_argument(
        "--report-only", action="store_true", help="redraw BENCHMARKS.md from results/bulk_predict.json"
    )
    args = parser.parse_args()
    if args.report_only:
        report(json.loads((RESULTS_DIR / "bulk_predict.json").read_text(encoding="utf-8")))
        return 0
    results = run(args)
    for bar in results["acceptance"]:
        log(f"{'met    ' if bar['met'] else 'NOT met'}  {bar['bar']}: {bar['value']} ({bar['op']} {bar['target']})")
    log(f"estimate: {results['estimate']}")
    if not args.smoke:
        write_json("bulk_predict.json", results)
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
