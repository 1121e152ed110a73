"""datatrove: `GRUClassifier`, a pipeline step that labels each `Document` with a saved hf_gru model, and may drop
documents by label or score (counted in datatrove's stats, like its own filters).

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from hf_gru.integrations.datatrove import GRUClassifier

    LocalPipelineExecutor(pipeline=[
        JsonlReader("crawl/"),
        GRUClassifier("my-model", keep_labels=["positive"], min_score=0.8),
        JsonlWriter("kept/"),
    ], tasks=8, logging_dir="logs/").run()

Each task loads the model once, on its first documents (ONNX Runtime, one thread: scale with tasks). Texts are
classified exactly as `hf-gru predict` classifies them (`Classifier.classify`, long documents clipped the same way),
in batches of `batch_size` documents sorted by length; the fields are predict's (`label`, `score`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import require
from .columns import prediction_fields

require("datatrove")

from datatrove.data import Document  # noqa: E402
from datatrove.pipeline.filters.base_filter import BaseFilter  # noqa: E402


class GRUClassifier(BaseFilter):
    """Writes `label` and `score` (names after `metadata_prefix`) into each document's metadata.

    keep_labels: keep only documents given one of these labels; drop_labels: drop documents given one of these;
    min_score: drop documents whose score is below it (with keep_labels: "this label, at least this sure").
    Dropped documents are counted as `dropped_label_<label>` or `dropped_low_score` (and go to `exclusion_writer`),
    every label as `label_<label>`. A blank document gets no label: it is dropped by keep_labels and min_score.
    batch_size: documents classified together (sorted by length inside); model_batch_size: texts per model call.
    """

    name = "🐦 hf_gru classifier"

    def __init__(
        self,
        model: str,
        *,
        keep_labels: Iterable[str] | None = None,
        drop_labels: Iterable[str] | None = None,
        min_score: float | None = None,
        metadata_prefix: str = "",
        backend: str | None = "onnx",
        precision: str = "fp32",
        threads: int | None = 1,
        batch_size: int = 2048,
        model_batch_size: int = 64,
        exclusion_writer: Any = None,
    ):
        from ..backends import check_positive

        super().__init__(exclusion_writer, batch_size=check_positive(batch_size, "batch_size"))
        self.model, self.backend, self.precision, self.threads = model, backend, precision, threads
        self.model_batch_size = check_positive(model_batch_size, "model_batch_size")
        self.keep_labels = None if keep_labels is None else frozenset(keep_labels)
        self.drop_labels = None if drop_labels is None else frozenset(drop_labels)
        if self.keep_labels is not None and self.drop_labels is not None:
            raise ValueError(
                "pass keep_labels or drop_labels, not both (a document kept by one is dropped by the other)"
            )
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise ValueError(f"min_score must be a probability between 0 and 1, got {min_score}")
        self.min_score, self.metadata_prefix = min_score, metadata_prefix
        self._check_labels()
        self._classifier = None

    def _check_labels(self) -> None:
        """Label names the model does not have are refused here, in the driver, not in every task."""
        if self.keep_labels is None and self.drop_labels is None:
            return
        from transformers import AutoConfig

        from ..hub import local_model

        known = set(AutoConfig.from_pretrained(local_model(self.model)).id2label.values())
        unknown = sorted((self.keep_labels or self.drop_labels or frozenset()) - known)
        if unknown:
            raise ValueError(f"label(s) {', '.join(unknown)} are not labels of {self.model}; it has: "
                             f"{', '.join(sorted(known))}")  # fmt: skip

    @property
    def classifier(self) -> Any:
        """The backend, loaded on first use in the task that runs the step (never pickled to it)."""
        if self._classifier is None:
            from ..backends import load_backend
            from ..hub import local_model

            self._classifier = load_backend(
                local_model(self.model), backend=self.backend, precision=self.precision, threads=self.threads
            )
        return self._classifier

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_classifier": None}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        from ..data.records import record_text

        texts = [record_text({"text": doc.text}, ("text",)) for doc in batch]
        predictions = self.classifier.classify(texts, batch_size=self.model_batch_size, chunk_size=max(1, len(texts)))
        decisions = []
        for doc, prediction in zip(batch, predictions):
            doc.metadata.update(prediction_fields(prediction, prefix=self.metadata_prefix))
            if prediction.label is not None:
                self.stat_update(f"label_{prediction.label}")
            decisions.append(self._decide(prediction.label, prediction.score))
        return decisions

    def _decide(self, label: str | None, score: float | None) -> bool | tuple[bool, str]:
        if self.keep_labels is not None and label not in self.keep_labels:
            return False, f"label_{label}"
        if self.drop_labels is not None and label in self.drop_labels:
            return False, f"label_{label}"
        if self.min_score is not None and (score is None or score < self.min_score):
            return False, "low_score"
        return True
