"""Timing inference: systems, interleaved rounds, batch throughput and batch-1 latency, as ratios.

Every system sees the same batches of texts in the same order, interleaved round by round (the order rotated each
round) so that load from other jobs on the machine hits all of them alike; results are per-round ratios against
reference systems (hf_gru fp32, fastText), medians over rounds. Times are end to end: a text in, a label out, the
tokenizer included; where a system splits tokenizer and model (the `hf_gru.backends` classifiers), the model-only
share is measured in the same pass.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from common import log

# (tokenizer seconds or None when the system does not split them, total seconds, real tokens or None)
Timing = tuple[float | None, float, int | None]


class System:
    """One way of classifying texts, timed as a user would call it. `run` times each batch given."""

    def __init__(self, key: str, name: str, parameters: int | None, max_length: int | None, kind: str) -> None:
        self.key, self.name, self.parameters, self.max_length, self.kind = key, name, parameters, max_length, kind

    def run(self, batches: list[list[str]]) -> list[Timing]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "parameters": self.parameters, "max_length": self.max_length, "kind": self.kind}


class ClassifierSystem(System):
    """An `hf_gru.backends` classifier (torch or ONNX Runtime backend, any model): tokenizer, then forward."""

    def __init__(self, key: str, name: str, classifier: Any, parameters: int | None, kind: str) -> None:
        super().__init__(key, name, parameters, classifier.max_length, kind)
        self.classifier = classifier

    def run(self, batches: list[list[str]]) -> list[Timing]:
        """Each batch as one request (`logits`); the tokenizer's share timed apart, unless the backend overlaps the
        two (ONNX spreads a large request over cores, tokenizing in each): then it has no model-only figure."""
        spreads = getattr(self.classifier, "parts_for", lambda rows: 1)
        timings = []
        for batch in batches:
            start = time.perf_counter()
            self.classifier.logits(batch)
            total = time.perf_counter() - start
            if spreads(len(batch)) > 1:
                timings.append((None, total, None))
                continue
            start = time.perf_counter()
            _, attention_mask = self.classifier.encode(batch)
            timings.append((time.perf_counter() - start, total, int(attention_mask.sum())))
        return timings


class PeerSystem(System):
    """A fitted peer (`peers.Peer`): `predict` end to end; a peer in another process times itself there."""

    def __init__(self, key: str, name: str, peer: Any) -> None:
        super().__init__(key, name, peer.parameters(), None, "peer")
        self.peer = peer

    def run(self, batches: list[list[str]]) -> list[Timing]:
        if not self.peer.in_process:
            return [(None, seconds, None) for seconds in self.peer.time_batches(batches)]
        timings = []
        for batch in batches:
            start = time.perf_counter()
            self.peer.predict(batch)
            timings.append((None, time.perf_counter() - start, None))
        return timings


def contention_probe() -> dict[str, Any]:
    """How much slower a small GRU runs on torch's threads than on one: about 1× or less on a quiet machine.

    A GRU makes a few small parallel regions per time step. When other jobs hold the cores, OpenMP threads wait for
    each other at every one of them: on this project's shared 2-core machines that has measured 50× slower than one
    thread (`OMP_WAIT_POLICY=PASSIVE` or one thread avoid it). Probed before and after the run, so that numbers from
    a contended run are flagged, never silently published.
    """
    import torch

    threads = torch.get_num_threads()
    gru, inputs = torch.nn.GRU(256, 256, batch_first=True), torch.randn(32, 32, 256)

    def best_seconds(n_threads: int) -> float:
        torch.set_num_threads(n_threads)
        times = []
        with torch.inference_mode():
            gru(inputs)
            for _ in range(3):
                start = time.perf_counter()
                gru(inputs)
                times.append(time.perf_counter() - start)
        return min(times)

    try:
        one, many = best_seconds(1), best_seconds(threads)
    finally:
        torch.set_num_threads(threads)
    slowdown = many / one
    return {
        "threads": threads,
        "gru_ms": round(1000 * many, 2),
        "gru_ms_one_thread": round(1000 * one, 2),
        "slowdown_vs_one_thread": round(slowdown, 2),
        "contended": threads > 1 and slowdown > 1.5,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def rotated(items: list[Any], shift: int) -> list[Any]:
    """`items` starting at position `shift`: no system is always first (or last) in a round."""
    shift %= max(1, len(items))
    return items[shift:] + items[:shift]


def _paired(rows: dict[str, list[dict[str, Any]]], key: str, reference: str, field: str) -> list[float]:
    """Per-round ratios of `field` (texts/s) of `key` over `reference`: both sides of each saw the same load."""
    return [r[field] / b[field] for b, r in zip(rows[reference], rows[key]) if r.get(field) and b.get(field)]


def time_throughput(systems: list[System], batches: list[list[str]], rounds: int) -> dict[str, Any]:
    """Batch throughput, systems interleaved round by round; texts/s end to end (and model-only where split)."""
    n_texts = sum(len(batch) for batch in batches)
    per_round: dict[str, list[dict[str, Any]]] = {s.key: [] for s in systems}
    for system in systems:  # warm-up: allocator, oneDNN primitives, tokenizer caches
        system.run([batches[0], batches[len(batches) // 2]])
    for round_index in range(rounds):
        for system in rotated(systems, round_index):
            timings = system.run(batches)
            total = sum(t[1] for t in timings)
            row: dict[str, Any] = {"seconds": round(total, 4), "texts_per_s": n_texts / total}
            if timings[0][0] is not None:
                tokenize = sum(t[0] for t in timings)
                row.update(
                    tokenizer_seconds=round(tokenize, 4),
                    model_texts_per_s=n_texts / (total - tokenize),
                    tokens_per_s=sum(t[2] for t in timings) / total,
                )
            per_round[system.key].append(row)
            log(f"  round {round_index + 1}/{rounds} {system.name:<26} {n_texts / total:10.1f} texts/s")
    results = {}
    for system in systems:
        rows = per_round[system.key]
        entry: dict[str, Any] = {"texts_per_s": statistics.median(r["texts_per_s"] for r in rows), "rounds": rows}
        if "model_texts_per_s" in rows[0]:
            entry["model_texts_per_s"] = statistics.median(r["model_texts_per_s"] for r in rows)
            entry["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in rows)
            entry["tokenizer_share"] = statistics.median(r["tokenizer_seconds"] / r["seconds"] for r in rows)
        if "hf_gru" in per_round:
            ratios = [1 / r for r in _paired(per_round, system.key, "hf_gru", "texts_per_s")]
            entry["hf_gru_speedup"] = statistics.median(ratios)  # the other system's time / hf_gru fp32's
            entry["hf_gru_speedup_range"] = [min(ratios), max(ratios)]
            model_only = _paired(per_round, system.key, "hf_gru", "model_texts_per_s")
            if model_only:
                entry["hf_gru_speedup_model_only"] = statistics.median(1 / r for r in model_only)
        if "fasttext" in per_round:
            entry["fasttext_fraction"] = statistics.median(_paired(per_round, system.key, "fasttext", "texts_per_s"))
        results[system.key] = entry
    return {"texts": n_texts, "batches": len(batches), "batch_size": len(batches[0]), "systems": results}


def time_predict_path(systems: list[System], texts: list[str], batch_size: int, rounds: int) -> dict[str, Any]:
    """Whole-list throughput through `Classifier.predict_logits`, the path of `hf-gru predict`: torch on its
    intra-op threads, ONNX Runtime running one batch per core at once. Only hf_gru-inference systems (the teacher
    and the transformers included) have that path; rounds interleaved, texts/s median and per-round ratios."""
    classifiers = [s for s in systems if isinstance(s, ClassifierSystem) and "@" not in s.key]
    per_round: dict[str, list[float]] = {s.key: [] for s in classifiers}
    for system in classifiers:
        system.classifier.predict_logits(texts[: 4 * batch_size], batch_size=batch_size)  # warm-up
    for round_index in range(rounds):
        for system in rotated(classifiers, round_index):
            start = time.perf_counter()
            system.classifier.predict_logits(texts, batch_size=batch_size)
            per_round[system.key].append(len(texts) / (time.perf_counter() - start))
            log(f"  predict path, round {round_index + 1}/{rounds} {system.name:<26} {per_round[system.key][-1]:10.1f}")
    results = {}
    for system in classifiers:
        entry: dict[str, Any] = {
            "texts_per_s": statistics.median(per_round[system.key]),
            "concurrent_batches": system.classifier.concurrent_batches,
            "rounds": per_round[system.key],
        }
        for reference in ("teacher", "minilm"):
            if reference in per_round:
                pairs = zip(per_round[system.key], per_round[reference])
                entry[f"{reference}_speedup"] = statistics.median(a / b for a, b in pairs)
        results[system.key] = entry
    return {"texts": len(texts), "batch_size": batch_size, "systems": results}


def time_latency(systems: list[System], texts: list[str]) -> dict[str, Any]:
    """Batch-1 latency: every text timed by every system in turn (order rotated per text); p50/p95 in ms."""
    import numpy as np

    samples: dict[str, list[float]] = {s.key: [] for s in systems}
    model_samples: dict[str, list[float]] = {s.key: [] for s in systems}
    for system in systems:
        system.run([[text] for text in texts[:3]])
    for index, text in enumerate(texts):
        for system in rotated(systems, index):
            tokenize, total, _ = system.run([[text]])[0]
            samples[system.key].append(1000 * total)
            if tokenize is not None:
                model_samples[system.key].append(1000 * (total - tokenize))
    results = {}
    for system in systems:
        p50 = float(np.percentile(samples[system.key], 50))
        entry = {"p50_ms": p50, "p95_ms": float(np.percentile(samples[system.key], 95))}
        if model_samples[system.key]:
            entry["model_p50_ms"] = float(np.percentile(model_samples[system.key], 50))
        for reference, name in (("hf_gru", "hf_gru_speedup_p50"), ("fasttext", "fasttext_p50_ratio")):
            if reference in samples:
                entry[name] = p50 / float(np.percentile(samples[reference], 50))
        results[system.key] = entry
    log("  batch 1: " + ", ".join(f"{s.name} p50 {results[s.key]['p50_ms']:.2f} ms" for s in systems))
    return {"texts": len(texts), "systems": results}


def profile_inference(system: ClassifierSystem, batches: list[list[str]], top: int = 8) -> dict[str, Any]:
    """Where a batch forward spends its time: the heaviest torch ops by self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    encoded = [system.classifier.encode(batch) for batch in batches]
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for inputs in encoded:
            system.classifier.forward(*inputs)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return {
        "batches": len(batches),
        "ops": [
            {"op": e.key, "share": round(e.self_cpu_time_total / total, 3), "calls": e.count} for e in events[:top]
        ],
    }
