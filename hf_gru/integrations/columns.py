"""Predictions → the fields an engine stores beside each text (Ray columns, datatrove metadata): one mapping.

The fields are `hf_gru.predict.prediction_record`'s (what `hf-gru predict` writes), less the text the engine already
holds, so every engine follows predict's answers for every kind of model without deciding anything itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backends import Prediction
from ..predict import prediction_record

LOGITS = "logits"


def prediction_fields(prediction: Prediction, *, prefix: str = "", logits: bool = False) -> dict[str, Any]:
    """`{label, score}` (whatever predict writes, less `text`), names prefixed; `logits` (a list) when asked."""
    fields = {prefix + name: value for name, value in prediction_record(prediction).items() if name != "text"}
    if logits:
        fields[prefix + LOGITS] = None if prediction.logits is None else prediction.logits.tolist()
    return fields


def prediction_columns(
    predictions: Sequence[Prediction], *, prefix: str = "", logits: bool = False
) -> dict[str, list[Any]]:
    """`prediction_fields` of each prediction as columns (name → one value a row), in the predictions' order."""
    rows = [prediction_fields(prediction, prefix=prefix, logits=logits) for prediction in predictions]
    if not rows:
        rows = [prediction_fields(Prediction(text="", label=None, score=None), prefix=prefix, logits=logits)]
        return {name: [] for name in rows[0]}
    return {name: [row[name] for row in rows] for name in rows[0]}
