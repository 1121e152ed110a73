"""The HTTP server under `hf-gru serve`: uvicorn, with a limit on every phase of a connection.

What each stack enforces by itself was tried with a hostile client (README "Serving over HTTP" has the table): of
uvicorn (httptools or h11 parser), hypercorn and granian, none caps open connections or bounds the time a body may take
to arrive, and uvicorn closes no connection that never sends a request. uvicorn with h11 bounds the request head
itself (`h11_max_incomplete_event_size`: an endless header line costs no memory, 100,000 headers are refused) and has
the keep-alive and graceful-shutdown timeouts; this module adds, on uvicorn's own protocol class, what it lacks:

- `--max-connections`: a connection over the cap is answered a canned 503 and closed before anything is parsed;
- `--keep-alive-timeout` also before a connection's first request (uvicorn arms it only after a response);
- `--header-timeout`: from a request's first byte to its last header (408, closed);
- SIGTERM: bodies still arriving are answered 503 at once (`Service.begin_shutdown`), real work drains, exit 0.
The body's own deadline, size and encoding are the app's (`hf_gru.request_body`); the header count too (431).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from dataclasses import replace
from typing import Any

from .batching import Metrics, ServingLimits

logger = logging.getLogger(__name__)

RESERVED_FILES = 64  # descriptors the process needs besides its connections: model files, pipes, the listener


def canned(status: int, reason: str, message: str, error_type: str) -> bytes:
    """A whole HTTP response in TEI's error shape, closing the connection: written before any request is parsed."""
    body = json.dumps({"error": message, "error_type": error_type}).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + body


def limited_protocol(limits: ServingLimits, metrics: Metrics | None = None) -> type:
    """uvicorn's h11 protocol class with `limits` on every connection (see the module docstring)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_many = canned(503, "Service Unavailable", f"the server holds {limits.max_connections:,} connections, its "
                      "--max-connections; retry in a second", "overloaded")  # fmt: skip
    slow_head = canned(408, "Request Timeout", f"the request's headers did not arrive within {limits.header_timeout:g}"
                       " s of its first byte (--header-timeout)", "timeout")  # fmt: skip

    def refused(reason: str) -> None:
        if metrics is not None:
            metrics.count("hf_gru_connections_refused", label=reason)

    class LimitedProtocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:
            self.head_timer = None
            self.refused = len(self.connections) >= limits.max_connections
            if self.refused:  # before any state of its own: refusing costs one write
                transport.write(too_many)
                transport.close()
                refused("max_connections")
                return
            super().connection_made(transport)
            # idle before the first request, as between requests (uvicorn's keep-alive timer, cancelled by data)
            idle = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
            self.timeout_keep_alive_task = idle

        def connection_lost(self, exc: Exception | None) -> None:
            if self.refused:
                return
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            if self.head_timer is None and (cycle is None or cycle.response_complete):  # a request head begins
                self.head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)
            super().data_received(data)
            if self.cycle is not cycle:  # its headers are in
                self._stop_head_timer()

        def _stop_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timeout(self) -> None:
            self.head_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:  # nothing of ours is being written
                self.transport.write(slow_head)
            self.transport.close()
            refused("header_timeout")

    return LimitedProtocol


def open_file_room(max_connections: int) -> int:
    """`max_connections`, or what fits: the soft RLIMIT_NOFILE is raised toward the hard one when it is lower than
    the connections and the process's own files need; if it still is, fewer connections, with a warning (a server
    out of descriptors resets every new client)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + RESERVED_FILES
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= needed:
        return max_connections
    fitted = max(1, soft - RESERVED_FILES)
    logger.warning("--max-connections %d needs %d open files, but this process may open %d (ulimit -n): serving at "
                   "most %d connections", max_connections, needed, soft, fitted)  # fmt: skip
    return fitted


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


def uvicorn_config(app: Any, limits: ServingLimits, log_level: str = "warning") -> Any:
    """The uvicorn config `serve` runs `app` with: its own timeouts and head limit set from `limits`, the protocol
    class adding the rest. Tests run the app through it too."""
    import uvicorn

    service = getattr(getattr(app, "state", None), "service", None)
    metrics = service.metrics if service is not None else None
    fitted = replace(limits, max_connections=open_file_room(limits.max_connections))
    protocol = limited_protocol(fitted, metrics)
    return uvicorn.Config(app, http=protocol, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=limits.graceful_timeout,
                          timeout_keep_alive=limits.keep_alive_timeout,
                          h11_max_incomplete_event_size=limits.max_header_bytes)  # fmt: skip


def uvicorn_server(config: Any) -> Any:
    """A uvicorn server that, on SIGTERM, first tells the app (`Service.begin_shutdown`: stalled bodies answered 503
    at once, queued work drained within the graceful timeout), then stops as uvicorn does."""
    import uvicorn

    class Server(uvicorn.Server):
        def __init__(self, config: Any):
            super().__init__(config)
            service = getattr(getattr(config.app, "state", None), "service", None)
            if service is not None:
                service.metrics.gauges["hf_gru_open_connections"] = lambda: len(self.server_state.connections)
            self.service = service

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if self.service is not None:
                self.service.begin_shutdown(self.config.timeout_graceful_shutdown)
            await super().shutdown(sockets)

    return Server(config)


def serve(app: Any, sock: socket.socket, *, limits: ServingLimits | None = None, log_level: str = "warning") -> None:
    """Runs `app` on `sock` until SIGTERM or SIGINT, then drains: stops accepting, answers every request in flight
    within `limits.graceful_timeout`, and returns (the CLI exits 0). `limits`: the app's own when not given."""
    service = getattr(getattr(app, "state", None), "service", None)
    limits = limits or (service.limits if service is not None else ServingLimits())
    server = uvicorn_server(uvicorn_config(app, limits, log_level))
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
