"""`hf-gru serve`: TEI's protocol, the real InferenceClient, dynamic batching equal to one text alone, bad input and
load answered with reasons, SIGTERM draining, a broken model refused before the port opens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_dataset
from test_reliability import read_jsonl, save_model

from hf_gru import GRUForSequenceClassification
from hf_gru.backends import load_backend
from hf_gru.batching import ServingLimits, token_chunks
from hf_gru.cli import main

httpx = pytest.importorskip("httpx", reason="the serving tests' client (pip install 'hf-gru[dev]')")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'hf-gru[serve]')")
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed (pip install 'hf-gru[onnx]')")
from hf_gru.export import export_model  # noqa: E402
from hf_gru.serving import bind, create_app  # noqa: E402

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def sst2() -> tuple[list[str], list[str]]:
    """SST-2's test texts, with the corner cases a service meets (empty, blank, very long) after the first 1,000."""
    rows = read_jsonl(shared_dataset("sst2") / "test.jsonl.gz")
    texts = [row["text"] for row in rows]
    return texts, texts[:1000] + ["", "   ", " ".join(texts[:60])]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sst2) -> Path:
    """A small GRU trained for a few seconds on SST-2 (its labels vary), exported to ONNX as a user would serve it."""
    rows = read_jsonl(shared_dataset("sst2") / "train.jsonl.gz")
    directory = save_model(tmp_path_factory.mktemp("sst2"), [r["text"] for r in rows], LABELS, embedding_size=32,
                           hidden_size=24, embedding_init_std=1.0)  # fmt: skip
    model = GRUForSequenceClassification.from_pretrained(directory)
    encoder = load_backend(directory, backend="torch", device="cpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for index in torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).split(128):
        ids, mask = encoder.encode([rows[i]["text"] for i in index])
        target = torch.tensor([LABELS.index(rows[i]["label"]) for i in index])
        loss = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=target).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory)
    export_model(directory)
    return directory


@pytest.fixture(scope="module")
def classifier(model_dir):
    return load_backend(model_dir)


@contextlib.contextmanager
def running(app) -> Iterator[str]:
    """`app` under uvicorn on 127.0.0.1 in a thread, as `hf-gru serve` runs it; yields its base URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(60)


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


def raw_logits(answer: list[dict], config) -> np.ndarray:
    """A `raw_scores` answer (labels sorted by score) back in label-id order."""
    scores = {item["label"]: item["score"] for item in answer}
    return np.array([scores[config.id2label[i]] for i in range(config.num_labels)], dtype=np.float32)


# --------------------------------------------------------------------------------------- acceptance: the client


def start_cli_server(model: Path, prelude: str = "", options: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """`hf-gru serve --port 0` in its own process; returns it and its base URL (from the line it prints)."""
    argv = ["serve", "--model", str(model), "--port", "0", *options]
    code = f"{prelude}\nfrom hf_gru.cli import main\nraise SystemExit(main({argv!r}))"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"on (http://\S+) ", line)
    if not found:
        process.kill()
        raise AssertionError(f"no listening line: {line!r} {process.stderr.read()[-2000:]}")
    return process, found.group(1)


def test_inference_client_gives_hf_gru_predicts_labels_on_1000_sst2_texts(model_dir, sst2, tmp_path):
    from huggingface_hub import InferenceClient

    texts = sst2[0][:1000]
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(output)]) == 0
    expected = [json.loads(line)["label"] for line in output.read_text(encoding="utf-8").splitlines()]
    assert set(expected) == set(LABELS)  # a model whose labels vary: the comparison below can fail

    process, base = start_cli_server(model_dir, options=("--auto-truncate",))  # as `predict`: longer texts are cut
    try:
        client = InferenceClient(base_url=base)
        with ThreadPoolExecutor(8) as pool:  # concurrent clients: answers come from shared batches
            answers = list(pool.map(client.text_classification, texts))
        assert [answer[0].label for answer in answers] == expected
        assert all(len(a) == 2 and a[0].score >= a[1].score for a in answers)
        assert all(abs(a[0].score + a[1].score - 1) < 1e-5 for a in answers)
        top = client.text_classification(texts[0], top_k=1)
        assert len(top) == 1 and top[0].label == expected[0]
        assert metric(base, "hf_gru_request_success") == 1001
        assert metric(base, "hf_gru_batch_size_count") < 1001  # some requests ran together
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, process.stderr.read()[-2000:]


def test_sigterm_drains_a_request_in_flight_then_exits_0(model_dir):
    # Every batch sleeps a second first, so the request is still running when SIGTERM arrives.
    prelude = ("import time\nfrom hf_gru import batching\nlogits = batching.Batcher.logits\n"
               "batching.Batcher.logits = lambda self, texts: (time.sleep(1), logits(self, texts))[1]")  # fmt: skip
    process, base = start_cli_server(model_dir, prelude=prelude)
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(httpx.post, f"{base}/predict", json={"inputs": ["good", "bad"]}, timeout=60)
            time.sleep(0.4)
            process.send_signal(signal.SIGTERM)
            response = answer.result()
        assert response.status_code == 200 and len(response.json()) == 2
        assert process.wait(60) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health")
    finally:
        process.kill()


@pytest.mark.parametrize("problem", ["no config", "port taken"])
def test_a_model_that_fails_to_load_or_a_taken_port_is_one_line_before_listening(model_dir, tmp_path, problem):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    if problem == "no config":
        taken.close()  # the port is free: a model that loaded would be served on it
        model, expected = tmp_path, "config.json is missing"
    else:
        model, expected = model_dir, f"cannot listen on 127.0.0.1:{port}"
    command = [sys.executable, "-m", "hf_gru.cli", "serve", "--model", str(model), "--port", str(port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    taken.close()
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("hf-gru: error:")]
    assert len(errors) == 1 and expected in errors[0] and "Traceback" not in result.stderr, result.stderr
    assert "serving" not in result.stdout


# ---------------------------------------------------------------------------------------- protocol and batching


def _same_scores(answer: list[dict], expected: list[dict]) -> bool:
    """Same labels in the same order, scores within 1e-5."""
    return [a["label"] for a in answer] == [e["label"] for e in expected] and all(
        abs(a["score"] - e["score"]) < 1e-5 for a, e in zip(answer, expected)
    )


def test_routes_answer_teis_shapes(model_dir, classifier, sst2):
    texts = sst2[0][:3]
    with running(create_app(classifier, model_id="sst2-tiny")) as base:
        single = httpx.post(f"{base}/predict", json={"inputs": texts[0]}).json()
        assert [item["label"] for item in single] in (LABELS, LABELS[::-1]) and single[0]["score"] >= single[1]["score"]
        batch = httpx.post(f"{base}/predict", json={"inputs": texts}).json()
        # A text in a batch is padded with others (and may share a model call): the same answer to float rounding.
        assert len(batch) == 3 and _same_scores(batch[0], single)
        assert _same_scores(httpx.post(f"{base}/", json={"inputs": texts[0]}).json()[0], single)  # client's nesting
        answers = httpx.post(f"{base}/", json={"inputs": texts}).json()
        assert len(answers) == 3 and all(_same_scores(a, b) for a, b in zip(answers, batch))
        top = httpx.post(f"{base}/", json={"inputs": texts[0], "parameters": {"top_k": 1}}).json()
        assert len(top) == 1 and _same_scores(top[0], single[:1])
        raw = httpx.post(f"{base}/predict", json={"inputs": texts[0], "raw_scores": True}).json()
        np.testing.assert_allclose(raw_logits(raw, classifier.config), classifier.logits(texts[:1])[0], atol=1e-5)
        assert httpx.get(f"{base}/health").status_code == 200
        info = httpx.get(f"{base}/info").json()
        assert info["model_id"] == "sst2-tiny" and info["backend"] == classifier.name and info["precision"] == "fp32"
        assert info["model_type"]["classifier"]["id2label"] == {"0": "negative", "1": "positive"}
        assert info["max_batch_texts"] == ServingLimits().max_batch_texts and info["version"]
        metrics = httpx.get(f"{base}/metrics").text
        for name in (
            "hf_gru_request_count",
            "hf_gru_texts",
            "hf_gru_batch_size_bucket",
            "hf_gru_queue_duration_seconds",
            "hf_gru_inference_duration_seconds",
            "hf_gru_request_failure",
        ):
            assert name in metrics
        assert metric(base, "hf_gru_texts") == 1 + 3 + 1 + 3 + 1 + 1
        assert "/predict" in httpx.get(f"{base}/openapi.json").json()["paths"]
        assert httpx.get(f"{base}/docs").status_code == 200

    torch_backend = load_backend(model_dir, backend="torch", device="cpu")  # one worker, torch's own threads
    with running(create_app(torch_backend)) as base:
        raw_torch = httpx.post(f"{base}/predict", json={"inputs": texts[0], "raw_scores": True}).json()
        assert httpx.get(f"{base}/info").json()["backend"] == "torch"
    np.testing.assert_allclose(raw_logits(raw_torch, classifier.config), raw_logits(raw, classifier.config), atol=1e-4)

    from fastapi import FastAPI

    parent = FastAPI()  # mounted in a user's app, which runs no lifespan of the mounted one
    parent.mount("/sentiment", create_app(classifier))
    with running(parent) as base:
        assert httpx.post(f"{base}/sentiment/predict", json={"inputs": texts[0]}, timeout=60).json() == single
        assert httpx.get(f"{base}/sentiment/health").status_code == 200


def test_batched_requests_equal_each_text_classified_alone(classifier, sst2):
    texts = sst2[1]
    alone = np.concatenate([classifier.logits([text]) for text in texts])
    limits = ServingLimits(max_batch_tokens=256)  # small: batches also split into several model calls

    async def load(base: str) -> list[list[dict]]:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=64)) as client:
            gate = asyncio.Semaphore(64)

            async def one(text: str) -> list[dict]:
                async with gate:
                    body = {"inputs": text, "raw_scores": True, "truncate": True}  # the long one: its first tokens
                    response = await client.post("/predict", json=body, timeout=60)
                    return response.json()

            return await asyncio.gather(*(one(text) for text in texts))

    with running(create_app(classifier, limits=limits)) as base:
        answers = asyncio.run(load(base))
        alone_batches = metric(base, 'hf_gru_batch_requests_bucket{le="1"}')
        batches = metric(base, "hf_gru_batch_requests_count")
    batched = np.stack([raw_logits(answer, classifier.config) for answer in answers])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert alone_batches < batches < len(texts)  # some requests shared a batch


def test_token_budget_splits_a_batch_into_calls_of_similar_length():
    lengths = np.array([3, 40, 4, 38, 5, 2, 39, 1])
    chunks = token_chunks(lengths, 40, 100)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(8))
    assert all(len(rows) * lengths[rows].max() <= 100 for rows in chunks)
    assert [sorted(lengths[rows].tolist()) for rows in chunks] == [[1, 2, 3, 4, 5], [38, 39], [40]]
    assert len(token_chunks(lengths, 40, 320)) == 1
    assert [len(rows) for rows in token_chunks(np.array([90, 2]), 90, 50)] == [1, 1]  # too long for the budget: alone


# ----------------------------------------------------------------------------------------- bad input and load


class Gate:
    """Holds every model call of `classifier` until opened; records the texts of each call."""

    def __init__(self, classifier):
        self.event, self.calls, self.forward = threading.Event(), [], classifier.forward
        classifier.forward = self
        classifier.concurrent_batches = 1  # one worker: a held batch holds the queue

    def __call__(self, ids, mask):
        self.calls.append(len(ids))
        assert self.event.wait(60)
        return self.forward(ids, mask)


def test_every_bad_input_is_answered_with_a_reason_and_the_server_keeps_serving(model_dir, classifier):
    held = load_backend(model_dir, threads=1)
    gate = Gate(held)
    limits = ServingLimits(max_concurrent_requests=2, max_input_chars=1000, max_client_batch_size=4)
    with running(create_app(held, limits=limits)) as base:
        post = lambda body, **kw: httpx.post(f"{base}/predict", content=body, timeout=60, **kw)  # noqa: E731
        cases = [
            (b"{not json", 400, "validation", "not valid JSON"),
            (b"[1, 2]", 422, "validation", "JSON object"),
            (b'{"text": "hi"}', 422, "validation", "`inputs` is missing"),
            (b'{"inputs": 5}', 422, "validation", "string or a list of strings"),
            (b'{"inputs": ["ok", 3]}', 422, "validation", "`inputs[1]` must be a string"),
            (b'{"inputs": [["a", "b"]]}', 422, "validation", "text pair"),
            (b'{"inputs": "hi", "raw_scores": "yes"}', 422, "validation", "`raw_scores` must be true or false"),
            (b'{"inputs": "hi", "parameters": {"top_k": 0}}', 422, "validation", "`top_k`"),
            (b'{"inputs": []}', 400, "empty", "cannot be empty"),
            (json.dumps({"inputs": ["a"] * 5}).encode(), 413, "validation", "--max-client-batch-size"),
            (json.dumps({"inputs": "x" * 1001}).encode(), 413, "validation", "--max-input-chars"),
            (json.dumps({"inputs": "x" * 10_000_000, "truncate": True}).encode(), 413, "validation", "exceeds"),
        ]
        gate.event.set()
        for body, status, error_type, words in cases:
            response = post(body)
            assert (response.status_code, response.json()["error_type"]) == (status, error_type), body[:60]
            assert words in response.json()["error"]
        not_found = httpx.get(f"{base}/nowhere")
        assert not_found.status_code == 404 and set(not_found.json()) == {"error", "error_type"}

        # an empty text: the classifier's bias, as `hf-gru predict` gives (its tokens: none)
        bias = GRUForSequenceClassification.from_pretrained(model_dir).classifier.bias.detach().numpy()
        empty = post(json.dumps({"inputs": "", "raw_scores": True}).encode())
        np.testing.assert_allclose(raw_logits(empty.json(), held.config), bias, atol=1e-5)
        # a long text with truncate: its first --max-input-chars characters
        long_text = " ".join(["a wonderful film"] * 200)
        clipped = post(json.dumps({"inputs": long_text, "truncate": True, "raw_scores": True}).encode())
        np.testing.assert_allclose(raw_logits(clipped.json(), held.config), classifier.logits([long_text[:1000]])[0],
                                   atol=1e-5)  # fmt: skip

        # more requests than --max-concurrent-requests: 429 with Retry-After at once, the others answered after
        gate.event.clear()
        with ThreadPoolExecutor(2) as pool:
            held_requests = [pool.submit(post, b'{"inputs": "fine"}') for _ in range(2)]
            deadline = time.monotonic() + 30
            while metric(base, "hf_gru_in_flight") < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            refused = post(b'{"inputs": "one too many"}')
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert refused.json()["error_type"] == "overloaded"
            gate.event.set()
            assert [r.result().status_code for r in held_requests] == [200, 200]

        # a client that disconnects while queued: its work is dropped, the request before it is still answered
        gate.event.clear()
        gate.calls.clear()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(post, b'{"inputs": ["held", "in", "the", "model"]}')
            while not gate.calls:
                time.sleep(0.01)
            port = int(base.rsplit(":", 1)[1])
            body = b'{"inputs": ["gone", "before", "its"]}'
            with socket.create_connection(("127.0.0.1", port)) as leaving:
                leaving.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                while metric(base, "hf_gru_queue_size") < 1:
                    time.sleep(0.01)
            while metric(base, "hf_gru_request_dropped") < 1:
                time.sleep(0.01)
            gate.event.set()
            assert first.result().status_code == 200 and len(first.result().json()) == 4

        # and after all that, a good request
        good = post(b'{"inputs": ["a good request", "still answered"]}')
        assert good.status_code == 200 and len(good.json()) == 2
        assert gate.calls == [4, 2]  # the dropped request's 3 texts never reached the model


def test_2000_requests_at_concurrency_64_end_with_no_error_and_no_lost_answer(classifier, sst2):
    texts = sst2[0][:2000]
    expected = classifier.predict_logits(texts).argmax(-1)

    async def load(base: str) -> list[tuple[int, str]]:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=64)) as client:
            gate = asyncio.Semaphore(64)

            async def one(text: str) -> tuple[int, str]:
                async with gate:
                    response = await client.post("/predict", json={"inputs": text}, timeout=120)
                    return response.status_code, response.json()[0]["label"]

            return await asyncio.gather(*(one(text) for text in texts))

    with running(create_app(classifier, limits=ServingLimits(auto_truncate=True))) as base:  # as `predict` does
        answers = asyncio.run(load(base))
        assert metric(base, "hf_gru_request_success") == len(texts)
        assert "hf_gru_request_failure " in httpx.get(f"{base}/metrics").text  # the zero line, no error_type
    assert [status for status, _ in answers] == [200] * len(texts)
    assert [label for _, label in answers] == [classifier.config.id2label[int(i)] for i in expected]


def test_limits_below_one_are_refused_naming_the_option(model_dir, capsys):
    with pytest.raises(ValueError, match="--max-batch-texts must be a positive integer"):
        ServingLimits(max_batch_texts=0)
    with pytest.raises(ValueError, match="--max-wait-ms"):
        ServingLimits(max_wait_ms=-1)
    with pytest.raises(SystemExit):
        main(["serve", "--model", str(model_dir), "--max-concurrent-requests", "0"])
    assert "--max-concurrent-requests" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--port 99999 is not a TCP port"):
        bind("127.0.0.1", 99999)
