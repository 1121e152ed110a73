#!/usr/bin/env python
"""Fine-tune a GRU text classifier with a plain `accelerate` loop (no `Trainer`), on any hardware.

It takes the options of `hf-gru train` / `scripts/train.py` (the same dataclasses) plus the loop's own
(`--mixed_precision`, `--streaming`, `--label_set`, `--head_rows`, `--shuffle_buffer`), and leaves the same output
directory. The loop itself is `hf_gru.accelerate_loop.run_accelerate_training`:

    python scripts/train_accelerate.py --dataset ../shared/data/sst2 --output_dir outputs/sst2 --epochs 3
    accelerate launch --num_processes 2 scripts/train_accelerate.py --dataset ... --output_dir ... --bf16 true
    accelerate launch --config_file scripts/accelerate_ddp.yaml scripts/train_accelerate.py ...
    torchrun --nproc_per_node 2 scripts/train_accelerate.py ...
    python scripts/train_accelerate.py --dataset big/ --streaming --max_steps 20000 --output_dir ...
    python scripts/train_accelerate.py config.json          # all arguments from a JSON file
"""

from __future__ import annotations

import json
import logging
import os
import sys

import transformers
from transformers import HfArgumentParser

from hf_gru.accelerate_loop import run_accelerate_training
from hf_gru.arguments import (
    DataArguments,
    GRUTrainingArguments,
    LoopArguments,
    ModelArguments,
    parse_accelerate_arguments,
)


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments, LoopArguments))
        model_args, data_args, training_args, loop_args = parser.parse_json_file(json_file=sys.argv[1])
    else:
        model_args, data_args, training_args, loop_args = parse_accelerate_arguments(sys.argv[1:])

    rank = os.environ.get("RANK", "0")  # set by accelerate launch and torchrun: every process logs, tagged
    logging.basicConfig(format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())

    try:
        outcome = run_accelerate_training(model_args, data_args, training_args, loop_args)
    except ValueError as error:  # bad input: what and how to fix it, without a traceback
        print(f"{sys.argv[0]}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if outcome.is_main_process:
        headline = {k: v for k, v in outcome.metrics.items() if k.endswith(("_accuracy", "_f1_macro"))}
        print(json.dumps(headline))


if __name__ == "__main__":
    main()
