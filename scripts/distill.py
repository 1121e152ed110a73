#!/usr/bin/env python
"""Distil a transformers classifier into a GRU student: the options of `scripts/train.py` plus the teacher's.

The same library call as `hf-gru distill`, so both accept the same options and leave the same output directory:

    python scripts/distill.py --dataset ../shared/data/sst2 --output_dir outputs/sst2-distilled \\
        --teacher_base sentence-transformers/all-MiniLM-L6-v2
    python scripts/distill.py --dataset ... --output_dir ... --teacher outputs/sst2-distilled/teacher
    python scripts/distill.py config.json          # all arguments from a JSON file
    accelerate launch --num_processes 2 scripts/distill.py --dataset ... --output_dir ... --teacher ...
"""

from __future__ import annotations

import json
import logging
import sys

import transformers
from transformers import HfArgumentParser

from hf_gru.arguments import DataArguments, GRUTrainingArguments, ModelArguments
from hf_gru.distillation import DistillationArguments, parse_distillation_arguments, run_distillation

logger = logging.getLogger(__name__)


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments, DistillationArguments))
        args = parser.parse_json_file(json_file=sys.argv[1])
    else:
        args = parse_distillation_arguments(sys.argv[1:])

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(args[2].get_process_log_level())
    outcome = run_distillation(*args)
    if outcome.is_main_process:
        headline = {k: v for k, v in outcome.metrics.items() if k.endswith(("_accuracy", "_f1_macro"))}
        print(json.dumps(headline))


if __name__ == "__main__":
    main()
