"""`hf-gru serve`: text-embeddings-inference's classification protocol over HTTP, with dynamic batching.

`create_app(classifier)` is an ASGI app (FastAPI) a user can run or mount; `serve(...)` runs it under uvicorn.
Routes, as TEI's (github.com/huggingface/text-embeddings-inference, `router/src/http/server.rs`):

- `POST /predict` `{"inputs": str | [str, ...], "raw_scores": bool, "truncate": bool}`: one input's labels with
  scores, highest first, or one such list per input; errors `{"error", "error_type"}` with a 4xx/5xx status.
- `POST /`: the same request, answered the way `huggingface_hub.InferenceClient.text_classification` parses it:
  a list of lists also for one input (TEI answers one input's flat list there, of which that client keeps only the
  first label), and the client's `parameters` `{"top_k", "function_to_apply"}` honoured.
- `GET /health`, `GET /info`, `GET /metrics` (Prometheus text), `GET /docs` and `GET /openapi.json`.

A request is read within `ServingLimits` (`hf_gru.request_body`), its texts made safe for the tokenizer, then queued
for a batch (`hf_gru.batching`); the HTTP server under it (`hf_gru.http_server`) bounds connections and headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

try:
    from fastapi import FastAPI, Request
    from starlette.exceptions import HTTPException
    from starlette.responses import PlainTextResponse, Response
except ImportError as error:  # the CLI prints this one line
    hint = f"hf-gru serve needs the serve extra ({error.name} is missing): pip install 'hf-gru[serve]'"
    raise ImportError(hint) from None

from . import __version__
from .backends import Classifier, replace_lone_surrogates
from .batching import Batcher, Job, Metrics, ServerError, ServingLimits
from .http_server import bind, serve  # noqa: F401  (re-exported: where the CLI and users found them)
from .request_body import BodyReader, ClientGone

logger = logging.getLogger(__name__)

TRANSFORMS = ("softmax", "sigmoid", "none")
JSON = "application/json"
EXAMPLE = '{"inputs": "I like you. I love you", "raw_scores": false, "truncate": false}'


@dataclass
class PredictRequest:
    texts: list[str]
    single: bool  # "inputs" was one string
    transform: str  # softmax, sigmoid or none
    top_k: int | None
    truncate: bool = False  # texts over the model's reading length are cut (else refused, 413)


def default_transform(classifier: Classifier) -> str:
    """As the transformers pipeline: sigmoid for multi-label or one output, none for regression, else softmax."""
    config = classifier.config
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def _field(payload: dict, name: str, kinds: tuple[type, ...], expected: str) -> Any:
    value = payload.get(name)
    if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
        raise ServerError(422, "validation", f"`{name}` must be {expected}, got {json.dumps(value)[:80]}")
    return value


def parse_request(body: bytes, limits: ServingLimits, default: str) -> PredictRequest:
    """A request body checked field by field; every refusal names the field and what to send instead."""
    try:
        payload = json.loads(body)
    except RecursionError:
        raise ServerError(400, "validation", f"the request body nests JSON more than {sys.getrecursionlimit():,} "
                          f"levels deep; send {EXAMPLE}") from None  # fmt: skip
    except (ValueError, UnicodeDecodeError) as error:
        raise ServerError(400, "validation", f"the request body is not valid JSON ({error}); send {EXAMPLE}") from None
    if not isinstance(payload, dict):
        raise ServerError(422, "validation", f"the request body must be a JSON object like {EXAMPLE}")
    if "inputs" not in payload:
        raise ServerError(422, "validation", f"`inputs` is missing; send {EXAMPLE}")
    inputs = payload["inputs"]
    single = isinstance(inputs, str)
    texts = [inputs] if single else inputs
    if not isinstance(texts, list):
        got = type(inputs).__name__
        raise ServerError(422, "validation", f"`inputs` must be a string or a list of strings, got {got}")
    if not texts:
        raise ServerError(400, "empty", "`inputs` cannot be empty: send at least one text")
    for i, text in enumerate(texts):
        if isinstance(text, list):
            raise ServerError(422, "validation", f"`inputs[{i}]` is a text pair: this model classifies single texts")
        if not isinstance(text, str):
            raise ServerError(422, "validation", f"`inputs[{i}]` must be a string, got {type(text).__name__}")
    if len(texts) > limits.max_client_batch_size:
        raise ServerError(413, "validation", f"batch size {len(texts)} > maximum allowed batch size "
                          f"{limits.max_client_batch_size} (--max-client-batch-size); split the request")  # fmt: skip
    raw_scores = _field(payload, "raw_scores", (bool,), "true or false")
    truncate = _field(payload, "truncate", (bool,), "true or false")
    truncate = limits.auto_truncate if truncate is None else truncate
    parameters = _field(payload, "parameters", (dict,), "an object") or {}
    top_k = _field(parameters, "top_k", (int,), "a positive integer")
    if top_k is not None and top_k < 1:
        raise ServerError(422, "validation", f"`top_k` must be a positive integer, got {top_k}")
    function = _field(parameters, "function_to_apply", (str,), "one of softmax, sigmoid, none")
    if function is not None and function not in TRANSFORMS:
        message = f"`function_to_apply` must be one of softmax, sigmoid, none, got {function!r}"
        raise ServerError(422, "validation", message)
    for i, text in enumerate(texts):
        if len(text) > limits.max_input_chars:
            if not truncate:
                raise ServerError(413, "validation", f"`inputs[{i}]` has {len(text):,} characters, more than this "
                                  f"server's {limits.max_input_chars:,} (--max-input-chars); send \"truncate\": true "
                                  "to classify its beginning, or shorten it")  # fmt: skip
            texts[i] = text = text[: limits.max_input_chars]
        texts[i] = replace_lone_surrogates(text)  # e.g. "\ud800", which JSON allows and the tokenizer refuses
    transform = "none" if raw_scores else (function or default)
    return PredictRequest(texts=texts, single=single, transform=transform, top_k=top_k, truncate=truncate)


def scores(logits: np.ndarray, transform: str) -> np.ndarray:
    """Logits `(texts, labels)` turned into scores as asked (float64, so the softmax of a short row sums to 1)."""
    logits = logits.astype(np.float64)
    if transform == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if transform == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    return logits


def renderer(request: PredictRequest, id2label: dict[int, str], nested: bool):
    """The function a worker calls with this request's logits to get its JSON answer body."""

    def render(logits: np.ndarray) -> bytes:
        answers = []
        for row in scores(logits, request.transform):
            order = np.argsort(-row, kind="stable")[: request.top_k]
            answers.append([{"label": id2label[int(i)], "score": float(row[i])} for i in order])
        body = answers[0] if request.single and not nested else answers
        return json.dumps(body, ensure_ascii=False).encode()

    return render


def error_response(error: ServerError) -> Response:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    if error.close:
        headers["Connection"] = "close"
    body = json.dumps({"error": error.message, "error_type": error.error_type}).encode()
    return Response(body, status_code=error.status, media_type=JSON, headers=headers)


def outcome(status: int) -> str:
    """The /metrics outcome of a refusal: rejected (overloaded, shutting down), client_error or server_error."""
    if status in (429, 503):
        return "rejected"
    return "client_error" if status < 500 else "server_error"


class Service:
    """The app's state and request handlers: admission, body, parsing, queueing, waiting, answering, stopping."""

    def __init__(self, classifier: Classifier, limits: ServingLimits, model_id: str, precision: str,
                 model_sha: str | None = None):  # fmt: skip
        self.classifier, self.limits, self.model_id, self.precision = classifier, limits, model_id, precision
        self.model_sha = model_sha
        self.metrics = Metrics()
        self.batcher = Batcher(classifier, self.metrics, max_batch_texts=limits.max_batch_texts,
                               max_batch_tokens=limits.max_batch_tokens, max_wait_ms=limits.max_wait_ms)  # fmt: skip
        self.bodies = BodyReader(limits)
        self.in_flight = 0  # read and parsed, queued or running: what --max-concurrent-requests bounds
        self.metrics.gauges["hf_gru_in_flight"] = lambda: self.in_flight
        self.metrics.gauges["hf_gru_reading"] = lambda: len(self.bodies.reading)
        self.default_transform = default_transform(classifier)
        self.id2label = {int(i): label for i, label in classifier.config.id2label.items()}

    def check_headers(self, scope: dict) -> None:
        if len(scope["headers"]) > self.limits.max_header_count:
            raise ServerError(431, "validation", f"the request has {len(scope['headers']):,} headers, more than "
                              f"{self.limits.max_header_count} (--max-header-count)", close=True)  # fmt: skip

    def admit(self) -> None:
        if self.in_flight >= self.limits.max_concurrent_requests:
            raise ServerError(429, "overloaded", f"the server is serving {self.in_flight} requests, its "
                              "--max-concurrent-requests; retry after a second", retry_after=1)  # fmt: skip

    async def predict(self, scope: dict, receive: Callable[[], Awaitable[dict]], nested: bool) -> Response | None:
        """One request, end to end, counted in exactly one outcome; None when its client left (nothing to send)."""
        started = time.perf_counter()
        self.metrics.count("hf_gru_request_count")
        try:
            body, texts = await self.answer(scope, receive, nested)
        except ServerError as error:
            self.count(outcome(error.status), error.error_type)
            return error_response(error)
        except ClientGone:
            logger.info("%s %s: the client disconnected before its answer; dropped", scope["method"], scope["path"])
            self.count("dropped")
            return None
        except asyncio.CancelledError:  # the server stopped past its graceful timeout
            self.count("dropped")
            raise
        except Exception as error:
            logger.exception("%s %s failed", scope["method"], scope["path"])
            self.count("server_error", "backend")
            return error_response(ServerError(500, "backend", f"internal error: {error}"))
        self.count("success")
        self.metrics.count("hf_gru_texts", texts)
        self.metrics.observe("hf_gru_request_duration_seconds", time.perf_counter() - started)
        return Response(body, media_type=JSON)

    def count(self, kind: str, error_type: str = "") -> None:
        self.metrics.count("hf_gru_request_outcome", label=kind)
        if kind == "success":
            self.metrics.count("hf_gru_request_success")
        elif kind == "dropped":
            self.metrics.count("hf_gru_request_dropped")
        else:
            self.metrics.count("hf_gru_request_failure", label=error_type)

    async def answer(self, scope: dict, receive: Callable[[], Awaitable[dict]], nested: bool) -> tuple[bytes, int]:
        """The answer body and its text count. Reading a body takes no model slot; parsed, the request takes one."""
        self.check_headers(scope)
        self.bodies.refuse_if_stopping()
        self.admit()
        arriving = [True]  # counted in batcher.arriving until its body takes longer than --max-wait-ms, or it queues

        def leave() -> None:
            if arriving[0]:
                arriving[0] = False
                self.batcher.arriving -= 1

        self.batcher.arriving += 1
        try:
            parsed = parse_request(await self.bodies.read(receive, scope["headers"], leave), self.limits,
                                   self.default_transform)  # fmt: skip
            self.admit()  # again: many bodies may have been read at once
        except BaseException:
            leave()
            raise
        job = Job(parsed.texts, renderer(parsed, self.id2label, nested), asyncio.get_running_loop().create_future(),
                  truncate=parsed.truncate)  # fmt: skip
        self.in_flight += 1
        try:
            self.batcher.submit(job, arriving=arriving[0])  # takes it out of `arriving`, also when it refuses it
            await self.answered_before_disconnect(job, receive)
            return job.future.result(), len(parsed.texts)
        finally:
            self.in_flight -= 1

    async def answered_before_disconnect(self, job: Job, receive: Callable[[], Awaitable[dict]]) -> None:
        """Waits for the answer while watching the connection: a client gone drops its queued work (ClientGone)."""
        watch = asyncio.ensure_future(receive())  # after the body, the next message is the disconnect
        watch.add_done_callback(lambda _: job.future.cancel())  # a no-op once the answer is in
        try:
            await job.future
            return
        except asyncio.CancelledError:
            if not watch.done() or watch.cancelled():
                raise  # this handler itself is being cancelled
        finally:
            watch.cancel()
        job.cancelled = True
        raise ClientGone

    def begin_shutdown(self, graceful_timeout: float) -> None:
        """SIGTERM: bodies still being read are answered 503 at once, and so is every new request; queued work is
        answered until most of `graceful_timeout` has passed, then what is still queued gets 503 too."""
        self.bodies.stop()
        asyncio.get_running_loop().call_later(0.8 * graceful_timeout, self._drop_queued)

    def _drop_queued(self) -> None:
        for job in self.batcher.drop_queued():
            if not job.future.done():
                job.future.set_exception(ServerError(503, "unhealthy", "the server stopped before this request "
                                                     "ran; retry on another replica", 1, close=True))  # fmt: skip

    def info(self) -> dict[str, Any]:
        config = self.classifier.config
        return {
            "model_id": self.model_id,
            "model_sha": self.model_sha,
            "model_dtype": model_dtype(self.classifier, self.precision),
            "model_type": {
                "classifier": {
                    "id2label": {str(k): v for k, v in self.id2label.items()},
                    "label2id": {v: k for k, v in self.id2label.items()},
                }
            },  # fmt: skip
            "problem_type": config.problem_type or "single_label_classification",
            "backend": self.classifier.name,
            "precision": self.precision,
            "workers": self.batcher.workers,
            "tokenization_workers": self.batcher.workers,  # each worker tokenizes the batch it runs
            "max_input_length": self.classifier.max_length,
            "max_batch_requests": self.limits.max_batch_texts,  # a request holds at least one text
            **asdict(self.limits),
            "version": __version__,
        }


def model_dtype(classifier: Classifier, precision: str) -> str:
    """TEI's `model_dtype`: the weights' type as the backend runs them (float32, int8, float16 ...)."""
    if precision == "int8":
        return "int8"
    model = getattr(classifier, "model", None)
    return str(next(model.parameters()).dtype).removeprefix("torch.") if model is not None else "float32"


PREDICT_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": {
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "example": "I like you. I love you",
        },  # fmt: skip
        "raw_scores": {"type": "boolean", "default": False, "description": "logits instead of probabilities"},
        "truncate": {"type": "boolean", "default": False, "description": "clip texts over --max-input-chars"},
        "parameters": {
            "type": "object",
            "description": "InferenceClient's: top_k (labels kept per input), function_to_apply (softmax|sigmoid|none)",
        },
    },
}
PREDICTIONS = {"type": "array", "items": {"type": "object", "properties": {"label": {"type": "string"},
                                                                          "score": {"type": "number"}}}}  # fmt: skip
ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}


def _openapi(answer: str) -> dict[str, Any]:
    errors = {str(code): {"description": why, "content": {JSON: {"schema": ERROR}}} for code, why in
              ((400, "malformed or too deeply nested JSON, empty inputs"), (408, "body not sent within --body-timeout"),
               (413, "too many or too long texts"), (415, "an encoding other than gzip or deflate"),
               (422, "wrong types"), (429, "overloaded (Retry-After)"), (431, "too many headers"),
               (500, "model failure"), (503, "shutting down"))}  # fmt: skip
    ok = {
        "description": answer,
        "content": {JSON: {"schema": {"oneOf": [PREDICTIONS, {"type": "array", "items": PREDICTIONS}]}}},
    }
    return {"requestBody": {"required": True, "content": {JSON: {"schema": PREDICT_SCHEMA}}},
            "responses": {"200": ok, **errors}}  # fmt: skip


def create_app(
    classifier: Classifier,
    *,
    limits: ServingLimits | None = None,
    model_id: str = "hf_gru",
    precision: str = "fp32",
    model_sha: str | None = None,
) -> FastAPI:
    """The ASGI app serving `classifier` (from `hf_gru.backends.load_backend`); its workers run while it is up.
    `model_sha`: the Hub commit the model was downloaded at (TEI's /info field; None for a local folder)."""
    service = Service(classifier, limits or ServingLimits(), model_id, precision, model_sha)

    @contextlib.asynccontextmanager
    async def lifespan(app) -> AsyncIterator[None]:
        service.batcher.start(asyncio.get_running_loop())
        try:
            yield
        finally:  # the server has drained its connections: finish what is queued, end the workers
            await asyncio.get_running_loop().run_in_executor(None, service.batcher.stop)

    app = FastAPI(title="hf_gru", version=__version__, lifespan=lifespan, description=__doc__)
    app.state.service = service
    app.add_middleware(PredictFastPath, service=service)

    @app.post("/predict", openapi_extra=_openapi("labels with scores, highest first (a list per input for a batch)"))
    async def predict(request: Request) -> Response:
        """Classify one text or a batch (TEI's route)."""
        return await service.predict(request.scope, request.receive, nested=False)

    @app.post("/", openapi_extra=_openapi("a list of labels per input, also for one input (InferenceClient)"))
    async def root(request: Request) -> Response:
        """Classify, answered as `huggingface_hub.InferenceClient.text_classification` parses it."""
        return await service.predict(request.scope, request.receive, nested=True)

    @app.get("/health")
    async def health() -> Response:
        """200 while the workers run; 503 otherwise."""
        if not service.batcher._threads:  # mounted: no lifespan started them
            service.batcher.start(asyncio.get_running_loop())
        if service.batcher.healthy and not service.bodies.stopping:
            return Response(b"", media_type=JSON)
        return error_response(ServerError(503, "unhealthy", "the model workers are not running", retry_after=1))

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model id and sha, labels, backend, precision and dtype, workers, every limit, version."""
        return service.info()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text: requests, texts, batch sizes, queue and inference time, errors."""
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return error_response(ServerError(error.status_code, "validation", f"{request.method} {request.url.path}: "
                                          f"{error.detail}; see GET /docs for the routes"))  # fmt: skip

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(ServerError(500, "backend", f"internal error: {error}"))

    return app


class PredictFastPath:
    """ASGI middleware answering `POST /predict` and `POST /` before FastAPI's router: routing, dependency solving
    and its tracing hooks cost about as much per request as a batched text's inference. The FastAPI routes of the
    same paths (same handler) stay for the OpenAPI docs and for an app that mounts this one under a prefix. Every
    request's header count is checked here (431)."""

    def __init__(self, app: Any, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST" or scope["path"] not in ("/predict", "/"):
            try:
                self.service.check_headers(scope)
            except ServerError as error:
                await error_response(error)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        response = await self.service.predict(scope, receive, nested=scope["path"] == "/")
        if response is not None:
            await response(scope, receive, send)
