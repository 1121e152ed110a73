"""Precision as an `evaluate` module shipped with hf_gru: loads by local path, offline; the math is in `_scoring.py`."""

import evaluate

from ._scoring import CLASS_ID_ARGS, class_id_info, prf

_DESCRIPTION = "Precision = TP / (TP + FP), per class and then averaged."
_KWARGS_DESCRIPTION = CLASS_ID_ARGS.format(
    name="precision", zero_case="e.g. never predicted", example="0.8333333333333334"
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Precision(evaluate.Metric):
    """Single-label precision (binary and multi-class) implemented with numpy (no scikit-learn dependency)."""

    def _info(self) -> evaluate.MetricInfo:
        return class_id_info(_DESCRIPTION, _KWARGS_DESCRIPTION)

    def _compute(self, predictions, references, **options):
        """Options: average, labels, pos_label, sample_weight, zero_division (see `_KWARGS_DESCRIPTION`)."""
        return {"precision": prf("precision", predictions, references, **options)}
