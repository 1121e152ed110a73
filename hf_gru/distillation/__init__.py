"""Distillation: a fast GRU student from any transformers sequence classifier (Tang et al. 2019).

`run_distillation` (the engine behind `hf-gru distill` and `scripts/distill.py`), its arguments, the teacher's
fine-tuning and cached labelling and Tang's augmentation. The student's start (the teacher's tokenizer and
embeddings) is `hf_gru.encoders`, shared with every engine.
"""

from .arguments import DistillationArguments, parse_distillation_arguments
from .augment import AugmentationSettings, augment_texts
from .engine import DistillationTrainer, distill, distillation_loss, run_distillation
from .teacher import TeacherSettings, fine_tune_teacher, label_texts, load_teacher

__all__ = [
    "AugmentationSettings",
    "DistillationArguments",
    "DistillationTrainer",
    "TeacherSettings",
    "augment_texts",
    "distill",
    "distillation_loss",
    "fine_tune_teacher",
    "label_texts",
    "load_teacher",
    "parse_distillation_arguments",
    "run_distillation",
]
