"""F1 as an `evaluate` module shipped with hf_gru: loads by local path, offline; the math is in `_scoring.py`."""

import evaluate

from ._scoring import CLASS_ID_ARGS, class_id_info, prf

_DESCRIPTION = (
    "F1 = 2 * precision * recall / (precision + recall) = 2TP / (2TP + FP + FN), per class and then averaged."
)
_KWARGS_DESCRIPTION = CLASS_ID_ARGS.format(name="f1", zero_case="e.g. never predicted", example="0.7777777777777777")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    """Single-label f1 (binary and multi-class) implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return class_id_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, **options):
        """Options: average, labels, pos_label, sample_weight, zero_division (see `_KWARGS_DESCRIPTION`)."""
        return {"f1": prf("f1", predictions, references, **options)}
