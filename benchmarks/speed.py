"""Speed on the CPU: hf_gru (torch and ONNX Runtime, fp32 and int8), its distilled student and teacher, the fast peers
(fastText, Model2Vec, TF-IDF + LR), MiniLM-L6 and a DistilBERT-sized transformer; and the Trainer's overhead.

    python benchmarks/speed.py                 # the full suite, on a quiet machine (see BENCHMARKS.md for its time)
    python benchmarks/speed.py --smoke         # everything, on a few texts, in a minute or two: proves it runs
    python benchmarks/speed.py --student DIR --teacher DIR   # adds the distilled sst2 student and its teacher
    python benchmarks/speed.py --report-only   # redraw the plot and the section from the saved results

Inference, on real texts (short: sst2 test; long: a fixed, seeded subset of imdb test), all systems in one process
(Model2Vec in its own, timing itself), interleaved round by round (`timing.py`); batch 32 throughput and batch 1 p50 /
p95 latency, tokenization included, as ratios to hf_gru torch fp32 and to fastText. Each system's accuracy is measured
in the same run on the same texts (`speed_systems.py`), so the accuracy-against-throughput plot (`plot.py`) places
every system by its own numbers, with the Pareto frontier marked. Training: `trainer_overhead.py`.

Results: `benchmarks/results/speed.json`, `benchmarks/results/accuracy_vs_speed.png` and the speed section of
BENCHMARKS.md, written from `templates/speed.md.j2` by `report.py`. A benchmark measures: it never asserts a timing;
targets are reported as measured, with a profile of what holds hf_gru back where one is missed.

Run it on a quiet machine. A GRU makes a few small OpenMP parallel regions per time step; while other jobs hold the
cores, torch's threads wait for each other at each one (50-60x slower than one thread on a busy 2-core machine). A
probe at the start and end records this, and the results are flagged when it happened; `OMP_WAIT_POLICY=PASSIVE`
avoids the stall (the setting is recorded with the results).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see the docstring

from common import RESULTS_DIR, STARTED, TEACHERS_DIR, log, machine, read_json, write_json  # noqa: E402

BATCH_SIZE = 32
RESULTS_FORMAT = 2  # the layout of speed.json that --report-only reads (1: before the peers and ONNX rows)
PEER_KEYS = ("fasttext", "model2vec", "tfidf_lr")
SMOKE = dict(short_texts=64, long_texts=32, latency_short=8, latency_long=4, rounds=1, accuracy_texts=200,
             trainer_steps=12, trainer_warmup=4, trainer_segments=1, train_epochs=1, imdb_epochs=1,
             imdb_train_samples=600, peer_train_samples=600, long_max_lengths=[128])  # fmt: skip


def inference_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Per dataset: every system built and its accuracy measured, then batch-32 throughput and batch-1 latency."""
    import speed_systems as ss
    from timing import profile_inference, time_latency, time_predict_path, time_throughput

    results: dict[str, Any] = {"models": {}}
    transformers = ss.transformer_systems([512])
    for dataset, part in (("sst2", "short"), ("imdb", "long")):
        model_dir, record = ss.ensure_hf_gru_model(dataset, args)
        texts, labels = ss.load_split(dataset)
        size = None if part == "short" else args.accuracy_texts
        index = ss.seeded_subset(len(texts), args.accuracy_texts if args.smoke else size, seed=1)
        eval_texts, eval_labels = [texts[i] for i in index], [labels[i] for i in index]
        log(f"{dataset}: building systems, accuracy on {len(eval_texts)} test texts")
        systems, checks = ss.hf_gru_systems("hf_gru", "hf_gru", model_dir, eval_texts, eval_labels, "hf_gru")
        results["models"][dataset] = model_record(model_dir, systems[0], record)
        accuracy = {key: check.get("accuracy") for key, check in checks.items() if isinstance(check, dict)}
        block_checks: dict[str, Any] = {"hf_gru": checks}
        if part == "short" and args.student:
            student, checks = ss.hf_gru_systems("student", "distilled student", args.student, eval_texts,
                                                eval_labels, "student")  # fmt: skip
            systems += student
            block_checks["student"] = checks
            accuracy.update({k: c.get("accuracy") for k, c in checks.items() if isinstance(c, dict)})
        if part == "short" and args.teacher:
            teacher, accuracy["teacher"] = ss.teacher_system(args.teacher, eval_texts, eval_labels)
            systems.append(teacher)
        peers, checks = ss.peer_systems(dataset, args.peers, eval_texts, eval_labels, args.peer_train_samples)
        systems += peers
        block_checks["peers"] = checks
        accuracy.update({k: c.get("accuracy") for k, c in checks.items()})
        if part == "short":
            timed_transformers = transformers
        else:
            timed_transformers = ss.transformer_systems(args.long_max_lengths)
        systems += timed_transformers
        published = ss.read_accuracies(dataset).get("minilm")
        if published:  # the timed MiniLM has a fresh head: its accuracy is accuracy.py's fine-tuned one
            accuracy["minilm"] = published["accuracy"]
        size = args.short_texts if part == "short" else args.long_texts
        sample = [texts[i] for i in ss.seeded_subset(len(texts), size, seed=0)]
        batches = ss.length_sorted_batches(sample, BATCH_SIZE)
        log(f"{dataset}: batch {BATCH_SIZE}, {len(sample)} texts, {args.rounds} rounds, {len(systems)} systems")
        throughput = time_throughput(systems, batches, args.rounds)
        predict_path = time_predict_path(systems, sample, BATCH_SIZE, args.rounds) if part == "short" else None
        latency_size = args.latency_short if part == "short" else args.latency_long
        latency_texts = [texts[i] for i in random.Random(2).sample(range(len(texts)), min(latency_size, len(texts)))]
        latency_systems = [s for s in systems if "@" not in s.key]  # the truncation variants: batch 32 only
        log(f"{dataset}: batch 1, {len(latency_texts)} texts, {len(latency_systems)} systems")
        latency = time_latency(latency_systems, latency_texts)
        for system in systems:
            if hasattr(getattr(system, "peer", None), "close"):
                system.peer.close()
        results[part] = {
            "dataset": dataset,
            "systems": {s.key: s.describe() for s in systems},
            "accuracy": accuracy,
            "accuracy_texts": len(eval_texts),
            "test_texts": len(texts),
            "checks": block_checks,
            "batch32": throughput,
            "batch1": latency,
            **({"predict_path": predict_path} if predict_path else {}),
        }
        if part == "short" and (args.profile or missed(results["short"])):
            log("sst2: profiling hf_gru batch-32 inference (torch.profiler)")
            results["short"]["hf_gru_profile"] = profile_inference(systems[0], batches)
            results["short"]["hf_gru_profile"]["tokenizer_share"] = throughput["systems"]["hf_gru"]["tokenizer_share"]
    for dataset in args.int8_check_datasets:  # accuracy only: does int8 hold on more languages and lengths?
        model_dir, record = ss.ensure_hf_gru_model(dataset, args)
        texts, labels = ss.load_split(dataset)
        index = ss.seeded_subset(len(texts), args.accuracy_texts, seed=1)
        log(f"{dataset}: int8 accuracy check on {len(index)} test texts")
        systems, checks = ss.hf_gru_systems("hf_gru", "hf_gru", model_dir, [texts[i] for i in index],
                                            [labels[i] for i in index], "hf_gru")  # fmt: skip
        names = {s.key: s.describe() for s in systems}
        results.setdefault("int8_checks", {})[dataset] = {"systems": names, "checks": {"hf_gru": checks}}
        results["models"][dataset] = model_record(model_dir, systems[0], record)
    return results


def long_document_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Whole imdb documents at batch 32: hf_gru (torch, ONNX) against TF-IDF + LR, fastText and MiniLM-L6 reading
    the whole text in windows, timed interleaved in one run; accuracy of each on the same test texts."""
    import statistics

    import speed_systems as ss
    from timing import time_throughput

    model_dir, record = ss.ensure_hf_gru_model("imdb", args)
    texts, labels = ss.load_split("imdb")
    index = ss.seeded_subset(len(texts), args.accuracy_texts, seed=1)
    eval_texts, eval_labels = [texts[i] for i in index], [labels[i] for i in index]
    log(f"imdb whole documents: building systems, accuracy on {len(eval_texts)} test texts")
    systems, checks = ss.hf_gru_systems("hf_gru", "hf_gru", model_dir, eval_texts, eval_labels, "hf_gru")
    systems = [s for s in systems if s.key in ("hf_gru", "hf_gru_onnx_fp32", "hf_gru_onnx_int8")]
    peers, peer_checks = ss.peer_systems("imdb", ["tfidf_lr", "fasttext"], eval_texts, eval_labels,
                                         args.peer_train_samples)  # fmt: skip
    reader = ss.whole_document_transformer(args.long_window, systems[0].max_length)
    systems += peers + [reader]
    sample = [texts[i] for i in ss.seeded_subset(len(texts), args.long_texts, seed=0)]
    tokens = [len(ids) for ids in systems[0].classifier.tokenizer(sample, truncation=True)["input_ids"]]
    batches = ss.length_sorted_batches(sample, BATCH_SIZE)
    log(f"imdb whole documents: batch {BATCH_SIZE}, {len(sample)} texts, {args.rounds} rounds, {len(systems)} systems")
    throughput = time_throughput(systems, batches, args.rounds)
    speed = {key: entry["texts_per_s"] for key, entry in throughput["systems"].items()}
    accuracy = {k: c.get("accuracy") for k, c in {**checks, **peer_checks}.items() if isinstance(c, dict)}
    return {
        "dataset": "imdb",
        "model": model_record(model_dir, systems[0], record),
        "systems": {s.key: s.describe() for s in systems},
        "accuracy": accuracy,
        "accuracy_texts": len(eval_texts),
        "tokens_per_text": {"mean": round(statistics.fmean(tokens), 1), "max": max(tokens)},
        "batch32": throughput,
        "times_whole_document_minilm": {k: round(v / speed["minilm_whole"], 2) for k, v in speed.items()},
        "fraction_of_tfidf_lr": {k: round(v / speed["tfidf_lr"], 3) for k, v in speed.items()} if "tfidf_lr" in speed
        else {},
    }  # fmt: skip


def long_document_markdown(block: dict[str, Any]) -> str:
    """The long-document speed table of BENCHMARKS.md (and the README's), from `long_document_suite`'s results."""
    from report import markdown_table

    rows = []
    for key, system in block["systems"].items():
        entry = block["batch32"]["systems"][key]
        accuracy = block["accuracy"].get(key)
        rows.append([system["name"], f"{entry['texts_per_s']:.1f}", f"{block['times_whole_document_minilm'][key]:.1f}×",
                     f"{block['fraction_of_tfidf_lr'].get(key, float('nan')):.3f}",
                     "–" if accuracy is None else f"{100 * accuracy:.1f}"])  # fmt: skip
    header = ["system (whole document)", "texts/s, batch 32", "× MiniLM whole text", "fraction of TF-IDF + LR",
              f"accuracy % ({block['accuracy_texts']} test texts)"]  # fmt: skip
    tokens = block["tokens_per_text"]
    return (
        f"imdb test, {block['batch32']['texts']} texts at batch 32 (hf_gru tokens per text: mean {tokens['mean']}, "
        f"max {tokens['max']}), median of {len(next(iter(block['batch32']['systems'].values()))['rounds'])} "
        f"interleaved rounds; {block['machine']}.\n\n" + markdown_table(header, rows)
    )


def model_record(model_dir: Path, system: Any, record: dict[str, Any]) -> dict[str, Any]:
    """What speed.json says of an hf_gru model a block timed or checked: where it is, its size, how it was made."""
    return {"path": display_path(model_dir), "parameters": system.parameters, "max_length": system.max_length,
            **record}  # fmt: skip


def display_path(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    root = RESULTS_DIR.parent.parent
    return str(path.resolve().relative_to(root)) if path.resolve().is_relative_to(root) else str(path)


# Targets of the issues, read against one run: (system, reference, measure, bound, what).
TARGETS = [
    ("hf_gru", "distilbert", "batch32", 20.0, "hf_gru torch fp32 batch-32 throughput ≥ 20× DistilBERT-sized"),
    ("hf_gru", "minilm", "batch32", 5.0, "hf_gru torch fp32 batch-32 throughput ≥ 5× MiniLM-L6"),
    ("hf_gru_onnx_fp32", "minilm", "batch1", 8.0, "ONNX fp32 batch-1 p50 ≤ 1/8 of MiniLM-L6's"),
    ("hf_gru_onnx_fp32", "hf_gru", "batch1", 2.0, "ONNX fp32 batch-1 p50 ≤ 1/2 of hf_gru torch's"),
    ("hf_gru_onnx_fp32", "hf_gru", "batch32", 1.5, "ONNX fp32 batch-32 throughput ≥ 1.5× hf_gru torch fp32"),
    ("hf_gru_onnx_int8", "minilm", "batch32", 25.0, "ONNX int8 batch-32 throughput ≥ 25× MiniLM-L6"),
    ("student", "teacher", "batch32", 20.0, "distilled student batch-32 throughput ≥ 20× its teacher"),
    ("student_onnx_fp32", "teacher", "batch32", 20.0, "distilled student, ONNX fp32, batch 32 ≥ 20× its teacher"),
    ("student_onnx_fp32", "minilm", "batch1", 8.0, "distilled student: ONNX fp32 batch-1 p50 ≤ 1/8 of MiniLM-L6's"),
    ("student_onnx_fp32", "student", "batch32", 1.5, "distilled student: ONNX fp32 batch 32 ≥ 1.5× its torch fp32"),
    ("student_onnx_int8", "minilm", "batch32", 25.0, "distilled student: ONNX int8 batch 32 ≥ 25× MiniLM-L6"),
    (
        "student_onnx_fp32",
        "teacher",
        "predict_path",
        20.0,
        "distilled student, ONNX fp32, `hf-gru predict` ≥ 20× teacher",
    ),
]


def target_rows(short: dict[str, Any]) -> list[list[str]]:
    """(target, measured multiple, pass/miss) on short texts, from per-run medians."""
    rows = []
    for system, reference, measure, bound, what in TARGETS:
        block = short.get(measure, {}).get("systems", {})
        if system not in block or reference not in block:
            continue
        if measure in ("batch32", "predict_path"):
            value = block[system]["texts_per_s"] / block[reference]["texts_per_s"]
        else:
            value = block[reference]["p50_ms"] / block[system]["p50_ms"]
        rows.append([what, f"{value:.1f}×", "pass" if value >= bound else "miss"])
    return rows


def missed(short: dict[str, Any]) -> bool:
    return any(row[2] == "miss" for row in target_rows(short))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--smoke", action="store_true", help="a minute or two on a few texts: proves the script runs (own output)")
    add("--short-texts", type=int, default=None, help="sst2 test texts at batch 32 (default: all)")
    add("--long-texts", type=int, default=128, help="imdb test texts at batch 32 (seeded subset)")
    add("--latency-short", type=int, default=200, help="sst2 texts timed one at a time")
    add("--latency-long", type=int, default=50, help="imdb texts timed one at a time")
    add("--rounds", type=int, default=3, help="interleaved rounds of batch-32 timing")
    add(
        "--long-documents",
        action="store_true",
        help="only the whole-document block: imdb at batch 32, hf_gru against TF-IDF + LR, fastText and MiniLM-L6 "
        "reading the whole text in windows (results/speed_long.json, BENCHMARKS.md section speed-long)",
    )
    add("--long-window", type=int, default=256, help="window of the whole-document MiniLM-L6 (tokens)")
    add("--long-max-lengths", type=int, nargs="+", default=[512, 256],
        help="truncations the transformers are timed at on long texts (the longest is their main row)")  # fmt: skip
    add("--accuracy-texts", "--int8-eval-texts", type=int, default=2000, help="imdb test texts for the accuracy checks")
    add("--int8-check-datasets", nargs="*", default=["chnsenticorp"],
        help="further shared sets whose test split checks int8 accuracy against fp32 (no timing)")  # fmt: skip
    add("--student", type=Path, default=None, help="a distilled sst2 student (default: results/models/distilled/sst2)")
    add("--teacher", type=Path, default=None, help="its teacher (default: STUDENT/teacher or models/teachers/sst2)")
    add("--peers", nargs="*", default=list(PEER_KEYS), choices=PEER_KEYS, help="peers to time (default: all)")
    add("--peer-train-samples", type=int, default=None, help="fit the peers on a training subset (default: all)")
    add("--trainer-steps", type=int, default=60, help="optimizer steps per Trainer/bare segment")
    add("--trainer-warmup", type=int, default=10, help="first steps of a segment left out")
    add("--trainer-segments", type=int, default=5, help="alternating Trainer/bare segments")
    add("--preset", default="base", help="hf_gru model preset for the models and the Trainer")
    add("--train-epochs", type=float, default=4, help="epochs of a newly trained sst2 model")
    add("--imdb-epochs", type=float, default=2, help="epochs of a newly trained imdb model")
    add("--imdb-train-samples", type=int, default=5000, help="imdb training subset (0: all)")
    add("--models-dir", type=Path, default=None, help="where hf_gru models are cached (default results/models/hf_gru)")
    add("--retrain", action="store_true", help="train the hf_gru models even if cached")
    add("--skip-inference", action="store_true", help="only the Trainer benchmark")
    add("--skip-trainer", action="store_true", help="only the inference benchmark")
    add("--profile", action="store_true", help="profile even where the targets are met")
    add("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    add("--output", default=None, help="results file name in benchmarks/results/ (default speed.json)")
    add("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    add("--report-only", action="store_true",
        help="no timing: redraw the plot and the section from the saved --output file")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        for name, value in SMOKE.items():
            if parser.get_default(name) == getattr(args, name):
                setattr(args, name, value)
        args.no_markdown = True
    from speed_systems import MODELS_DIR

    args.models_dir = args.models_dir or MODELS_DIR / ("smoke" if args.smoke else "hf_gru")
    args.output = args.output or ("speed_smoke.json" if args.smoke else "speed.json")
    if args.long_documents and args.output == "speed.json":
        args.output = "speed_long.json"
    default_student = MODELS_DIR / "distilled" / "sst2"  # where `accuracy.py --systems hf_gru_distilled` keeps it
    if args.student is None and not args.smoke and (default_student / "config.json").is_file():
        args.student = default_student
    if args.student is not None and args.teacher is None:
        from hf_gru.run_directory import TEACHER_DIR

        shared_teacher = TEACHERS_DIR / "sst2"  # where `accuracy.py` keeps the teacher it fine-tuned
        for candidate in (args.student / TEACHER_DIR, shared_teacher):  # `hf-gru distill --teacher-base` saves it
            if args.teacher is None and (candidate / "config.json").is_file():
                args.teacher = candidate
    for option in ("student", "teacher"):
        path = getattr(args, option)
        if path is not None and not (path / "config.json").is_file():
            parser.error(f"--{option} {path}: not a saved model (no config.json); pass the model's directory")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch
    import transformers
    from timing import contention_probe
    from trainer_overhead import trainer_benchmark

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.long_documents:
        block = long_document_suite(args)
        block["machine"] = f"{machine()['cpu']} ({machine()['cpu_count']} cores), {machine()['date']}"
        write_json(args.output, block)
        markdown = long_document_markdown(block)
        print("\n" + markdown)
        if not args.no_markdown:
            from report import replace_section

            replace_section("speed-long", markdown)
        return
    if args.report_only:
        saved = read_json(args.output) or sys.exit(f"no benchmarks/results/{args.output} to report from")
        if saved.get("format") != RESULTS_FORMAT:
            sys.exit(f"benchmarks/results/{args.output} was written by an older speed.py: run the suite again")
        report(saved, args)
        return
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "machine": machine(),
        "argv": sys.argv[1:] if argv is None else argv,
        "rounds": args.rounds,
        "output": args.output,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    results["contention"] = {"start": contention_probe()}
    log(f"contention probe: {results['contention']['start']}")
    if results["contention"]["start"]["contended"]:
        log("WARNING: the CPU is contended (other jobs): threaded GRU timings are not representative")
    if not args.skip_inference:
        results["inference"] = inference_suite(args)
    if not args.skip_trainer:
        log("training throughput: Trainer against a bare loop (sst2)")
        results["trainer"] = trainer_benchmark(args)
    results["contention"]["end"] = contention_probe()
    log(f"contention probe: {results['contention']['end']}")
    results["wall_seconds"] = round(time.perf_counter() - STARTED, 1)
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Plot, results file and BENCHMARKS.md section from one run's results."""
    from plot import plot_accuracy_vs_speed
    from report import render, replace_section
    from speed_report import context

    stem = Path(args.output).stem
    plot_path = RESULTS_DIR / ("accuracy_vs_speed.png" if stem == "speed" else f"{stem}_accuracy_vs_speed.png")
    if "inference" in results:
        results["plot"] = plot_accuracy_vs_speed(results, plot_path, BATCH_SIZE)
    path = write_json(args.output, results)
    markdown = render("speed.md.j2", **context(results, display_path(plot_path), target_rows))
    print("\n" + markdown)
    log(f"results in {path}" + ("" if "plot" not in results else f", plot in {plot_path}"))
    if not args.no_markdown:
        replace_section("speed", markdown)
        log("BENCHMARKS.md speed section rewritten")


if __name__ == "__main__":
    main()
