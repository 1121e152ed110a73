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
from math import inf
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # this module stays light: the CLI reads ServingLimits' defaults from it for its help
    from .backends import Classifier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingLimits:
    """What one request, one connection and the batches may hold, and how long each phase of a request may take;
    each is a `hf-gru serve` option of the same name (README "Serving over HTTP" has them as a table)."""

    max_batch_texts: int = 64  # texts run together (1 turns batching across requests off)
    max_batch_tokens: int = 16384  # padded tokens (rows x longest row) in one model call
    max_wait_ms: float = 2.0  # how long a batch with room waits for requests being read
    max_concurrent_requests: int = 512  # requests queued or running at once; more are answered 429 with Retry-After
    max_input_chars: int = 20_000  # longer texts: refused (413), or clipped with "truncate": true
    max_client_batch_size: int = 32  # texts in one request (TEI's --max-client-batch-size)
    auto_truncate: bool = False  # a request without "truncate" truncates (TEI's --auto-truncate)
    max_connections: int = 1024  # open connections; more are refused at once (503, closed)
    max_header_bytes: int = 16384  # a request's line and headers together (400, closed)
    max_header_count: int = 100  # headers in one request (431)
    header_timeout: float = 10.0  # seconds from a request's first byte to its last header (408, closed)
    body_timeout: float = 30.0  # seconds from the headers to the body's last byte (408, closed)
    keep_alive_timeout: float = 5.0  # seconds a connection may idle before a request's first byte (closed)
    graceful_timeout: float = 10.0  # seconds SIGTERM waits for requests in flight before exiting 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            option = "--" + name.replace("_", "-")
            kind = type(getattr(ServingLimits, name))
            if kind is bool:
                if not isinstance(value, bool):
                    raise ValueError(f"{option} must be true or false, got {value!r}")
            elif kind is float:
                unit = "milliseconds" if name.endswith("_ms") else "seconds"
                number = not isinstance(value, bool) and isinstance(value, (int, float)) and value != inf
                if not number or not (value >= 0 if name == "max_wait_ms" else value > 0):
                    more = "0 or more" if name == "max_wait_ms" else "more than 0"
                    raise ValueError(f"{option} must be a number of {unit}, {more}, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{option} must be a positive integer, got {value!r}")

    @property
    def max_body_bytes(self) -> int:
        """The bytes a body may take on the wire (or decompressed): `max_client_batch_size` texts of `max_input_chars`
        characters, each JSON-escaped at the worst (an emoji as json.dumps writes it, \\ud83d\\ude00: 12 bytes), plus
        room for the rest. The real limits count characters after decoding; this one only stops a body that cannot
        fit them before it is read whole."""
        return self.max_client_batch_size * 12 * self.max_input_chars + 65536


class ServerError(Exception):
    """A request that cannot be answered: TEI's `{"error", "error_type"}` body with an HTTP status."""

    def __init__(self, status: int, error_type: str, message: str, retry_after: int | None = None, close: bool = False):
        super().__init__(message)
        self.status, self.error_type, self.message, self.retry_after = status, error_type, message, retry_after
        self.close = close  # answered with `Connection: close`: the rest of the request was never read


@dataclass(eq=False)
class Job:
    """One request's texts, how to render its answer, and the future its handler awaits."""

    texts: list[str]
    render: Callable[[np.ndarray], bytes]
    future: asyncio.Future
    truncate: bool = True  # False: a text over the model's reading length is refused (413), not cut
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
        "hf_gru_request_count": ("counter", "HTTP prediction requests received; each ends in one outcome"),
        "hf_gru_request_outcome": (
            "counter",
            "how requests ended: success, client_error (4xx), server_error (5xx), "
            "rejected (429 overloaded, 503 shutting down), dropped (unanswered: client gone)",
        ),
        "hf_gru_request_success": ("counter", "prediction requests answered"),
        "hf_gru_request_failure": ("counter", "prediction requests refused or failed, by error_type"),
        "hf_gru_request_dropped": ("counter", "requests left unanswered: the client disconnected first"),
        "hf_gru_connections_refused": ("counter", "connections closed by a limit, by reason"),
        "hf_gru_texts": ("counter", "texts classified"),
        "hf_gru_request_duration_seconds": ("histogram", "time from request received to answer ready"),
        "hf_gru_queue_duration_seconds": ("histogram", "time a request waited in the queue for a batch"),
        "hf_gru_inference_duration_seconds": ("histogram", "time a batch took: tokenizing, model calls, rendering"),
        "hf_gru_batch_size": ("histogram", "texts per batch"),
        "hf_gru_batch_requests": ("histogram", "requests per batch"),
        "hf_gru_queue_size": ("gauge", "requests waiting in the queue"),
        "hf_gru_in_flight": ("gauge", "requests read and parsed, queued or running"),
        "hf_gru_reading": ("gauge", "requests whose body is being read"),
        "hf_gru_open_connections": ("gauge", "open HTTP connections"),
    }
    LABELS = {"hf_gru_request_outcome": "outcome", "hf_gru_connections_refused": "reason"}  # else error_type

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
                    key = self.LABELS.get(name, "error_type")
                    for label, value in sorted(found.items()):
                        lines.append(f'{name}{{{key}="{label}"}} {value:g}' if label else f"{name} {value:g}")
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
        self.arriving = 0  # requests whose body started arriving within max_wait_ms, not queued yet (GIL-atomic)
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

    def submit(self, job: Job, arriving: bool = True) -> None:
        """Queues a request; one counted in `arriving` (a body read within `max_wait_ms`) leaves it in the same step,
        so a worker never sees it as neither. The workers start here when no lifespan started them: an app mounted
        inside another gets no lifespan events of its own."""
        if not self._threads:
            self.start(asyncio.get_running_loop())
        with self._condition:
            if arriving:
                self.arriving -= 1
            if self._stopping:
                raise ServerError(503, "unhealthy", "the server is shutting down; retry on another replica", 1)
            self._queue.append(job)
            self._condition.notify_all()

    def drop_queued(self) -> list[Job]:
        """Takes every queued request out of the queue (a stopping server out of time); returns them."""
        with self._condition:
            dropped = list(self._queue)
            self._queue.clear()
        return dropped

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
            outcomes = self._run(batch)
            finished = time.perf_counter()
            with self.metrics.lock:
                for job in batch:
                    self.metrics.histograms["hf_gru_queue_duration_seconds"].observe(started - job.enqueued)
                self.metrics.histograms["hf_gru_inference_duration_seconds"].observe(finished - started)
                self.metrics.histograms["hf_gru_batch_size"].observe(sum(len(job.texts) for job in batch))
                self.metrics.histograms["hf_gru_batch_requests"].observe(len(batch))
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_deliver, outcomes)

    def _run(self, batch: list[Job]) -> list[tuple[Job, Any, BaseException | None]]:
        """Each request's answer body or error. A batch that fails is run again one request at a time, so that only
        a request that breaks the model gets the error (500), and the server goes on."""
        try:
            return self._answers(batch)
        except Exception as error:
            failure = error
        if len(batch) > 1:
            logger.warning("a batch of %d requests failed (%s); running them one at a time", len(batch), failure)
            return [outcome for job in batch for outcome in self._run([job])]
        logger.error("a request of %d texts failed in the model", len(batch[0].texts), exc_info=failure)
        return [(batch[0], None, ServerError(500, "backend", f"the model failed on this request: {failure}"))]

    def _answers(self, batch: list[Job]) -> list[tuple[Job, Any, BaseException | None]]:
        logits, tokens = self.logits([text for job in batch for text in job.texts])
        outcomes: list[tuple[Job, Any, BaseException | None]] = []
        start = 0
        for job in batch:
            rows = slice(start, start + len(job.texts))
            start += len(job.texts)
            too_long = None if job.truncate else self._too_long(job.texts, tokens[rows])
            outcomes.append((job, None, too_long) if too_long else (job, job.render(logits[rows]), None))
        return outcomes

    def _too_long(self, texts: list[str], tokens: np.ndarray) -> ServerError | None:
        """TEI's 413 for the first text longer than the model reads, when the request said `"truncate": false`.
        Only a text whose tokens filled the model's length is tokenized again, whole, to be sure."""
        limit = self.classifier.max_length
        for i in np.flatnonzero(tokens >= limit):
            with self._tokenizer_lock:
                count = len(self.classifier.tokenizer(texts[i], truncation=False, verbose=False)["input_ids"])
            if count > limit:
                return ServerError(413, "validation", f"`inputs[{i}]` has {count:,} tokens, more than the {limit:,} "
                                   f"this model reads (max_input_length); send \"truncate\": true (or start the "
                                   f"server with --auto-truncate) to classify its first {limit:,} tokens, or shorten "
                                   "it")  # fmt: skip
        return None

    def logits(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Logits of `texts`, in order, and each text's token count (at most the model's length): clipped and
        tokenized once, run as calls within the token budget."""
        clipped = [self._clip(text) for text in texts]
        encoder = self.classifier.batch_encoder
        if encoder.thread_safe:
            ids, mask = encoder(clipped)
        else:
            with self._tokenizer_lock:
                ids, mask = encoder(clipped)
        tokens = mask.sum(axis=1)
        chunks = token_chunks(tokens, ids.shape[1], self.max_batch_tokens)
        if len(chunks) == 1:
            return self.classifier.forward(ids, mask), tokens
        logits = np.empty((len(texts), self.classifier.config.num_labels), dtype=np.float32)
        for rows in chunks:
            used = np.flatnonzero(mask[rows].any(axis=0))  # only the columns these rows use
            columns = slice(used[0], used[-1] + 1) if len(used) else slice(0, 0)
            logits[rows] = self.classifier.forward(
                np.ascontiguousarray(ids[rows, columns]), np.ascontiguousarray(mask[rows, columns])
            )
        return logits, tokens

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
