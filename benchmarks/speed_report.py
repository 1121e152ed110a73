"""The context `templates/speed.md.j2` is rendered with: the run's results, and its tables as rows of cells."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from report import markdown_table, millions, number, percent, ratio


def inference_table(block: dict[str, Any]) -> str:
    """One row per system: size, latency, throughput, ratios to fastText and to hf_gru, accuracy."""
    throughput, latency = block["batch32"]["systems"], block["batch1"]["systems"]
    accuracy = block.get("accuracy", {})
    rows = []
    for key, info in block["systems"].items():
        t, lat = throughput[key], latency.get(key, {})
        rows.append(
            [
                info["name"],
                millions(info["parameters"]),
                info["max_length"] or "whole text",
                number(lat.get("p50_ms"), 2),
                number(lat.get("p95_ms"), 2),
                number(t["texts_per_s"]),
                number(t.get("model_texts_per_s")),
                ratio(t.get("fasttext_fraction")),
                ratio(lat.get("hf_gru_speedup_p50")),
                ratio(t.get("hf_gru_speedup")),
                percent(accuracy.get(key)),
            ]
        )
    header = ["system", "params", "truncation (tokens)", "batch 1 p50 ms", "batch 1 p95 ms", "batch 32 texts/s",
              "batch 32 model-only texts/s", "throughput × fastText's", "hf_gru speed-up, batch 1 (p50)",
              "hf_gru speed-up, batch 32", "accuracy %"]  # fmt: skip
    return markdown_table(header, rows)


def predict_path_table(block: dict[str, Any]) -> str:
    """Whole-list throughput through `predict_logits` (the `hf-gru predict` path), with ratios to the transformers."""
    path = block.get("predict_path")
    if not path:
        return ""
    rows = [
        [block["systems"][key]["name"], entry["concurrent_batches"], number(entry["texts_per_s"]),
         ratio(entry.get("teacher_speedup")), ratio(entry.get("minilm_speedup"))]
        for key, entry in path["systems"].items()
    ]  # fmt: skip
    header = ["system", "batches at once", "texts/s", "× teacher", "× MiniLM-L6"]
    return markdown_table(header, rows)


def checks_table(block: dict[str, Any]) -> str:
    """Accuracy of each hf_gru variant (and the student's) against its torch fp32 original, on the same texts."""
    rows = []
    for group in ("hf_gru", "student"):
        for key, check in block.get("checks", {}).get(group, {}).items():
            if not isinstance(check, dict):
                continue
            name = block["systems"].get(key, {}).get("name", key)
            if "error" in check:
                rows.append([name, "–", "–", "–", f"not timed: {check['error']}"])
                continue
            rows.append([name, percent(check["accuracy"], 2), f"{check['delta_points']:+.2f}",
                         check["predictions_changed"], "yes" if check["within_tolerance"] else "no"])  # fmt: skip
    header = ["variant", "accuracy %", "Δ points vs torch fp32", "predictions changed", "within 0.5 point"]
    return markdown_table(header, rows)


def peers_note(block: dict[str, Any]) -> list[str]:
    """How each peer was fitted in this run (settings from accuracy.py, or searched; subsets)."""
    notes = []
    for key, check in block.get("checks", {}).get("peers", {}).items():
        if "error" in check:
            notes.append(f"{key}: not timed ({check['error']})")
        else:
            chosen = (check.get("settings") or {}).items()
            settings = ", ".join(f"{k}={v}" for k, v in chosen if k in ("lr", "epoch", "wordNgrams", "C", "max_epochs"))
            notes.append(f"{key}: {settings or 'settings searched on validation'}"
                         + (f", fitted on {check['train_samples']:,} training texts" if "train_samples" in check
                            else ""))  # fmt: skip
    return notes


def model_lines(models: dict[str, Any]) -> list[str]:
    lines = []
    for dataset, model in models.items():
        trained = model.get("results", {})
        how = f"trained by {model.get('trained_by')}"
        if "argv" in model:
            options = dict(zip(model["argv"][::2], model["argv"][1::2]))
            how += f": preset {options.get('--preset')}, epochs: {float(options.get('--num_train_epochs', 0)):g}"
        elif "epoch" in trained:
            how += f", epochs: {trained['epoch']:g}"
        lines.append(
            f"hf_gru model for {dataset}: `{model['path']}`, {millions(model['parameters'])} parameters, truncation "
            f"{model['max_length']} tokens, {how}"
            + (f", {trained['train_samples']:,} training texts" if "train_samples" in trained else "")
            + (f", test accuracy {percent(trained['test_accuracy'])}%" if "test_accuracy" in trained else "")
        )
    return lines


def trainer_table(trainer: dict[str, Any]) -> str:
    rows = [[i + 1, number(s["trainer_tokens_per_s"]), number(s["bare_tokens_per_s"]), f"{100 * s['overhead']:+.1f}%"]
            for i, s in enumerate(trainer["segments"])]  # fmt: skip
    rows.append(["**median**", f"**{number(trainer['trainer_tokens_per_s'])}**",
                 f"**{number(trainer['bare_tokens_per_s'])}**", f"**{100 * trainer['overhead']:+.1f}%**"])  # fmt: skip
    return markdown_table(["segment", "Trainer tokens/s", "bare loop tokens/s", "overhead"], rows)


def trainer_profile(trainer: dict[str, Any]) -> dict[str, Any] | None:
    """Own time per package, Trainer minus bare loop, and the functions with the most extra time."""
    profile = trainer.get("profile")
    if not profile:
        return None
    by_t, by_b = profile["trainer"]["ms_per_step_by_package"], profile["bare"]["ms_per_step_by_package"]
    keys = set(by_t) | set(by_b)
    diffs = sorted(((by_t.get(k, 0) - by_b.get(k, 0), k) for k in keys), reverse=True)
    step_ms = sum(by_t.values())
    code = sum(by_t.get(k, 0) - by_b.get(k, 0) for k in keys if k != "torch")
    return {
        "steps": profile["steps"],
        "packages": ", ".join(f"{k} {d:+.1f} ms" for d, k in diffs if abs(d) >= 0.05) or "no difference",
        "code_ms": code,
        "step_ms": step_ms,
        "code_share": 100 * code / step_ms if step_ms else 0.0,
        "torch_diff": by_t.get("torch", 0) - by_b.get("torch", 0),
        "top": ", ".join(
            f"`{f['function']}` +{f['extra_ms_per_step']:.2f} ms"
            for f in profile.get("trainer_extra_functions", [])[:5]
        ),  # fmt: skip
    }


def context(results: dict[str, Any], plot_path: str, target_rows: Callable[[dict[str, Any]], list]) -> dict[str, Any]:
    inference = results.get("inference") or {}
    parts = []
    for part, title in (("short", "Short texts"), ("long", "Long texts")):
        block = inference.get(part)
        if block:
            parts.append({"title": title, "block": block, "table": inference_table(block),
                          "checks": checks_table(block), "peers": peers_note(block),
                          "predict_path": predict_path_table(block)})  # fmt: skip
    int8_checks = [{"dataset": d, "table": checks_table(b)} for d, b in inference.get("int8_checks", {}).items()]
    probes = results.get("contention", {})
    names = {k: v["name"] for part in parts for k, v in part["block"]["systems"].items()}
    targets = target_rows(inference.get("short", {}))
    profile = inference.get("short", {}).get("hf_gru_profile")
    trainer = results.get("trainer")
    if trainer:
        overhead = trainer["overhead"]
        targets.append(["Trainer overhead ≤ 10%", f"{100 * overhead:+.1f}%", "pass" if overhead <= 0.10 else "miss"])
    return {
        "r": results,
        "m": results["machine"],
        "policy": probes.get("start", {}).get("OMP_WAIT_POLICY"),
        "probes": probes,
        "contended": any(p.get("contended") for p in probes.values()),
        "models": model_lines(inference.get("models", {})),
        "parts": parts,
        "int8_checks": int8_checks,
        "trainer": trainer,
        "trainer_table": trainer_table(trainer) if trainer else "",
        "trainer_profile": trainer_profile(trainer) if trainer else None,
        "plot_path": plot_path,
        "frontiers": {d: [names.get(k, k) for k in p["frontier"]] for d, p in (results.get("plot") or {}).items()},
        "targets": markdown_table(["target", "measured", ""], targets) if targets else "",
        "missed": any(row[2] == "miss" for row in targets),
        "profile": profile,
        "profile_ops": ", ".join(f"`{o['op']}` {100 * o['share']:.0f}%" for o in (profile or {}).get("ops", [])[:5]),
    }
