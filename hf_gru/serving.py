"""`hf-gru serve`: text-embeddings-inference's classification protocol over HTTP, with dynamic batching.

`create_app(classifier)` is an ASGI app (FastAPI) a user can run or mount; `serve(...)` runs it under uvicorn.
Routes, as TEI's (github.com/huggingface/text-embeddings-inference, `router/src/http/server.rs`):

- `POST /predict` `{"inputs": str | [str, ...], "raw_scores": bool, "truncate": bool}`: one input's labels with
  scores, highest first, or one such list per input; errors `{"error", "error_type"}` with a 4xx/5xx status.
- `POST /`: the same request, answered the way `huggingface_hub.InferenceClient.text_classification` parses it:
  a list of lists also for one input (TEI answers one input's flat list there, of which that client keeps only the
  first label), and the client's `parameters` `{"top_k", "function_to_apply"}` honoured.
- `GET /health`, `GET /info`, `GET /metrics` (Prometheus text), `GET /docs` and `GET /openapi.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator
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
from .backends import Classifier
from .batching import Batcher, Job, Metrics, ServerError, ServingLimits

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
            texts[i] = text[: limits.max_input_chars]
    transform = "none" if raw_scores else (function or default)
    return PredictRequest(texts=texts, single=single, transform=transform, top_k=top_k)


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
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    body = json.dumps({"error": error.message, "error_type": error.error_type}).encode()
    return Response(body, status_code=error.status, media_type=JSON, headers=headers)


class Service:
    """The app's state and request handlers: admission, body, parsing, queueing, waiting, answering."""

    def __init__(self, classifier: Classifier, limits: ServingLimits, model_id: str, precision: str):
        self.classifier, self.limits, self.model_id, self.precision = classifier, limits, model_id, precision
        self.metrics = Metrics()
        self.batcher = Batcher(classifier, self.metrics, max_batch_texts=limits.max_batch_texts,
                               max_batch_tokens=limits.max_batch_tokens, max_wait_ms=limits.max_wait_ms)  # fmt: skip
        self.in_flight = 0
        self.metrics.gauges["hf_gru_in_flight"] = lambda: self.in_flight
        self.default_transform = default_transform(classifier)
        self.id2label = {int(i): label for i, label in classifier.config.id2label.items()}

    async def read_body(self, request: Request) -> bytes:
        """The body, refused (413) as soon as it is known to exceed `max_body_bytes`: never read whole."""
        limit = self.limits.max_body_bytes
        refusal = ServerError(413, "validation", f"the request body exceeds {limit:,} bytes (--max-client-batch-size "
                              "x --max-input-chars); send fewer or shorter texts")  # fmt: skip
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise refusal
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise refusal
            chunks.append(chunk)
        return b"".join(chunks)

    async def predict(self, request: Request, nested: bool) -> Response | None:
        """One request, end to end; None when its client left before the answer (nothing to send)."""
        started = time.perf_counter()
        self.metrics.count("hf_gru_request_count")
        if self.in_flight >= self.limits.max_concurrent_requests:
            return self.fail(ServerError(429, "overloaded", f"the server is serving {self.in_flight} requests, its "
                                         "--max-concurrent-requests; retry after a second", retry_after=1))  # fmt: skip
        self.in_flight += 1
        self.batcher.arriving += 1
        queued = False
        try:
            parsed = parse_request(await self.read_body(request), self.limits, self.default_transform)
            job = Job(parsed.texts, renderer(parsed, self.id2label, nested), asyncio.get_running_loop().create_future())
            queued = True  # submit takes it out of `arriving`, also when it refuses it
            self.batcher.submit(job)
            if not await self.answered_before_disconnect(job, request):
                return None
            body = job.future.result()
        except ServerError as error:
            return self.fail(error)
        finally:
            self.in_flight -= 1
            if not queued:
                self.batcher.arriving -= 1
        self.metrics.count("hf_gru_request_success")
        self.metrics.count("hf_gru_texts", len(parsed.texts))
        self.metrics.observe("hf_gru_request_duration_seconds", time.perf_counter() - started)
        return Response(body, media_type=JSON)

    async def answered_before_disconnect(self, job: Job, request: Request) -> bool:
        """Waits for the answer while watching the connection: a client gone drops its queued work."""
        watch = asyncio.ensure_future(request.receive())  # after the body, the next message is the disconnect
        watch.add_done_callback(lambda _: job.future.cancel())  # a no-op once the answer is in
        try:
            await job.future
            return True
        except asyncio.CancelledError:
            if not watch.done() or watch.cancelled():
                raise  # this handler itself is being cancelled
        finally:
            watch.cancel()
        job.cancelled = True
        self.metrics.count("hf_gru_request_dropped")
        return False

    def fail(self, error: ServerError) -> Response:
        self.metrics.count("hf_gru_request_failure", label=error.error_type)
        return error_response(error)

    def info(self) -> dict[str, Any]:
        config = self.classifier.config
        return {
            "model_id": self.model_id,
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
            "max_input_length": self.classifier.max_length,
            **asdict(self.limits),
            "version": __version__,
        }


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
              ((400, "malformed JSON or empty inputs"), (413, "too many or too long texts"), (422, "wrong types"),
               (429, "overloaded (Retry-After)"), (500, "model failure"), (503, "shutting down"))}  # fmt: skip
    ok = {
        "description": answer,
        "content": {JSON: {"schema": {"oneOf": [PREDICTIONS, {"type": "array", "items": PREDICTIONS}]}}},
    }
    return {"requestBody": {"required": True, "content": {JSON: {"schema": PREDICT_SCHEMA}}},
            "responses": {"200": ok, **errors}}  # fmt: skip


def create_app(
    classifier: Classifier, *, limits: ServingLimits | None = None, model_id: str = "hf_gru", precision: str = "fp32"
) -> FastAPI:
    """The ASGI app serving `classifier` (from `hf_gru.backends.load_backend`); its workers run while it is up."""
    service = Service(classifier, limits or ServingLimits(), model_id, precision)

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
        return await service.predict(request, nested=False)

    @app.post("/", openapi_extra=_openapi("a list of labels per input, also for one input (InferenceClient)"))
    async def root(request: Request) -> Response:
        """Classify, answered as `huggingface_hub.InferenceClient.text_classification` parses it."""
        return await service.predict(request, nested=True)

    @app.get("/health")
    async def health() -> Response:
        """200 while the workers run; 503 otherwise."""
        if not service.batcher._threads:  # mounted: no lifespan started them
            service.batcher.start(asyncio.get_running_loop())
        if service.batcher.healthy:
            return Response(b"", media_type=JSON)
        return error_response(ServerError(503, "unhealthy", "the model workers are not running", retry_after=1))

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """Model id, labels, backend, precision, limits and version."""
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
    same paths (same handler) stay for the OpenAPI docs and for an app that mounts this one under a prefix."""

    def __init__(self, app: Any, service: Service):
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in ("/predict", "/"):
            await self.app(scope, receive, send)
            return
        try:
            response = await self.service.predict(Request(scope, receive), nested=scope["path"] == "/")
        except Exception as error:  # what FastAPI's handler would answer
            logger.exception("POST %s failed", scope["path"])
            response = error_response(ServerError(500, "backend", f"internal error: {error}"))
        if response is not None:
            await response(scope, receive, send)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts so a taken port is a one-line error (OSError)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port {port} is not a TCP port; use 1-65535 (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ValueError(f"--host {host!r} does not resolve ({error}); use an address such as 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({error.strerror}); pick another --port or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(app: Any, sock: socket.socket, *, graceful_timeout: float = 30.0, log_level: str = "warning") -> None:
    """Runs `app` on `sock` until SIGTERM or SIGINT, then drains: stops accepting, answers every request in flight,
    and returns (the CLI exits 0)."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=graceful_timeout,
                            lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it stopped on once it has drained; a no-op handler then lets the CLI return 0.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise OSError("the server did not start; run with -v for uvicorn's log")
