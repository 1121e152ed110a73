"""The peers of hf_gru's multi-label and regression rows: what a user would fit instead, on plain arrays.

    python benchmarks/label_peers.py --dataset goemotions --data-dir ../shared/data
    python benchmarks/label_peers.py --dataset emobank_valence --peers tfidf_ridge

Multi-label (targets: an `(n, L)` 0/1 array): TF-IDF + one-vs-rest logistic regression (`tfidf_ovr_lr`), fastText
`-loss ova` (`fasttext_ova`) and Model2Vec's multi-label `StaticModelForClassification` (`model2vec`). Each picks its
hyper-parameters and one global decision threshold together on validation by micro-F1. Regression (values: an `(n,)`
float array): TF-IDF + ridge (`tfidf_ridge`) and Model2Vec 0.10.0's `StaticModelForRegression` (`model2vec`), picked
by Pearson. The TF-IDF features, fastText's tokenization and training, and the Model2Vec worker are `peers.py`'s, so
the single-label and the label-space peers are the same systems. The functions take arrays rather than hf_gru's
splits, so `accuracy.py` can hand them whatever splits hf_gru trained on; run as a script, this file reads the raw
files itself (carving duee_event_types' validation split by iterative stratification) and writes
`benchmarks/results/label_peers_<dataset>.json`: the peers' own evidence, not the official rows.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, log, machine, read_json, write_json  # noqa: E402
from label_splits import load_dataset  # noqa: E402
from peers import (  # noqa: E402
    SEED,
    TFIDF_C,
    Model2VecPeer,
    fasttext_grid,
    fasttext_parameters,
    fasttext_search,
    fasttext_tokens,
    is_chinese,
    tfidf_features,
)

MULTILABEL_PEERS = ("tfidf_ovr_lr", "fasttext_ova", "model2vec")
REGRESSION_PEERS = ("tfidf_ridge", "model2vec")  # model2vec 0.10.0 has StaticModelForRegression
THRESHOLDS = np.round(np.arange(0.01, 1.0, 0.01), 2)  # the global decision thresholds tried on validation
RIDGE_ALPHA = (0.3, 1.0, 3.0, 10.0, 30.0)
NO_LABEL = "__label__none"  # fastText skips lines without a label: rows with no tags keep this one, never scored


# ------------------------------------------------------------------------------------------------------- metrics


def multilabel_metrics(scores: np.ndarray, threshold: float, gold: np.ndarray) -> dict[str, float]:
    """Micro/macro-F1 (macro over all L labels, 0 for a label never predicted nor present), subset accuracy and
    Hamming loss of `scores >= threshold` against 0/1 `gold`, both `(n, L)`."""
    from sklearn.metrics import f1_score

    predicted, gold = np.asarray(scores) >= threshold, np.asarray(gold).astype(bool)
    return {
        "f1_micro": float(f1_score(gold, predicted, average="micro", zero_division=0.0)),
        "f1_macro": float(f1_score(gold, predicted, average="macro", zero_division=0.0)),
        "subset_accuracy": float((predicted == gold).all(axis=1).mean()),
        "hamming_loss": float((predicted != gold).mean()),
    }


def regression_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Pearson (EmoBank's measure), Spearman, MSE and MAE, in the data's own units; a constant prediction's
    correlations are NaN."""
    from scipy.stats import pearsonr, spearmanr

    predicted, gold = np.asarray(predicted, dtype=float), np.asarray(gold, dtype=float)
    constant = np.ptp(predicted) == 0 or np.ptp(gold) == 0
    return {
        "pearson": float("nan") if constant else float(pearsonr(predicted, gold)[0]),
        "spearman": float("nan") if constant else float(spearmanr(predicted, gold)[0]),
        "mse": float(np.mean((predicted - gold) ** 2)),
        "mae": float(np.mean(np.abs(predicted - gold))),
    }


def pick_threshold(scores: np.ndarray, gold: np.ndarray, fixed: float | None = None) -> tuple[float, float]:
    """The global threshold of THRESHOLDS (or `fixed`) with the best micro-F1 on these rows → (threshold, micro-F1)."""
    gold = np.asarray(gold).astype(bool)
    positives = int(gold.sum())
    best = (0.5, -1.0)
    for threshold in THRESHOLDS if fixed is None else (fixed,):
        predicted = scores >= threshold
        true_positives = int((predicted & gold).sum())
        f1 = 2 * true_positives / max(1, int(predicted.sum()) + positives)
        if f1 > best[1]:
            best = (float(threshold), f1)
    return best


# ---------------------------------------------------------------------------------------------- fitted peers


class FittedPeer:
    """What a fit returns: `settings` (what was picked, with its validation figures) and `parameters`; `close()`
    ends a worker process (Model2Vec), also on leaving a `with` block."""

    def __init__(self, settings: dict[str, Any], parameters: int) -> None:
        self.settings, self.parameters = settings, parameters

    def close(self) -> None:
        """Nothing to release for the in-process peers."""

    def __enter__(self) -> FittedPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MultiLabelFit(FittedPeer):
    """`predict_scores(texts)` → `(n, L)` probabilities; a label is on where its score ≥ `threshold`."""

    threshold: float

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def predict(self, texts: list[str]) -> np.ndarray:
        return (self.predict_scores(texts) >= self.threshold).astype(np.int8)


class RegressionFit(FittedPeer):
    def predict(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


class TfidfOneVsRestFit(MultiLabelFit):
    def __init__(self, features: Any, classifier: Any, threshold: float, settings: dict[str, Any]) -> None:
        self.features, self.classifier, self.threshold = features, classifier, threshold
        sizes = [
            getattr(e, "coef_", np.zeros(0)).size + np.size(getattr(e, "intercept_", 1)) for e in classifier.estimators_
        ]
        super().__init__(settings, int(sum(sizes)))

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        return self.classifier.predict_proba(self.features.transform(texts))


class FastTextOvaFit(MultiLabelFit):
    def __init__(self, model: Any, labels: int, threshold: float, settings: dict[str, Any]) -> None:
        self.model, self.labels, self.threshold = model, labels, threshold
        super().__init__(settings, fasttext_parameters(model))

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        names, probabilities = self.model.predict([fasttext_tokens(t) for t in texts], k=-1, threshold=0.0)
        scores = np.zeros((len(texts), self.labels), dtype=np.float32)
        for row, (row_names, row_probabilities) in enumerate(zip(names, probabilities)):
            for name, probability in zip(row_names, row_probabilities):
                if name != NO_LABEL:
                    scores[row, int(name[len("__label__") :])] = probability
        return np.clip(scores, 0.0, 1.0)  # fastText adds 1e-5 to every probability


class TfidfRidgeFit(RegressionFit):
    def __init__(self, features: Any, regressor: Any, settings: dict[str, Any]) -> None:
        self.features, self.regressor = features, regressor
        super().__init__(settings, int(regressor.coef_.size + 1))

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.regressor.predict(self.features.transform(texts))


class Model2VecMultiLabelFit(MultiLabelFit):
    """Model2Vec's multi-label classifier in the peers' venv (`peers.Model2VecPeer`'s worker)."""

    def __init__(self, peer: Model2VecPeer, labels: int, settings: dict[str, Any]) -> None:
        self.peer, self.labels, self.threshold = peer, labels, 0.5
        super().__init__(settings, peer.parameters())

    def predict_scores(self, texts: list[str]) -> np.ndarray:
        answer = self.peer.call("outputs", texts=texts)
        scores = np.zeros((len(texts), self.labels), dtype=np.float32)  # a label with no train row: 0
        scores[:, [int(name) for name in answer["classes"]]] = np.asarray(answer["scores"], dtype=np.float32)
        return scores

    def close(self) -> None:
        self.peer.close()


class Model2VecRegressionFit(RegressionFit):
    """Model2Vec's `StaticModelForRegression` in the peers' venv."""

    def __init__(self, peer: Model2VecPeer, settings: dict[str, Any]) -> None:
        self.peer = peer
        super().__init__(settings, peer.parameters())

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.peer.call("outputs", texts=texts)["values"], dtype=float)

    def close(self) -> None:
        self.peer.close()


# --------------------------------------------------------------------------------------------------------- fits


def fit_multilabel_peer(
    key: str,
    train_texts: list[str],
    train_targets: np.ndarray,
    val_texts: list[str],
    val_targets: np.ndarray,
    language: str | None = None,
    settings: dict[str, Any] | None = None,
) -> MultiLabelFit:
    """Fit multi-label peer `key` on train, picking its settings and global threshold on validation (micro-F1).

    `language`: "zh…" (or "chinese") takes the Chinese TF-IDF features, anything else English; None detects it from
    the texts. `settings` holds any picked value fixed (C, lr, epoch, wordNgrams, threshold; max_epochs for
    Model2Vec), as `peers.py` does for `speed.py`'s refits."""
    if key not in MULTILABEL_PEERS:
        raise ValueError(f"unknown multi-label peer {key!r}; choose one of {', '.join(MULTILABEL_PEERS)}")
    train_targets = _targets(train_texts, train_targets, "train")
    val_targets = _targets(val_texts, val_targets, "validation", train_targets.shape[1])
    chinese = _chinese(language, train_texts)
    settings = dict(settings or {})
    fit = {"tfidf_ovr_lr": _fit_tfidf_ovr_lr, "fasttext_ova": _fit_fasttext_ova, "model2vec": _fit_model2vec}[key]
    return fit(list(train_texts), train_targets, list(val_texts), val_targets, chinese, settings)


def fit_regression_peer(
    key: str,
    train_texts: list[str],
    train_values: np.ndarray,
    val_texts: list[str],
    val_values: np.ndarray,
    language: str | None = None,
    settings: dict[str, Any] | None = None,
) -> RegressionFit:
    """Fit regression peer `key` on train, its settings picked on validation by Pearson (`language` and `settings`
    as in `fit_multilabel_peer`; alpha for ridge)."""
    if key not in REGRESSION_PEERS:
        raise ValueError(f"unknown regression peer {key!r}; choose one of {', '.join(REGRESSION_PEERS)}")
    train_values = _values(train_texts, train_values, "train")
    val_values = _values(val_texts, val_values, "validation")
    chinese = _chinese(language, train_texts)
    settings = dict(settings or {})
    fit = {"tfidf_ridge": _fit_tfidf_ridge, "model2vec": _fit_model2vec}[key]
    return fit(list(train_texts), train_values, list(val_texts), val_values, chinese, settings)


def _fit_tfidf_ovr_lr(
    texts: list[str], targets: np.ndarray, val_texts: list[str], val_targets: np.ndarray, chinese: bool, settings: dict
) -> MultiLabelFit:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    features = tfidf_features(chinese)
    x_train, x_validation = features.fit_transform(texts), features.transform(val_texts)
    best = None
    for c in (settings["C"],) if "C" in settings else TFIDF_C:
        with warnings.catch_warnings():  # a label with no positive row in train: a constant 0, as it should be
            warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
            classifier = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000)).fit(x_train, targets)
        threshold, f1 = pick_threshold(classifier.predict_proba(x_validation), val_targets, settings.get("threshold"))
        if best is None or f1 > best[0]:
            best = (f1, c, threshold, classifier)
    f1, c, threshold, classifier = best
    picked = {"C": c, "threshold": threshold, "validation_f1_micro": round(f1, 4), "features": int(x_train.shape[1])}
    return TfidfOneVsRestFit(features, classifier, threshold, picked)


def _fit_fasttext_ova(
    texts: list[str], targets: np.ndarray, val_texts: list[str], val_targets: np.ndarray, chinese: bool, settings: dict
) -> MultiLabelFit:
    labels = targets.shape[1]
    lines = (
        " ".join([f"__label__{j}" for j in np.flatnonzero(row)] or [NO_LABEL]) + " " + fasttext_tokens(text)
        for text, row in zip(texts, targets)
    )

    def score(model: Any) -> tuple[float, dict[str, Any]]:
        scores = FastTextOvaFit(model, labels, 0.5, {}).predict_scores(val_texts)
        threshold, f1 = pick_threshold(scores, val_targets, settings.get("threshold"))
        return f1, {"threshold": threshold}

    f1, picked, model, grid_size = fasttext_search(lines, fasttext_grid(settings), score, loss="ova", seeded_start=True)
    picked = {**picked, "validation_f1_micro": round(f1, 4), "grid_size": grid_size}
    return FastTextOvaFit(model, labels, picked["threshold"], picked)


def _fit_tfidf_ridge(
    texts: list[str], values: np.ndarray, val_texts: list[str], val_values: np.ndarray, chinese: bool, settings: dict
) -> RegressionFit:
    from sklearn.linear_model import Ridge

    features = tfidf_features(chinese)
    x_train, x_validation = features.fit_transform(texts), features.transform(val_texts)
    best = None
    for alpha in (settings["alpha"],) if "alpha" in settings else RIDGE_ALPHA:
        regressor = Ridge(alpha=alpha).fit(x_train, values)
        pearson = np.nan_to_num(regression_metrics(regressor.predict(x_validation), val_values)["pearson"], nan=-1.0)
        if best is None or pearson > best[0]:
            best = (float(pearson), alpha, regressor)
    pearson, alpha, regressor = best
    picked = {"alpha": alpha, "validation_pearson": round(pearson, 4), "features": int(x_train.shape[1])}
    return TfidfRidgeFit(features, regressor, picked)


def _fit_model2vec(
    texts: list[str], targets: np.ndarray, val_texts: list[str], val_targets: np.ndarray, chinese: bool, settings: dict
) -> Model2VecMultiLabelFit | Model2VecRegressionFit:
    """Model2Vec as `peers.Model2VecPeer` fits it (MiniLM distilled, PCA 256, the library's default head), early
    stopped on our validation split; multi-label rows go as lists of label names (column numbers)."""
    if chinese:
        raise ValueError(
            "model2vec: the peers' Model2Vec is distilled from English all-MiniLM-L6-v2 and runs on English sets "
            "only (as in accuracy.py); leave it out for Chinese data"
        )
    multilabel = targets.ndim == 2
    if multilabel:
        rows = {"train": [texts, _label_lists(targets)], "validation": [val_texts, _label_lists(val_targets)]}
    else:
        rows = {"train": [texts, targets.tolist()], "validation": [val_texts, val_targets.tolist()]}
    problem_type = "multi_label_classification" if multilabel else "regression"
    peer = Model2VecPeer()
    try:
        started = time.perf_counter()
        answer = peer.call(
            "fit", seed=SEED, max_epochs=settings.get("max_epochs", -1), problem_type=problem_type, **rows
        )
        answer["train_seconds"] = round(time.perf_counter() - started, 1)
        if not multilabel:
            fitted = Model2VecRegressionFit(peer, answer)
            answer["validation_pearson"] = round(
                regression_metrics(fitted.predict(val_texts), val_targets)["pearson"], 4
            )
            return fitted
        fitted = Model2VecMultiLabelFit(peer, targets.shape[1], answer)
        fitted.threshold, f1 = pick_threshold(fitted.predict_scores(val_texts), val_targets, settings.get("threshold"))
        answer.update(threshold=fitted.threshold, validation_f1_micro=round(f1, 4))
        return fitted
    except BaseException:
        peer.close()
        raise


def _label_lists(targets: np.ndarray) -> list[list[str]]:
    return [[str(j) for j in np.flatnonzero(row)] for row in targets]


# ------------------------------------------------------------------------------------------------- validation


def _chinese(language: str | None, texts: list[str]) -> bool:
    if language is None:
        return is_chinese(list(texts))
    return language.lower().startswith("zh") or language.lower() == "chinese"


def _targets(texts: list[str], targets: Any, split: str, labels: int | None = None) -> np.ndarray:
    """An `(n, L)` 0/1 int array matching `texts`, or a one-line error naming the problem."""
    targets = np.asarray(targets)
    if targets.ndim != 2 or targets.shape[0] != len(texts):
        raise ValueError(
            f"{split} targets have shape {targets.shape}; expected ({len(texts)}, labels): one 0/1 row per text"
        )
    if labels is not None and targets.shape[1] != labels:
        raise ValueError(
            f"{split} targets have {targets.shape[1]} label columns, train has {labels}; use one label order"
        )
    if not np.isin(targets, (0, 1)).all():
        raise ValueError(f"{split} targets hold values other than 0 and 1; pass a multi-hot array")
    if labels is None and not targets.any():
        raise ValueError("train targets have no positive label at all; nothing to learn")
    return targets.astype(np.int8)


def _values(texts: list[str], values: Any, split: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.shape[0] != len(texts):
        raise ValueError(f"{split} values have shape {values.shape}; expected ({len(texts)},): one number per text")
    if not np.isfinite(values).all():
        raise ValueError(f"{split} values hold NaN or infinity at row {int(np.flatnonzero(~np.isfinite(values))[0])}")
    return values


# ------------------------------------------------------------------------------------------------- the script


def evaluate_peers(dataset_dir: Path, keys: list[str] | None = None) -> dict[str, Any]:
    """Fit each peer on the dataset's train (choices on validation), then its test metrics, times and settings."""
    data = load_dataset(dataset_dir)
    train, validation, test = (data["splits"][split] for split in ("train", "validation", "test"))
    problem = data["problem_type"]
    multilabel = problem == "multi_label_classification"
    chinese = is_chinese(train[0])
    keys = keys or list(MULTILABEL_PEERS if multilabel else REGRESSION_PEERS)
    result: dict[str, Any] = {
        "dataset": dataset_dir.name, "problem_type": problem, "language": "zh" if chinese else "en",
        "labels": data["labels"], "validation_carved": data["validation_carved"],
        "rows": {"train": len(train[0]), "validation": len(validation[0]), "test": len(test[0])},
        "machine": machine(), "peers": {},
    }  # fmt: skip
    for key in keys:
        if key == "model2vec" and chinese:
            result["peers"][key] = {"skipped": "distilled from English all-MiniLM-L6-v2: English sets only"}
            continue
        log(f"[{dataset_dir.name}] fitting {key}")
        fit = fit_multilabel_peer if multilabel else fit_regression_peer
        started = time.perf_counter()
        with fit(key, *train, *validation, "zh" if chinese else "en") as fitted:
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            if multilabel:
                metrics = multilabel_metrics(fitted.predict_scores(test[0]), fitted.threshold, test[1])
            else:
                metrics = regression_metrics(fitted.predict(test[0]), test[1])
            result["peers"][key] = {
                "test": {name: round(value, 4) for name, value in metrics.items()},
                "settings": fitted.settings, "parameters": fitted.parameters,
                "fit_seconds": round(fit_seconds, 1), "predict_seconds": round(time.perf_counter() - started, 2),
            }  # fmt: skip
        log(f"[{dataset_dir.name}] {key}: {result['peers'][key]['test']} {fitted.settings} in {fit_seconds:.0f} s")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="a folder name under --data-dir, e.g. goemotions")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--peers", nargs="+", help="peer keys (default: every peer of the dataset's problem type)")
    args = parser.parse_args(argv)
    name = f"label_peers_{args.dataset}.json"
    result = evaluate_peers(args.data_dir / args.dataset, args.peers)
    if args.peers and (earlier := read_json(name)):  # a run over some peers keeps the others' rows
        result["peers"] = {**earlier.get("peers", {}), **result["peers"]}
    print(f"wrote {write_json(name, result)}")


if __name__ == "__main__":
    main()
