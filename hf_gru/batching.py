"""Dynamic batching for `hf-gru serve`: requests queue up, worker threads run them together, metrics count it all.

The event loop only queues a request and awaits its future; a worker thread per core (ONNX Runtime; one for torch,
which spreads a batch over its own intra-op threads) takes whole queued requests, oldest first, up to
`max_batch_texts` texts, tokenizes them (the Rust encoder and ONNX Runtime release the GIL), runs them as model calls
of at most `max_batch_tokens` padded tokens, rows of similar token length together, and renders each request's
response body. A request whose client went away before its batch started is dropped unrun.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # this module stays light: the CLI reads ServingLimits' defaults from it for its help
    from .backends import Classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingLimits:
    """What one request and the batches may hold; each is a `hf-gru serve` option of the same name."""

    max_batch_texts: int = 64  # texts run together (1 turns batching across requests off)
    max_batch_tokens: int = 16384  # padded tokens (rows x longest row) in one model call
    max_wait_ms: float = 2.0  # how long a batch with room waits for requests being read
    max_concurrent_requests: int = 512  # more at once are answered 429 with Retry-After
    max_input_chars: int = 20_000  # longer texts: refused (413), or clipped with "truncate": true
    max_client_batch_size: int = 32  # texts in one request (TEI's --max-client-batch-size)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            option = "--" + name.replace("_", "-")
            if name == "max_wait_ms":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                    raise ValueError(f"{option} must be a number of milliseconds, 0 or more, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a positive integer, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """A body holding `max_client_batch_size` texts of `max_input_chars` characters, each JSON-escaped
        (\\uXXXX: 6 bytes), plus room for the rest: anything larger is refused before it is read whole."""
        return self.max_client_batch_size * 6 * self.max_input_chars + 65536


class ServerError(Exception):
    """A request that cannot be answered: TEI's `{"error", "error_type"}` body with an HTTP status."""

    def __init__(self, status: int, error_type: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.error_type, self.message, self.retry_after = status, error_type, message, retry_after


@dataclass(eq=False)
class Job:
    """One request's texts, how to render its answer, and the future its handler awaits."""

    texts: list[str]
    render: Callable[[np.ndarray], bytes]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False  # set by the event loop when the client disconnects


def token_chunks(lengths: np.ndarray, width: int, max_tokens: int) -> list[np.ndarray]:
    """Row indices split into model calls of at most `max_tokens` padded tokens (rows x longest row), rows of similar
    length together; a row longer than the budget runs alone."""
    if len(lengths) * width <= max_tokens:
        return [np.arange(len(lengths))]
    chunks, current = [], []
    for row in np.argsort(lengths, kind="stable"):  # ascending: the row being added is the chunk's longest
        if current and (len(current) + 1) * max(int(lengths[row]), 1) > max_tokens:
            chunks.append(np.array(current))
            current = []
        current.append(row)
    chunks.append(np.array(current))
    return chunks


class Histogram:
    """A Prometheus histogram (cumulative buckets, sum, count); callers hold the metrics lock."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1


SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Counters and histograms shared by the event loop and the workers, rendered as Prometheus text."""

    HELP = {
        "hf_gru_request_count": ("counter", "HTTP prediction requests received"),
        "hf_gru_request_success": ("counter", "prediction requests answered"),
        "hf_gru_request_failure": ("counter", "prediction requests refused or failed, by error_type"),
        "hf_gru_request_dropped": ("counter", "requests whose client disconnected before the answer"),
        "hf_gru_texts": ("counter", "texts classified"),
        "hf_gru_request_duration_seconds": ("histogram", "time from request received to answer ready"),
        "hf_gru_queue_duration_seconds": ("histogram", "time a request waited in the queue for a batch"),
        "hf_gru_inference_duration_seconds": ("histogram", "time a batch took: tokenizing, model calls, rendering"),
        "hf_gru_batch_size": ("histogram", "texts per batch"),
        "hf_gru_batch_requests": ("histogram", "requests per batch"),
        "hf_gru_queue_size": ("gauge", "requests waiting in the queue"),
        "hf_gru_in_flight": ("gauge", "requests being served"),
    }

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, str], float] = {}
        self.histograms = {
            name: Histogram(SIZES if name.startswith("hf_gru_batch") else SECONDS)
            for name, (kind, _) in self.HELP.items()
            if kind == "histogram"
        }
        self.gauges: dict[str, Callable[[], float]] = {}

    def count(self, name: str, value: float = 1, label: str = "") -> None:
        with self.lock:
            self.counters[name, label] = self.counters.get((name, label), 0) + value

    def observe(self, name: str, value: float) -> None:
        with self.lock:
            self.histograms[name].observe(value)

    def value(self, name: str, label: str = "") -> float:
        with self.lock:
            return self.counters.get((name, label), 0)

    def render(self) -> str:
        lines = []
        with self.lock:
            for name, (kind, text) in self.HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                if kind == "counter":
                    found = {label: v for (n, label), v in self.counters.items() if n == name} or {"": 0}
                    for label, value in sorted(found.items()):
                        lines.append(f'{name}{{error_type="{label}"}} {value:g}' if label else f"{name} {value:g}")
                elif kind == "gauge":
                    lines.append(f"{name} {self.gauges[name]() if name in self.gauges else 0:g}")
                else:
                    histogram = self.histograms[name]
                    for bound, count in zip(histogram.buckets, histogram.counts):
                        lines.append(f'{name}_bucket{{le="{bound:g}"}} {count}')
                    lines += [f'{name}_bucket{{le="+Inf"}} {histogram.count}', f"{name}_sum {histogram.sum:.6f}",
                              f"{name}_count {histogram.count}"]  # fmt: skip
        return "\n".join(lines) + "\n"


class Batcher:
    """The queue and its worker threads. `submit` and `arriving` belong to the event loop; the rest to the workers.

    A worker takes whole requests, oldest first, while they fit in `max_batch_texts` (a larger request runs alone).
    While the batch has room and more requests are being read on the event loop (`arriving`), it waits for them,
    at most `max_wait_ms` after its oldest request was queued: a lone client never waits.
    """

    def __init__(
        self,
        classifier: Classifier,
        metrics: Metrics,
        *,
        max_batch_texts: int,
        max_batch_tokens: int,
        max_wait_ms: float,
        workers: int | None = None,
    ):
        self.classifier, self.metrics = classifier, metrics
        self.max_batch_texts, self.max_batch_tokens = max_batch_texts, max_batch_tokens
        self.max_wait = max_wait_ms / 1e3
        # ONNX Runtime sessions run one thread each: one worker per core. Torch spreads one call over its intra-op
        # threads, so several Python threads calling it at once would only fight over the same cores.
        self.workers = workers or (classifier.concurrent_batches if classifier.name == "onnx" else 1)
        self.arriving = 0  # requests being read or parsed on the event loop, not queued yet (GIL-atomic int)
        self._queue: deque[Job] = deque()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokenizer_lock = threading.Lock()  # the transformers wrapper changes its settings per call
        from .data.tokenize import CLIP_CHARS_PER_TOKEN

        self._clip_above = CLIP_CHARS_PER_TOKEN * classifier.max_length
        metrics.gauges["hf_gru_queue_size"] = lambda: len(self._queue)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._stopping = loop, False
        self._threads = [
            threading.Thread(target=self._work, name=f"hf_gru_serve_{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Finish the queued requests, then end the workers (the server has stopped accepting requests)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    @property
    def healthy(self) -> bool:
        return not self._stopping and bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def submit(self, job: Job) -> None:
        """Queues a request that was counted in `arriving` (and no longer is, in the same step). The workers start
        here when no lifespan started them: an app mounted inside another gets no lifespan events of its own."""
        if not self._threads:
            self.start(asyncio.get_running_loop())
        with self._condition:
            self.arriving -= 1
            if self._stopping:
                raise ServerError(503, "unhealthy", "the server is shutting down; retry on another replica", 1)
            self._queue.append(job)
            self._condition.notify_all()

    # ------------------------------------------------------------------------------------------ worker threads

    def _take(self, batch: list[Job], texts: int) -> int:
        """Moves queued requests into `batch` while they fit; returns its text count."""
        while self._queue:
            job = self._queue[0]
            if job.cancelled:
                self._queue.popleft()
                continue
            if batch and texts + len(job.texts) > self.max_batch_texts:
                break
            batch.append(self._queue.popleft())
            texts += len(job.texts)
        return texts

    def _next_batch(self) -> list[Job] | None:
        with self._condition:
            while True:
                while not self._queue and not self._stopping:
                    self._condition.wait()
                if not self._queue:
                    return None  # stopping, nothing left
                batch: list[Job] = []
                texts = self._take(batch, 0)
                if not batch:
                    continue  # all were cancelled
                deadline = batch[0].enqueued + self.max_wait
                while texts < self.max_batch_texts and self.arriving > 0 and not self._stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
                    texts = self._take(batch, texts)
                return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            started = time.perf_counter()
            outcomes: list[tuple[Job, Any, BaseException | None]] = []
            try:
                texts = [text for job in batch for text in job.texts]
                logits = self.logits(texts)
                start = 0
                for job in batch:
                    outcomes.append((job, job.render(logits[start : start + len(job.texts)]), None))
                    start += len(job.texts)
            except Exception as error:  # a backend failure answers these requests with a 500, the server goes on
                logger.exception("a batch of %d requests failed", len(batch))
                failure = ServerError(500, "backend", f"the model failed on this batch: {error}")
                outcomes = [(job, None, failure) for job in batch]
            finished = time.perf_counter()
            with self.metrics.lock:
                for job in batch:
                    self.metrics.histograms["hf_gru_queue_duration_seconds"].observe(started - job.enqueued)
                self.metrics.histograms["hf_gru_inference_duration_seconds"].observe(finished - started)
                self.metrics.histograms["hf_gru_batch_size"].observe(sum(len(job.texts) for job in batch))
                self.metrics.histograms["hf_gru_batch_requests"].observe(len(batch))
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_deliver, outcomes)

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits of `texts`, in order: clipped and tokenized once, run as calls within the token budget."""
        clipped = [self._clip(text) for text in texts]
        encoder = self.classifier.batch_encoder
        if encoder.thread_safe:
            ids, mask = encoder(clipped)
        else:
            with self._tokenizer_lock:
                ids, mask = encoder(clipped)
        chunks = token_chunks(mask.sum(axis=1), ids.shape[1], self.max_batch_tokens)
        if len(chunks) == 1:
            return self.classifier.forward(ids, mask)
        logits = np.empty((len(texts), self.classifier.config.num_labels), dtype=np.float32)
        for rows in chunks:
            used = np.flatnonzero(mask[rows].any(axis=0))  # only the columns these rows use
            columns = slice(used[0], used[-1] + 1) if len(used) else slice(0, 0)
            logits[rows] = self.classifier.forward(
                np.ascontiguousarray(ids[rows, columns]), np.ascontiguousarray(mask[rows, columns])
            )
        return logits

    def _clip(self, text: str) -> str:
        if len(text) <= self._clip_above:
            return text
        from .data.tokenize import clip_text

        with self._tokenizer_lock:  # clip_text calls the wrapper for long texts only
            return clip_text(text, self.classifier.tokenizer, self.classifier.max_length)


def _deliver(outcomes: list[tuple[Job, Any, BaseException | None]]) -> None:
    """On the event loop: hand each request its answer, unless its handler already gave up on it."""
    for job, body, error in outcomes:
        if job.future.done():
            continue
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(body)
