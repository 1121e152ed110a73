"""What one teacher fine-tuning step costs on this CPU, with the input embeddings updated and frozen.

    python benchmarks/teacher_cost.py intfloat/multilingual-e5-small sentence-transformers/all-MiniLM-L6-v2

A step is forward + backward + AdamW on 32 texts of 128 tokens (the teacher's defaults); the first step is warm-up.
multilingual-e5-small keeps 96 M of its 118 M parameters in its embedding matrix: `hf-gru distill
--teacher_freeze_embeddings auto` freezes it (tables over 100k rows). Minutes per 1,000 training texts and epoch
follow from the step time.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from hf_gru.encoders import resolve_encoder  # noqa: E402

BATCH, LENGTH, STEPS = 32, 128, 4


def step_seconds(path: str, freeze: bool) -> tuple[list[float], list[float]]:
    """(step seconds, optimizer seconds) after one warm-up step."""
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    if freeze:
        model.get_input_embeddings().weight.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    ids = torch.randint(5, min(30_000, model.config.vocab_size), (BATCH, LENGTH))
    labels = torch.randint(0, 2, (BATCH,))
    totals, optimizer_times = [], []
    for _ in range(STEPS):
        started = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        stepped = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        totals.append(time.perf_counter() - started)
        optimizer_times.append(time.perf_counter() - stepped)
    return totals[1:], optimizer_times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("encoders", nargs="+")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {BATCH} texts x {LENGTH} tokens a step")
    for name in args.encoders:
        path = str(resolve_encoder(name).path)
        for freeze in (False, True):
            totals, optimizer_times = step_seconds(path, freeze)
            mean = sum(totals) / len(totals)
            print(
                f"{name} ({'frozen embeddings' if freeze else 'embeddings updated'}): step {mean:.2f} s "
                f"(optimizer {sum(optimizer_times) / len(optimizer_times):.2f} s), "
                f"{mean * 1000 / BATCH / 60:.1f} min per 1,000 texts and epoch",
                flush=True,
            )


if __name__ == "__main__":
    main()
