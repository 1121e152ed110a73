#!/usr/bin/env python
"""Fine-tune a GRU text classifier with the HF `Trainer`, in the shape of transformers' `run_classification.py`.

Model, data and training arguments are three dataclasses read by `HfArgumentParser`; the work is done by the same
library calls as `hf-gru train`, so both accept the same options and leave the same output directory:

    python scripts/train.py --dataset ../shared/data/sst2 --output_dir outputs/sst2 --num_train_epochs 5
    python scripts/train.py config.json          # all arguments from a JSON file
    accelerate launch --num_processes 2 scripts/train.py --dataset ... --output_dir ...
"""

from __future__ import annotations

import json
import logging
import sys

import transformers
from transformers import HfArgumentParser

from hf_gru.arguments import DataArguments, GRUTrainingArguments, ModelArguments, parse_training_arguments
from hf_gru.training import run_training

logger = logging.getLogger(__name__)


def main() -> None:
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        parser = HfArgumentParser((ModelArguments, DataArguments, GRUTrainingArguments))
        model_args, data_args, training_args = parser.parse_json_file(json_file=sys.argv[1])
    else:
        model_args, data_args, training_args = parse_training_arguments(sys.argv[1:])

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    logger.info("model %s | data %s", model_args, data_args)

    outcome = run_training(model_args, data_args, training_args)
    if outcome.is_main_process:
        headline = {k: v for k, v in outcome.metrics.items() if k.endswith(("_accuracy", "_f1_macro"))}
        print(json.dumps(headline))


if __name__ == "__main__":
    main()
