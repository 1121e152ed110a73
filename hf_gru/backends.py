"""Classifying texts with a saved model on a backend: batched, length-sorted, the same batches on either backend.

Two backends run the same batches: PyTorch (`TorchClassifier`, any device) and ONNX Runtime (`OnnxClassifier`, CPU,
on the graph `hf-gru export` writes to `<model>/onnx/`). `load_backend` picks one and loads it; file prediction and
evaluation (`hf_gru.predict`) and the HTTP server sit on it. `pipeline("text-classification")` works too, but handles
one text at a time unless told otherwise.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .data import BatchEncoder, clip_text, resolve_max_length
from .hardware import default_device
from .run_directory import (
    CONFIG_FILE,
    ONNX_DIR,
    ONNX_INT8_FILE,
    ONNX_MODEL_FILE,
    ONNX_SOURCE_FILE,
    TOKENIZER_CONFIG_FILE,
    WEIGHTS_FILE,
    export_is_fresh,
)
from .tokenization import load_tokenizer

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "int8")
INSTALL_HINT = "install the ONNX extra: pip install 'hf-gru[onnx]'"


@dataclass
class Prediction:
    text: str
    label: str | None
    score: float | None
    logits: np.ndarray | None = field(default=None, repr=False)  # the model's raw row, for callers that ask for it


LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(text: str) -> str:
    """`text` with each lone surrogate (JSON's "\\ud800", which the tokenizer refuses) replaced by U+FFFD, as decoding
    with errors="replace" does for an undecodable byte. Only a non-ASCII text that is not valid UTF-8 is searched."""
    if text.isascii() or text.encode("utf-8", "surrogatepass").decode("utf-8", "ignore") == text:
        return text
    return LONE_SURROGATE.sub("\ufffd", text)


def check_positive(value: int | None, option: str) -> int | None:
    """A batch size or thread count below 1 is a usage error (it used to label everything with one class)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{option} must be a positive integer, got {value!r}")
    return value


def load_classifier(
    model_dir: str | Path, *, device: str | torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on `device`) and the tokenizer saved beside it, with a clear error for a wrong directory."""
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ValueError(
            f"{model_dir} is not a saved model: {CONFIG_FILE} is missing. Pass the --output_dir of `hf-gru train` "
            "(or any directory written by save_pretrained)."
        )
    device = _resolve_device(device)
    model = _from_pretrained(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    model.to(device).eval()
    return model, tokenizer


def _from_pretrained(model_dir: Path) -> PreTrainedModel:
    """`from_pretrained`, with the known ways a model folder is broken turned into one line naming file and fix."""
    from safetensors import SafetensorError

    try:
        return AutoModelForSequenceClassification.from_pretrained(model_dir)
    except SafetensorError as error:
        raise ValueError(
            f"{model_dir / WEIGHTS_FILE} is damaged or truncated ({error}); copy it again from where the model was "
            "trained or pushed, or retrain"
        ) from error
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{model_dir} holds pickle weights (pytorch_model.bin) that would run code when loaded, so loading them "
            "was refused; use a model saved as model.safetensors (save_pretrained writes it), or convert a file you "
            "trust with transformers' own tools"
        ) from error
    except RuntimeError as error:
        if "mismatched" not in str(error) and "size mismatch" not in str(error):
            raise
        raise ValueError(
            f"{model_dir / CONFIG_FILE} does not match the weights in {model_dir} (a tensor has another shape, e.g. "
            "vocab_size or hidden_size was edited); restore the config.json saved with these weights"
        ) from error


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """The device, refused with the fix when this torch build cannot use it (instead of a deep traceback later)."""
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        message = f"--device {device!r} is not a device torch knows ({error}); use cpu, cuda or cuda:N"
        raise ValueError(message) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
            raise ValueError(f"--device {device} is not available here ({build}); use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return resolved


def import_onnxruntime() -> ModuleType:
    """`onnxruntime`, or an ImportError that says how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(f"onnxruntime is not installed; {INSTALL_HINT}") from error
    return onnxruntime


def onnx_session(path: str | Path, *, threads: int | None = None):
    """A CPU `InferenceSession` with all graph optimisations.

    `threads` (intra-op) defaults to 1: the GRU's per-step matrix products are too small to split across threads
    well, and on a busy host a thread pool that waits at every step is several times slower (measured: batch-1 p50
    1.9 ms on one thread against 9.4 ms on two). Idle workers sleep instead of spinning, so they never steal cores.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = 1 if threads is None else threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------------- backends


class Classifier(ABC):
    """A model behind one call: texts in, logits out. Subclasses only run a padded batch of token ids."""

    name: str
    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    concurrent_batches: int = 1  # batches `predict_logits` runs at once (their model calls release the GIL)

    def __init__(self, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None):
        self.config, self.tokenizer = config, tokenizer
        self.max_length = resolve_max_length(tokenizer, max_length)
        self.batch_encoder = BatchEncoder(tokenizer, self.max_length)

    @abstractmethod
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Logits `(batch, num_labels)` float32 for int64 `(batch, sequence)` ids and mask."""

    def forward_one_thread(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """`forward` as one worker of `predict_logits` runs it (a backend that spreads a batch over cores: on one)."""
        return self.forward(input_ids, attention_mask)

    def _run_clipped(self, clipped: list[str]) -> np.ndarray:
        """Tokenize and run clipped texts on one thread: a worker's whole job once the encoder is thread-safe."""
        return self.forward_one_thread(*self.batch_encoder(clipped))

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer call training used: truncation at the model's length, padding to the longest text."""
        return self.batch_encoder(self.clipped(texts))

    def clipped(self, texts: list[str]) -> list[str]:
        """Texts as the tokenizer gets them: lone surrogates replaced (it refuses them), long ones clipped."""
        return [clip_text(replace_lone_surrogates(text), self.tokenizer, self.max_length) for text in texts]

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits of one batch, as given (no sorting): what a service calls per request."""
        if not texts:
            return np.zeros((0, self.config.num_labels), dtype=np.float32)
        return self.forward(*self.encode(texts))

    def predict_logits(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """Logits `(len(texts), num_labels)` in input order; texts are batched by length so padding stays small."""
        check_positive(batch_size, "--batch-size")
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        logits = np.zeros((len(texts), self.config.num_labels), dtype=np.float32)
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        if self.concurrent_batches <= 1 or len(batches) <= 1:
            for index in batches:
                logits[index] = self.logits([texts[i] for i in index])
            return logits

        # Up to N batches at once in workers. The transformers wrapper changes its settings on every call, so it is
        # not safe to share across threads: it runs here; the direct backend (fixed settings) runs in the workers.
        with ThreadPoolExecutor(self.concurrent_batches) as pool:
            running: deque[tuple[list[int], Future[np.ndarray]]] = deque()
            for index in batches:
                if len(running) >= self.concurrent_batches:
                    done, future = running.popleft()
                    logits[done] = future.result()
                clipped = self.clipped([texts[i] for i in index])
                if self.batch_encoder.thread_safe:
                    running.append((index, pool.submit(self._run_clipped, clipped)))
                else:
                    running.append((index, pool.submit(self.forward_one_thread, *self.batch_encoder(clipped))))
            for done, future in running:
                logits[done] = future.result()
        return logits

    def classify(
        self, texts: Iterable[str | None], *, batch_size: int = 64, chunk_size: int = 2048
    ) -> Iterator[Prediction]:
        """Streams predictions for any iterable of texts, holding only `chunk_size` texts at a time.

        `None` (a blank input line) yields a prediction with no label, so outputs line up with inputs.
        """
        id2label = self.config.id2label
        multi_label = self.config.problem_type == "multi_label_classification"
        iterator = iter(texts)
        while chunk := list(islice(iterator, chunk_size)):
            present = [i for i, text in enumerate(chunk) if text is not None]
            logits = torch.from_numpy(self.predict_logits([chunk[i] for i in present], batch_size=batch_size))
            probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
            scores, ids = probabilities.max(dim=-1)
            found = dict(zip(present, zip(ids.tolist(), scores.tolist(), logits.numpy())))
            for i, text in enumerate(chunk):
                if i in found:
                    label_id, score, row = found[i]
                    yield Prediction(text=text, label=id2label[label_id], score=round(score, 6), logits=row)
                else:
                    yield Prediction(text="", label=None, score=None)


class TorchClassifier(Classifier):
    """PyTorch backend: the `transformers` model on any device; `int8` is torch dynamic quantization (CPU)."""

    name = "torch"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int | None = None):
        super().__init__(model.config, tokenizer, max_length)
        self.model = model.eval()
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.from_numpy(input_ids).to(self.device)
        mask = torch.from_numpy(attention_mask).to(self.device)
        return self.model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy()


class OnnxClassifier(Classifier):
    """ONNX Runtime backend (CPU) on a graph written by `hf-gru export`.

    Every session runs on one intra-op thread: a GRU's per-step matrix products are too small to split across
    threads (an intra-op pool synchronises at every time step, which a busy host punishes). Cores are used by whole
    rows instead, which need no synchronisation: `threads=N` (default: the cores this process may use, at most 8)
    runs N batches of `predict_logits` at once, and splits one large batch (`logits`, `forward`) into N groups of
    rows of similar length run at once. Each thread runs its rows as one or more session calls of rows of similar
    token length (`length_groups`), each trimmed of the padding its rows do not need.
    """

    name = "onnx"
    min_rows_per_part = 8  # below this, handing rows to another thread costs more than it saves
    # A session call's fixed cost in GRU row-steps (one row, one time step): measured on the sst2 student, about
    # 30 us a call against 3-4 us a row-step, single-threaded.
    call_cost_in_steps = 10

    def __init__(
        self,
        path: str | Path,
        config: PretrainedConfig,
        tokenizer: PreTrainedTokenizerBase,
        *,
        threads: int | None = None,
        max_length: int | None = None,
    ):
        super().__init__(config, tokenizer, max_length)
        self.path = Path(path)
        self.session = onnx_session(self.path, threads=1)
        self.concurrent_batches = threads or available_cores()
        self._row_pool: ThreadPoolExecutor | None = None

    def parts_for(self, rows: int) -> int:
        """How many groups of rows a batch of `rows` texts runs as, at once."""
        return max(1, min(self.concurrent_batches, rows // self.min_rows_per_part))

    def logits(self, texts: list[str]) -> np.ndarray:
        """One request's logits; a large one is tokenized and run as groups of texts of similar length at once."""
        parts = self.parts_for(len(texts))
        if parts <= 1 or not self.batch_encoder.thread_safe:
            return super().logits(texts)
        clipped = self.clipped(texts)
        groups = np.array_split(np.argsort([len(text) for text in clipped], kind="stable"), parts)
        futures = [self._pool().submit(self._run_clipped, [clipped[i] for i in rows]) for rows in groups]
        return self._gather(groups, futures, len(texts))

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        parts = self.parts_for(len(input_ids))
        if parts <= 1:
            return self.forward_one_thread(input_ids, attention_mask)
        groups = np.array_split(np.argsort(attention_mask.sum(axis=1), kind="stable"), parts)
        futures = [
            self._pool().submit(self.forward_one_thread, input_ids[rows], attention_mask[rows]) for rows in groups
        ]
        return self._gather(groups, futures, len(input_ids))

    def _pool(self) -> ThreadPoolExecutor:
        if self._row_pool is None:
            self._row_pool = ThreadPoolExecutor(self.concurrent_batches, thread_name_prefix="hf_gru_onnx")
        return self._row_pool

    def _gather(self, groups: list[np.ndarray], futures: list[Future[np.ndarray]], rows: int) -> np.ndarray:
        logits = np.empty((rows, self.config.num_labels), dtype=np.float32)
        for group, future in zip(groups, futures):
            logits[group] = future.result()
        return logits

    def forward_one_thread(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Rows of a batch on this thread, as one or more session calls of rows of similar token length.

        ONNX Runtime's GRU steps every row of a call up to the call's longest row, so 16 short texts with one long
        one pay the long one's steps 16 times. The rows, sorted by length, run as 1, 2, 4, ... equal groups, as
        many as make the fewest row-steps once each call's fixed cost is counted (`call_cost_in_steps`).
        """
        groups = length_groups(attention_mask.sum(axis=1), self.min_rows_per_part, self.call_cost_in_steps)
        if len(groups) <= 1:
            return self._run_trimmed(input_ids, attention_mask)
        logits = np.empty((len(input_ids), self.config.num_labels), dtype=np.float32)
        for rows in groups:
            logits[rows] = self._run_trimmed(input_ids[rows], attention_mask[rows])
        return logits

    def _run_trimmed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Rows without the edge columns where all of them are padding (the graph ignores padding)."""
        used = np.flatnonzero(attention_mask.any(axis=0))
        if len(used):
            columns = slice(used[0], used[-1] + 1)
            input_ids, attention_mask = input_ids[:, columns], attention_mask[:, columns]
        feed = {"input_ids": np.ascontiguousarray(input_ids), "attention_mask": np.ascontiguousarray(attention_mask)}
        return self.session.run(["logits"], feed)[0]


def length_groups(lengths: np.ndarray, min_rows: int, call_cost: int) -> list[np.ndarray]:
    """Row indices sorted by length, split into the 1, 2, 4, ... equal groups (of at least `min_rows` rows) that
    cost the fewest GRU row-steps, when each group steps all its rows to its longest one and a call costs
    `call_cost` row-steps more."""
    order = np.argsort(lengths, kind="stable")
    best, best_cost, parts = [order], None, 1
    while len(order) // parts >= min_rows:
        groups = np.array_split(order, parts)
        cost = sum(len(group) * int(lengths[group[-1]]) + call_cost for group in groups)
        if best_cost is None or cost < best_cost:
            best, best_cost = groups, cost
        parts *= 2
    return best


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def onnx_dir(model_dir: str | Path) -> Path:
    """Where a model's export lives: the folder itself when it holds model.onnx (an export folder), else `onnx/`."""
    model_dir = Path(model_dir)
    return model_dir if (model_dir / ONNX_MODEL_FILE).is_file() else model_dir / ONNX_DIR


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(model_dir: str | Path, backend: str | None = None, device: str | None = None) -> str:
    """`backend`, or the default: onnx when an up-to-date export exists, onnxruntime is importable and no
    accelerator was asked for; torch otherwise.

    Up to date means exported from the weights and config now in `model_dir` (their sha256, recorded by the export;
    file times cannot tell). A stale export falls back to torch with one warning, or is refused with `onnx` asked.
    An export folder given on its own (no weights beside it) is used as it is.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"--backend {backend!r} is not one of: {', '.join(BACKENDS)}")
    if backend == "torch":
        return backend
    folder = onnx_dir(model_dir)
    if backend is None and (device not in (None, "cpu") or not _onnxruntime_available()):
        return "torch"
    if not (folder / ONNX_MODEL_FILE).is_file():
        return backend or "torch"  # asked for onnx: `load_backend` names the export command
    if (Path(model_dir) / WEIGHTS_FILE).is_file() and not export_is_fresh(model_dir, folder):
        stale = (
            f"the ONNX export in {folder} was not made from the weights and config now in {model_dir} (its "
            f"{ONNX_SOURCE_FILE} does not match them)"
        )
        if backend == "onnx":
            raise ValueError(f"{stale}; re-run `hf-gru export --model {model_dir}`, or use --backend torch")
        logger.warning("%s: using the torch backend; re-run `hf-gru export --model %s` to use it", stale, model_dir)
        return "torch"
    return "onnx"


def _damaged_export(error: Exception, graph: Path, model_dir: Path, refuse: bool) -> None:
    """An export ONNX Runtime cannot load (truncated, corrupt): one line when onnx was asked for or no weights can
    stand in (ValueError: the CLI's exit 2), else a warning before the torch backend serves, as for a stale one."""
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    damaged = f"ONNX Runtime cannot load {graph} ({first}): the file is damaged or truncated"
    if refuse:
        raise ValueError(f"{damaged}; re-run `hf-gru export --model {model_dir}`, or use --backend torch") from None
    logger.warning("%s: using the torch backend; re-run `hf-gru export --model %s` to use it", damaged, model_dir)


def load_backend(
    model_dir: str | Path,
    *,
    backend: str | None = None,
    precision: str = "fp32",
    threads: int | None = None,
    device: str | None = None,
    max_length: int | None = None,
) -> Classifier:
    """A ready classifier for `model_dir` (a training output, or an export folder holding model.onnx).

    backend: "torch", "onnx" or None (onnx when `<model_dir>/onnx/model.onnx` exists, was exported from these
        weights and config, and onnxruntime is installed; see `resolve_backend`). The choice is logged.
    precision: "fp32" or "int8" (onnx: `model_int8.onnx` from `hf-gru export --quantize int8`; torch: dynamic
        quantization of the GRU and linear layers).
    threads: intra-op threads (onnx: session option; torch: `torch.set_num_threads`, process-wide).
    """
    check_positive(threads, "--threads")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of: {', '.join(PRECISIONS)}")
    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ValueError(
            f"{model_dir} is not a saved model: {CONFIG_FILE} is missing. Pass the --output_dir of `hf-gru train` "
            "(or any directory written by save_pretrained)."
        )
    asked = backend
    backend = resolve_backend(model_dir, backend, device)
    if backend == "onnx":
        import_onnxruntime()  # the install hint, before anything else
        if device not in (None, "cpu"):
            raise ValueError(f"--backend onnx runs on the CPU; drop --device {device} or use --backend torch")
        folder = onnx_dir(model_dir)
        graph = folder / (ONNX_INT8_FILE if precision == "int8" else ONNX_MODEL_FILE)
        if not graph.is_file():
            flag = " --quantize int8" if precision == "int8" else ""
            raise ValueError(f"no ONNX export at {graph}; run `hf-gru export --model {model_dir}{flag}` first")
        config = AutoConfig.from_pretrained(folder)  # hf_gru registers its model type: no remote code runs
        tokenizer = load_tokenizer(str(folder if (folder / TOKENIZER_CONFIG_FILE).is_file() else model_dir))
        try:
            classifier: Classifier = OnnxClassifier(graph, config, tokenizer, threads=threads, max_length=max_length)
            logger.info("backend: onnx (%s, %s)", precision, graph)  # once per command: which model answers
            return classifier
        except Exception as error:  # ONNX Runtime's errors share no base class but their module
            if not (isinstance(error, OSError) or type(error).__module__.startswith("onnxruntime")):
                raise
            _damaged_export(error, graph, model_dir, refuse=asked == "onnx" or not (model_dir / WEIGHTS_FILE).is_file())
    if threads is not None:
        torch.set_num_threads(threads)
    model, tokenizer = load_classifier(model_dir, device=device)
    if precision == "int8":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError("int8 (dynamic quantization) runs on the CPU; use --device cpu")
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8)
    classifier = TorchClassifier(model, tokenizer, max_length=max_length)
    logger.info("backend: torch (%s, %s, %s)", precision, classifier.device, model_dir / WEIGHTS_FILE)
    return classifier
