"""Model2Vec, run inside the peers' own virtual environment (`benchmarks/.peers-venv`) by `peers.Model2VecPeer`.

It answers one JSON line per JSON line on stdin (`{"command": ...}`), so that the project's environment never imports
`model2vec` (whose `distill` extra needs `transformers<5.4`). Timings are taken here, around `predict` alone.
Standard output carries answers only: everything else goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Worker:
    def __init__(self) -> None:
        self.static: Any = None
        self.pipeline: Any = None

    def distill(self, source: str, output: str, pca_dims: int) -> dict[str, Any]:
        """Distil the static model once (cached in `output`), from the sentence transformer folder `source`."""
        from model2vec import StaticModel
        from model2vec.distill import distill

        started = time.perf_counter()
        if (Path(output) / "config.json").is_file():
            self.static = StaticModel.from_pretrained(output)
            cached = True
        else:
            self.static = distill(model_name=source, pca_dims=pca_dims)
            self.static.save_pretrained(output)
            cached = False
        return {"cached": cached, "seconds": round(time.perf_counter() - started, 1), "dims": int(self.static.dim)}

    def fit(
        self,
        train: list[list[Any]],
        validation: list[list[Any]],
        seed: int,
        max_epochs: int = -1,
        problem_type: str = "single_label_classification",
    ) -> dict[str, Any]:
        """Its classifier (`StaticModelForClassification`, defaults) or regressor (`StaticModelForRegression`),
        early-stopped on our validation split (`max_epochs` -1: until early stopping, the library's default; a quick
        run caps it). `problem_type` is transformers' word: multi-label rows hold lists of label names, regression
        rows numbers (one-value vectors for Model2Vec, as its README says)."""
        import torch

        torch.manual_seed(seed)
        texts, labels = train
        validation_texts, validation_labels = validation
        if problem_type == "regression":
            from model2vec.train import StaticModelForRegression

            model = StaticModelForRegression.from_static_model(model=self.static)
            targets, validation_targets = [[float(y)] for y in labels], [[float(y)] for y in validation_labels]
        else:
            from model2vec.train import StaticModelForClassification

            model = StaticModelForClassification.from_static_model(model=self.static)
            if problem_type == "multi_label_classification":  # lists: Model2Vec's multi-label mode
                known = {str(label) for row in labels for label in row}  # it refuses validation names unseen in train
                targets = [[str(label) for label in row] for row in labels]
                validation_targets = [[str(y) for y in row if str(y) in known] for row in validation_labels]
            else:
                targets, validation_targets = [str(y) for y in labels], [str(y) for y in validation_labels]
        model.fit(
            texts, targets, X_val=validation_texts, y_val=validation_targets, random_seed=seed, device="cpu",
            max_epochs=max_epochs,
        )  # fmt: skip
        self.parameters = sum(p.numel() for p in model.parameters())
        self.pipeline = model.to_pipeline()  # the numpy inference route Model2Vec documents for deployment
        answer = {"head": "default (1 hidden layer, 512)"}
        if problem_type == "single_label_classification":
            predicted = self.predict(validation_texts)["labels"]
            correct = sum(int(p == y) for p, y in zip(predicted, validation_labels))
            answer = {"validation_accuracy": round(correct / len(predicted), 4), **answer}
        return answer

    def predict(self, texts: list[str]) -> dict[str, Any]:
        return {"labels": [int(label) for label in self.pipeline.predict(texts, use_multiprocessing=False)]}

    def outputs(self, texts: list[str]) -> dict[str, Any]:
        """Multi-label: every class's sigmoid score (with the class names, in Model2Vec's order); regression: values."""
        from model2vec.inference.mlp import Activation

        if self.pipeline.head.activation == Activation.IDENTITY:
            return {"values": self.pipeline.predict(texts, use_multiprocessing=False)[:, 0].tolist()}
        scores = self.pipeline.predict_proba(texts, use_multiprocessing=False)
        return {"classes": [str(name) for name in self.pipeline.classes_], "scores": scores.tolist()}

    def time(self, batches: list[list[str]]) -> dict[str, Any]:
        """Seconds of `predict` per batch, measured here: the pipe's traffic stays outside the clock."""
        seconds = []
        for batch in batches:
            start = time.perf_counter()
            self.pipeline.predict(batch, use_multiprocessing=False)
            seconds.append(time.perf_counter() - start)
        return {"seconds": seconds}

    def get_parameters(self) -> dict[str, Any]:
        return {"parameters": int(self.parameters)}


def main() -> None:
    answers, sys.stdout = sys.stdout, sys.stderr  # libraries that print must not break the protocol
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("command")
        try:
            handler = worker.get_parameters if command == "parameters" else getattr(worker, command)
            answer = handler(**request)
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
            traceback.print_exc(file=sys.stderr)
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
