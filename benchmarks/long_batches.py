"""How long documents are batched: padding with the length-grouped sampler against random batches, and the memory
and time of one training step on the longest batch.

    python benchmarks/long_batches.py --datasets 20newsgroups imdb

For each set the training texts are tokenized as `hf-gru train` does (the default start's tokenizer, up to the
default `max_length`), the Trainer's samplers draw one epoch of batch-64 index lists, and each batch is charged the
tokens it pads to (its longest text times its size). The step is a forward and backward pass of the `base` preset on
the batch of the 64 longest texts: peak resident memory (ru_maxrss) and seconds. Results: `results/long_batches.json`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common import SHARED_DATA, log, machine, write_json  # noqa: E402


def padded_share(lengths: list[int], batches: list[list[int]]) -> dict[str, float]:
    """Real tokens, tokens the batches pad to, and the padding's share of them."""
    real = sum(lengths)
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return {"real_tokens": real, "padded_tokens": padded, "padding_share": round(1 - real / padded, 4)}


def measure(name: str, batch_size: int) -> dict[str, Any]:
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hf_gru.arguments import MODEL_PRESETS, DataArguments
    from hf_gru.data import load_raw_datasets
    from hf_gru.encoders import auto_encoder, resolve_encoder
    from hf_gru.modeling_gru import GRUConfig, GRUForSequenceClassification
    from hf_gru.tokenization import load_tokenizer

    max_length = DataArguments().max_length
    raw = load_raw_datasets(str(SHARED_DATA / name))
    texts = list(raw["train"]["text"])
    tokenizer = load_tokenizer(resolve_encoder(auto_encoder("en")).path)
    started = time.perf_counter()
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    tokenize_seconds = time.perf_counter() - started
    lengths = [len(row) for row in ids]
    grouped = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(0)))
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    chunks = lambda order: [order[i : i + batch_size] for i in range(0, len(order), batch_size)]  # noqa: E731
    result: dict[str, Any] = {
        "texts": len(texts),
        "max_length": max_length,
        "tokens_per_text": {
            "mean": round(sum(lengths) / len(lengths), 1),
            "max": max(lengths),
            "cut_at_max_length": sum(n >= max_length for n in lengths),
        },  # fmt: skip
        "tokenize_seconds": round(tokenize_seconds, 1),
        "group_by_length": padded_share(lengths, chunks(grouped)),
        "random": padded_share(lengths, chunks(shuffled)),
    }
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])[:batch_size]
    batch = tokenizer.pad({"input_ids": [ids[i] for i in longest]}, return_tensors="pt")
    config = GRUConfig(vocab_size=len(tokenizer), num_labels=2, **MODEL_PRESETS["base"])
    model = GRUForSequenceClassification(config).train()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    output = model(**batch, labels=torch.zeros(batch_size, dtype=torch.long))
    output.loss.backward()
    result["longest_batch_step"] = {
        "shape": list(batch["input_ids"].shape),
        "seconds": round(time.perf_counter() - started, 2),
        "peak_rss_growth_mb": round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 1),
    }
    log(f"{name}: {result}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["20newsgroups", "imdb"])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    results = {"machine": machine(), "batch_size": args.batch_size}
    results.update({name: measure(name, args.batch_size) for name in args.datasets})
    write_json("long_batches.json", results)


if __name__ == "__main__":
    main()
