"""`hf-gru serve` under hostile clients (issue 39): one bad text fails no one else's request, no client can lock the
server, every phase of a request has a time and size limit, /metrics adds up, SIGTERM with stalled clients exits 0,
a damaged ONNX export is refused or replaced. Every test runs a real server on 127.0.0.1, with bounded loops."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset
from test_reliability import read_jsonl, save_model

from hf_gru.backends import load_backend, replace_lone_surrogates
from hf_gru.batching import ServingLimits

httpx = pytest.importorskip("httpx", reason="the serving tests' client (pip install 'hf-gru[dev]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'hf-gru[serve]')")
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
from hf_gru.export import export_model  # noqa: E402
from hf_gru.http_server import bind, uvicorn_config, uvicorn_server  # noqa: E402
from hf_gru.serving import create_app  # noqa: E402

BODY_TIMEOUT, HEADER_TIMEOUT, IDLE_TIMEOUT = 2.0, 1.0, 1.0
SHARED_OPTIONS = ("--max-connections", "700", "--body-timeout", str(BODY_TIMEOUT), "--header-timeout",
                  str(HEADER_TIMEOUT), "--keep-alive-timeout", str(IDLE_TIMEOUT))  # fmt: skip


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [row["text"] for row in read_jsonl(shared_dataset("sst2") / "test.jsonl.gz")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, texts) -> Path:
    """A tiny GRU on an sst2 tokenizer (64 tokens), exported to ONNX: what `hf-gru serve` serves by default."""
    directory = save_model(tmp_path_factory.mktemp("hostile"), texts, ["negative", "positive"], embedding_size=32,
                           hidden_size=24, embedding_init_std=1.0)  # fmt: skip
    export_model(directory)
    return directory


@dataclass
class Server:
    process: subprocess.Popen
    base: str
    port: int
    log: Path  # its stderr


def start(model: Path, log: Path, *options: str, prelude: str = "") -> Server:
    """`hf-gru serve --port 0` in its own process, its stderr in `log`; returns once it prints where it listens."""
    argv = ["serve", "--model", str(model), "--port", "0", *options]
    code = f"{prelude}\nfrom hf_gru.cli import main\nraise SystemExit(main({argv!r}))"
    errors = log.open("w", encoding="utf-8")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errors, text=True)
    errors.close()
    line = process.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:(\d+)) ", line)
    if not found:
        process.kill()
        raise AssertionError(f"no listening line: {line!r} {log.read_text()[-3000:]}")
    return Server(process, found.group(1), int(found.group(2)), log)


def stop(server: Server) -> int:
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(60)
    finally:
        server.process.kill()  # a no-op once it has exited


@pytest.fixture(scope="module")
def shared(model_dir, tmp_path_factory) -> Iterator[Server]:
    """One server (ONNX) for the tests that leave it serving, with short timeouts."""
    server = start(model_dir, tmp_path_factory.mktemp("logs") / "serve.log", *SHARED_OPTIONS)
    yield server
    assert stop(server) == 0, server.log.read_text(errors="replace")[-3000:]


def metrics(base: str) -> dict[str, float]:
    """/metrics as {'name{labels}': value}."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return {key: float(value) for key, value in re.findall(r"^([a-z_]+(?:\{[^}]*\})?) ([0-9.e+-]+)$", text, re.M)}


def request(port: int, method: str, path: str, body: bytes = b"", headers: str = "", timeout: float = 30) -> tuple:
    """(status, JSON body or raw bytes) of one request on its own connection, read until the server closes it or the
    response is whole; (None, b"") when the server closed or reset the connection without an answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # refused while sending: read what it said, if anything
            sock.sendall(raw_request(method, path, body, headers))
        return read_response(sock)


def raw_request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def read_response(sock: socket.socket) -> tuple:
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            if not (chunk := sock.recv(65536)):
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 "):
        return None, b""
    status, body = int(data[9:12]), data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    with contextlib.suppress(ValueError):
        return status, json.loads(body)
    return status, body


def _length(data: bytes) -> int:
    found = re.search(rb"content-length: (\d+)", data.split(b"\r\n\r\n", 1)[0], re.I)
    return int(found.group(1)) if found else 1 << 30


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status")
    if not status.is_file():
        pytest.skip("reading a process's memory needs /proc (Linux)")
    return int(re.search(r"VmRSS:\s+(\d+) kB", status.read_text()).group(1)) / 1024


def predict_body(inputs, **fields) -> bytes:
    """As Python's json.dumps sends it (ASCII, \\uXXXX escapes): what clients send, lone surrogates included."""
    return json.dumps({"inputs": inputs, **fields}).encode()


def wait_for(condition, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert condition(), "timed out waiting"


# ------------------------------------------------------------------------------------ one bad text, many clients


@contextlib.contextmanager
def in_thread(app, limits: ServingLimits) -> Iterator[str]:
    """`app` on 127.0.0.1 under the server `hf-gru serve` runs (limits and all), in a thread; yields its URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn_server(uvicorn_config(app, limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 60)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)


def run_clients(base: str, bodies: list[list[bytes]]) -> list[list[tuple[int, object]]]:
    """One client per list of bodies, all at once, each sending its bodies one after another."""

    async def client(sequence: list[bytes]) -> list[tuple[int, object]]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as session:
            answers = []
            for body in sequence:
                response = await session.post("/predict", content=body, headers={"Content-Type": "application/json"})
                answers.append((response.status_code, response.json()))
            return answers

    async def everyone() -> list:
        return await asyncio.gather(*(client(sequence) for sequence in bodies))

    return asyncio.run(everyone())


def raw_logits(answer: list[dict], id2label: dict) -> np.ndarray:
    scores = {item["label"]: item["score"] for item in answer}
    return np.array([scores[id2label[i]] for i in range(len(id2label))])


class Poisoned:
    """The batch encoder, failing on any batch that holds POISON: a text the model cannot take, for a test."""

    POISON = "this text breaks the model"

    def __init__(self, encoder):
        self.encoder, self.thread_safe = encoder, encoder.thread_safe

    def __call__(self, texts: list[str]):
        if self.POISON in texts:
            raise RuntimeError("the model cannot take this text")
        return self.encoder(texts)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_lone_surrogates_and_a_failing_text_among_30_clients_fail_no_innocent_request(model_dir, texts, backend):
    classifier = load_backend(model_dir, backend=backend, device="cpu" if backend == "torch" else None)
    id2label = classifier.config.id2label
    innocent = texts[:300]
    alone = {text: classifier.logits([text])[0] for text in innocent}
    surrogates = ["\ud800", ["a lone \udfff here", "fine"], "\ud83d", ["\ud800" * 40 + " tail"]]  # as JSON allows
    mix = [[predict_body(t, raw_scores=True, truncate=True) for t in innocent[i::30]] for i in range(30)]
    mix += [[predict_body(inputs, raw_scores=True)] * 10 for inputs in surrogates]
    classifier.batch_encoder = Poisoned(classifier.batch_encoder)
    mix += [[predict_body(Poisoned.POISON)] * 10 for _ in range(4)]

    with in_thread(create_app(classifier), ServingLimits()) as base:
        answers = run_clients(base, mix)
        counters = metrics(base)
    for i, client in enumerate(answers[:30]):  # the innocent clients: every answer right, none failed
        assert [status for status, _ in client] == [200] * len(client)
        for (_, answer), text in zip(client, innocent[i::30]):
            np.testing.assert_allclose(raw_logits(answer, id2label), alone[text], atol=1e-5)
    for client, inputs in zip(answers[30:34], surrogates):  # a lone surrogate: classified as U+FFFD is
        assert {status for status, _ in client} == {200}
        rows = [client[0][1]] if isinstance(inputs, str) else client[0][1]
        for row, text in zip(rows, [inputs] if isinstance(inputs, str) else inputs, strict=True):
            expected = classifier.logits([replace_lone_surrogates(text)])[0]
            np.testing.assert_allclose(raw_logits(row, id2label), expected, atol=1e-5)
    for client in answers[34:]:  # only the request that breaks the model gets the error
        assert all(status == 500 and body["error_type"] == "backend" for status, body in client)
    assert counters['hf_gru_request_outcome{outcome="server_error"}'] == 40
    assert counters['hf_gru_request_outcome{outcome="success"}'] == 300 + 40


# ------------------------------------------------------------------------------ limits on every phase of a request


def test_512_stalled_bodies_leave_a_good_client_answered_within_the_body_timeout(shared):
    stalled = []
    for _ in range(512):
        sock = socket.create_connection(("127.0.0.1", shared.port), timeout=30)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"inp")  # fmt: skip
        stalled.append(sock)
    try:
        wait_for(lambda: metrics(shared.base)["hf_gru_reading"] >= 512)
        good = httpx.post(f"{shared.base}/predict", json={"inputs": "a good film"}, timeout=BODY_TIMEOUT + 1)
        assert good.status_code == 200 and len(good.json()) == 2
        selector = selectors.DefaultSelector()
        for sock in stalled:
            sock.setblocking(True)
            sock.settimeout(BODY_TIMEOUT + 30)
            selector.register(sock, selectors.EVENT_READ)
        answered, deadline = {}, time.monotonic() + BODY_TIMEOUT + 30
        while len(answered) < len(stalled) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                answered[key.fileobj] = read_response(key.fileobj)
                selector.unregister(key.fileobj)
        assert len(answered) == 512
        assert all(status == 408 and body["error_type"] == "timeout" for status, body in answered.values())
    finally:
        for sock in stalled:
            sock.close()


def test_an_endless_header_line_stays_under_a_fixed_memory_bound_and_is_closed(shared):
    before = rss_mb(shared.process.pid)
    connections = [socket.create_connection(("127.0.0.1", shared.port), timeout=30) for _ in range(3)]
    closed = 0
    for sock in connections:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(100):  # 100 MiB on each of 3 connections, as the probe
            try:
                sock.sendall(b"a" * (1 << 20))
            except OSError:
                closed += 1
                break
        else:
            status, _ = read_response(sock)
            closed += status in (None, 400, 431)
        sock.close()
    assert closed == 3
    assert rss_mb(shared.process.pid) - before < 50
    assert httpx.get(f"{shared.base}/health", timeout=30).status_code == 200


def test_100000_headers_a_20_mb_header_and_150_headers_are_refused(shared):
    many = "".join(f"X-{i}: b\r\n" for i in range(100_000))
    assert request(shared.port, "GET", "/health", headers=many)[0] in (None, 400, 431)
    assert request(shared.port, "GET", "/health", headers="X-Big: " + "a" * 20_000_000 + "\r\n")[0] in (None, 400, 431)
    status, body = request(shared.port, "POST", "/predict", b'{"inputs": "hi"}',
                           headers="".join(f"X-{i}: b\r\n" for i in range(150)))  # fmt: skip
    assert status == 431 and body["error_type"] == "validation" and "--max-header-count" in body["error"]
    assert httpx.get(f"{shared.base}/health", timeout=30).status_code == 200


def test_idle_and_slow_header_connections_are_closed(shared):
    with socket.create_connection(("127.0.0.1", shared.port), timeout=IDLE_TIMEOUT + 10) as idle:
        assert idle.recv(100) == b""  # never sent a byte: closed after --keep-alive-timeout
    with socket.create_connection(("127.0.0.1", shared.port), timeout=HEADER_TIMEOUT + 10) as slow:
        slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        status, body = read_response(slow)
    assert status == 408 and body["error_type"] == "timeout" and "--header-timeout" in body["error"]


def test_over_max_connections_new_ones_are_refused_and_the_server_still_answers(model_dir, tmp_path):
    server = start(model_dir, tmp_path / "serve.log", "--max-connections", "8", "--keep-alive-timeout", "60",
                   "--header-timeout", "60")  # fmt: skip
    kept = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    held = []
    try:
        kept.sendall(raw_request("GET", "/health"))
        assert read_response(kept)[0] == 200  # a keep-alive connection, one of the 8
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(7)]
        for _ in range(3):
            status, body = request(server.port, "GET", "/health")
            assert status in (None, 503)  # refused: a canned 503 (or a reset, if it came first)
            if status == 503:
                assert body["error_type"] == "overloaded" and "--max-connections" in body["error"]
        kept.sendall(raw_request("POST", "/predict", b'{"inputs": "fine"}'))
        status, answer = read_response(kept)
        assert status == 200 and len(answer) == 2  # the connections it holds are still served
        for sock in held:
            sock.close()
        held = []

        def served() -> bool:
            kept.sendall(raw_request("GET", "/metrics"))
            return b"hf_gru_open_connections 1\n" in read_response(kept)[1]

        wait_for(served)
        assert request(server.port, "GET", "/health")[0] == 200  # and a new one, once there is room
        kept.sendall(raw_request("GET", "/metrics"))
        assert re.search(rb'hf_gru_connections_refused\{reason="max_connections"\} 3\n', read_response(kept)[1])
    finally:
        kept.close()
        for sock in held:
            sock.close()
        assert stop(server) == 0


# ------------------------------------------------------------------------------------------------ TEI's protocol


def test_truncate_false_over_the_models_length_is_413_and_true_classifies_its_start(shared, model_dir, texts):
    long_text = " ".join(texts[:20])  # well over the 64 tokens this model reads
    for fields in ({"truncate": False}, {}):  # no "truncate": the server's --auto-truncate, off by default
        response = httpx.post(f"{shared.base}/predict", content=predict_body(long_text, **fields), timeout=30)
        assert response.status_code == 413 and set(response.json()) == {"error", "error_type"}
        assert response.json()["error_type"] == "validation" and "64 this model reads" in response.json()["error"]
    cut = httpx.post(f"{shared.base}/predict", content=predict_body(long_text, truncate=True, raw_scores=True))
    classifier = load_backend(model_dir)
    np.testing.assert_allclose(raw_logits(cut.json(), classifier.config.id2label), classifier.logits([long_text])[0],
                               atol=1e-5)  # fmt: skip
    short = httpx.post(f"{shared.base}/predict", content=predict_body(texts[0], truncate=False), timeout=30)
    assert short.status_code == 200


def test_json_nested_100000_deep_or_with_a_huge_number_is_400(shared):
    for body in (
        b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"inputs": "a", "n": ' + b"9" * 10**6 + b"}",
    ):
        response = httpx.post(f"{shared.base}/predict", content=body, timeout=30)
        assert response.status_code == 400 and response.json()["error_type"] == "validation"
    assert httpx.get(f"{shared.base}/health", timeout=30).status_code == 200


def test_gzip_and_deflate_bodies_are_decompressed_within_a_bound_others_get_415(shared, texts):
    body = predict_body(texts[:3], raw_scores=True)
    plain = httpx.post(f"{shared.base}/predict", content=body, timeout=30).json()
    raw_deflate = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body)),
                           ("deflate", raw_deflate.compress(body) + raw_deflate.flush())):  # fmt: skip
        answer = httpx.post(f"{shared.base}/predict", content=data, headers={"Content-Encoding": encoding}, timeout=30)
        assert answer.status_code == 200 and answer.json() == plain, encoding
    refusals = [
        ({"Content-Encoding": "br"}, body, 415),
        ({}, gzip.compress(body), 415),  # gzip bytes sent without saying so
        ({"Content-Encoding": "gzip"}, gzip.compress(body)[:-12], 400),  # truncated
        ({"Content-Encoding": "gzip"}, gzip.compress(b'{"inputs": "' + b" " * (40 << 20) + b'"}'), 413),  # a bomb
    ]
    for headers, data, status in refusals:
        answer = httpx.post(f"{shared.base}/predict", content=data, headers=headers, timeout=30)
        assert answer.status_code == status and set(answer.json()) == {"error", "error_type"}, (headers, status)


def test_32_texts_of_escaped_emoji_within_the_character_limits_are_answered(shared):
    body = predict_body(["😀" * 20_000] * 32, truncate=True)  # json.dumps: 12 bytes per emoji, 7.7 MB in all
    assert len(body) > 6 * 32 * 20_000
    response = httpx.post(f"{shared.base}/predict", content=body, timeout=120)
    assert response.status_code == 200 and len(response.json()) == 32


# -------------------------------------------------------------------------------------------- metrics that add up


def test_after_a_scripted_mix_of_requests_the_metrics_outcomes_sum_to_their_count(shared, texts):
    before = metrics(shared.base)
    sent = 0
    for text in texts[:5]:
        assert httpx.post(f"{shared.base}/predict", content=predict_body(text), timeout=30).status_code == 200
        sent += 1
    deep = b'{"inputs": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    for body, status in (
        (b"{not json", 400),
        (b'{"inputs": []}', 400),
        (b'{"inputs": 5}', 422),
        (predict_body("x" * 30_000), 413),
        (deep, 400),
        (gzip.compress(b'{"inputs": "hi"}'), 415),
    ):
        assert httpx.post(f"{shared.base}/predict", content=body, timeout=30).status_code == status
        sent += 1
    assert request(shared.port, "POST", "/predict", b'{"inputs": "hi"}', headers="Content-Encoding: br\r\n")[0] == 415
    sent += 1
    # a body that stalls (408), and a client that disconnects in the middle of its body (dropped)
    head = b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"inputs"'
    with socket.create_connection(("127.0.0.1", shared.port), timeout=BODY_TIMEOUT + 30) as stall:
        stall.sendall(head)
        assert read_response(stall)[0] == 408
    sent += 1
    with socket.create_connection(("127.0.0.1", shared.port), timeout=30) as leaving:
        leaving.sendall(head)
        wait_for(lambda: metrics(shared.base)["hf_gru_reading"] >= 1)
    sent += 1
    wait_for(lambda: metrics(shared.base)["hf_gru_request_dropped"] > before.get("hf_gru_request_dropped", 0))

    after = metrics(shared.base)
    assert after["hf_gru_request_count"] - before["hf_gru_request_count"] == sent
    assert sum(after[k] - before.get(k, 0) for k in after if k.startswith("hf_gru_request_outcome{")) == sent
    delta = {k: after[k] - before.get(k, 0) for k in after if k.startswith("hf_gru_request_outcome")}
    assert delta['hf_gru_request_outcome{outcome="success"}'] == 5
    assert delta['hf_gru_request_outcome{outcome="dropped"}'] == 1
    assert delta['hf_gru_request_outcome{outcome="client_error"}'] == sent - 6
    log = shared.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert len(re.findall(r"INFO .*the client disconnected before its answer", log)) >= 1


# ------------------------------------------------------------------------------------------------ stop and start


def test_sigterm_with_stalled_clients_answers_them_503_drains_work_and_exits_0_within_the_graceful_timeout(
    model_dir, tmp_path
):
    graceful = 4.0
    slow = ("import time\nfrom hf_gru import batching\nlogits = batching.Batcher.logits\n"
            "batching.Batcher.logits = lambda self, texts: (time.sleep(1), logits(self, texts))[1]")  # fmt: skip
    server = start(model_dir, tmp_path / "serve.log", "--graceful-timeout", str(graceful), "--body-timeout", "60",
                   prelude=slow)  # fmt: skip
    stalled = []
    try:
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"in')
            stalled.append(sock)
        wait_for(lambda: metrics(server.base)["hf_gru_reading"] >= 20)
        working = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        working.sendall(raw_request("POST", "/predict", b'{"inputs": ["good", "bad"]}'))
        wait_for(lambda: metrics(server.base)["hf_gru_in_flight"] >= 1)  # queued: its batch takes a second
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(graceful + 1) == 0
        answers = [read_response(sock) for sock in stalled]
        assert all(status == 503 and body["error_type"] == "unhealthy" for status, body in answers)
        status, body = read_response(working)
        assert status == 200 and len(body) == 2  # real work drained
        assert "Traceback" not in server.log.read_text(errors="replace")
    finally:
        for sock in stalled:
            sock.close()
        server.process.kill()


def test_a_truncated_model_onnx_is_one_line_and_exit_2_or_a_torch_fallback_with_a_warning(model_dir, tmp_path):
    damaged = shutil.copytree(model_dir, tmp_path / "model")
    graph = damaged / "onnx" / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # source.json still matches the weights
    command = [sys.executable, "-m", "hf_gru.cli", "serve", "--model", str(damaged), "--port", "0", "--backend", "onnx"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stderr.splitlines() if line.startswith("hf-gru: error:")]
    assert result.returncode == 2 and len(errors) == 1 and "model.onnx" in errors[0] and "hf-gru export" in errors[0]
    assert "Traceback" not in result.stderr and "serving" not in result.stdout

    server = start(damaged, tmp_path / "serve.log")  # no --backend: the torch weights serve, with a warning
    try:
        assert httpx.get(f"{server.base}/info", timeout=30).json()["backend"] == "torch"
        warnings = [line for line in server.log.read_text().splitlines() if "ONNX Runtime cannot load" in line]
        assert len(warnings) == 1 and warnings[0].startswith("WARNING") and "using the torch backend" in warnings[0]
        assert httpx.post(f"{server.base}/predict", json={"inputs": "fine"}, timeout=30).status_code == 200
    finally:
        assert stop(server) == 0
