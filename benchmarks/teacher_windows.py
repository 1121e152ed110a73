"""How a teacher should read a long document: its first window, a longer window, or all its windows averaged.

    python benchmarks/teacher_windows.py --dataset bbc_news

A MiniLM-L6 teacher is fine-tuned once on the training split exactly as `hf-gru distill --teacher-base` does
(`fine_tune_teacher`, 128 tokens), then reads the test split three ways through the labelling code
(`hf_gru.distillation.teacher.predict_logits`): the first 128 tokens, the first 512 (the model's position limit),
and every 128-token window up to the student's 2,048 tokens, logits averaged (`--teacher_windows auto`). Each way
reports test accuracy and labelling seconds per 1,000 texts on this CPU. Results: `results/teacher_windows.json`.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import SHARED_DATA, log, machine, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="bbc_news")
    parser.add_argument("--teacher-max-train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None, help="read only the first N test texts (a smoke run)")
    args = parser.parse_args(argv)

    import numpy as np

    from hf_gru.arguments import DataArguments
    from hf_gru.data import load_raw_datasets
    from hf_gru.distillation.teacher import TeacherSettings, fine_tune_teacher, load_teacher, predict_logits
    from hf_gru.encoders import ENGLISH_ENCODER, resolve_encoder

    data = load_raw_datasets(str(SHARED_DATA / args.dataset))
    settings = TeacherSettings(max_train_samples=args.teacher_max_train_samples)
    results = {"machine": machine(), "dataset": args.dataset, "teacher": ENGLISH_ENCODER, "ways": {}}
    with tempfile.TemporaryDirectory(prefix="teacher_windows_") as folder:
        started = time.perf_counter()
        base = str(resolve_encoder(ENGLISH_ENCODER).path)
        fine_tune_teacher(base, data, folder, settings, evaluate=False, name=ENGLISH_ENCODER)
        results["fine_tune_seconds"] = round(time.perf_counter() - started, 1)
        teacher, tokenizer = load_teacher(folder)
        test = data["test"].select(range(min(args.test_samples or len(data["test"]), len(data["test"]))))
        texts, gold = list(test["text"]), np.asarray(test["label"])
        student_tokens = DataArguments().max_length
        ways = {"first 128 tokens": (128, 1), "first 512 tokens": (512, 1),
                f"all 128-token windows up to {student_tokens}": (128, math.ceil(student_tokens / 128))}  # fmt: skip
        for name, (length, windows) in ways.items():
            started = time.perf_counter()
            logits = predict_logits(teacher, tokenizer, texts, max_length=length, windows=windows, batch_size=64)
            seconds = time.perf_counter() - started
            results["ways"][name] = {
                "max_length": length,
                "windows": windows,
                "test_accuracy": round(float((logits.argmax(-1) == gold).mean()), 4),
                "seconds_per_1000_texts": round(1000 * seconds / len(texts), 1),
            }
            log(f"{args.dataset} teacher, {name}: {results['ways'][name]}")
    if args.test_samples is None:
        write_json(f"teacher_windows_{args.dataset}.json", results)


if __name__ == "__main__":
    main()
