"""Reading a request body within its limits: a deadline from the headers on, a size on the wire and decompressed,
gzip and deflate decoded with a bounded output, and every reader answered at once when the server begins to stop.

A body that stalls (a client that sends `Content-Length: 100` and 5 bytes) costs the server one timer and no model
slot: it is answered 408 at `body_timeout`, or 503 at SIGTERM, and its connection is closed.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

from .batching import ServerError, ServingLimits

# Content-Encoding -> zlib's wbits: gzip framing, or zlib framing for deflate (RFC 9110; raw deflate is tried too)
DECODERS = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
GZIP_MAGIC = b"\x1f\x8b"


class ClientGone(Exception):
    """The client disconnected before its request was read or answered: nothing to send, one INFO line."""


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    """The value of header `name` (lower case, as ASGI gives names), or b""."""
    for key, value in headers:
        if key == name:
            return value
    return b""


class _Deadline:
    """One body read's timer. After `slow_after` seconds the read stops counting as arriving (`on_slow`: the batcher
    no longer waits for it); at its deadline, or when the server begins to stop, its task is cancelled (`fire`)."""

    __slots__ = ("task", "when", "handle", "fired", "on_slow", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, slow_after: float, timeout: float, on_slow: Callable[[], None]):
        self.loop, self.task, self.on_slow, self.fired = loop, asyncio.current_task(), on_slow, False
        self.when = loop.time() + timeout
        if slow_after < timeout:
            self.handle = loop.call_later(slow_after, self._slow)
        else:
            self.handle = loop.call_at(self.when, self.fire)

    def _slow(self) -> None:
        self.on_slow()
        self.handle = self.loop.call_at(self.when, self.fire)

    def fire(self) -> None:
        if not self.fired and self.task is not None:
            self.fired = True
            self.handle.cancel()
            self.task.cancel()

    def close(self) -> None:
        self.handle.cancel()


class BodyReader:
    """Reads bodies under `limits`; `stop()` (SIGTERM) answers every body still being read, and every later one, 503."""

    def __init__(self, limits: ServingLimits):
        self.limits = limits
        self.reading: set[_Deadline] = set()
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        for deadline in list(self.reading):
            deadline.fire()

    def refuse_if_stopping(self) -> None:
        if self.stopping:
            raise ServerError(503, "unhealthy", "the server is shutting down; retry on another replica", 1, close=True)

    async def read(
        self,
        receive: Callable[[], Awaitable[dict]],
        headers: list[tuple[bytes, bytes]],
        on_slow: Callable[[], None] = lambda: None,
    ) -> bytes:
        """The body, decompressed; 413 as soon as it is known to exceed `max_body_bytes` (never read whole), 408 past
        `body_timeout`, 415 for an encoding other than gzip or deflate, ClientGone when the client left."""
        self.refuse_if_stopping()
        limits, limit = self.limits, self.limits.max_body_bytes
        encoding = header(headers, b"content-encoding").strip().lower()
        if encoding not in (b"", b"identity") and encoding not in DECODERS:
            raise ServerError(415, "validation", f"Content-Encoding {encoding.decode('latin-1')!r} is not supported; "
                              "send gzip, deflate or an uncompressed body", close=True)  # fmt: skip
        too_large = ServerError(413, "validation", f"the request body exceeds {limit:,} bytes (--max-client-batch-size "
                                "x --max-input-chars, escaped); send fewer or shorter texts", close=True)  # fmt: skip
        declared = header(headers, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, limits.max_wait_ms / 1e3, limits.body_timeout, on_slow)
        self.reading.add(deadline)
        chunks, size = [], 0
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        except asyncio.CancelledError:
            if not deadline.fired:
                raise  # the handler itself is being cancelled
            uncancel = getattr(deadline.task, "uncancel", None)  # Python 3.11+: this cancellation was ours
            if uncancel is not None:
                uncancel()
            self.refuse_if_stopping()
            raise ServerError(408, "timeout", f"the request body did not arrive within {limits.body_timeout:g} s of "
                              "its headers (--body-timeout); send it at once", close=True) from None  # fmt: skip
        finally:
            deadline.close()
            self.reading.discard(deadline)
        body = b"".join(chunks)
        if encoding in DECODERS:
            return decompress(body, encoding, limit)
        if body.startswith(GZIP_MAGIC):
            raise ServerError(415, "validation", "the request body is gzip-compressed but has no Content-Encoding "
                              "header; send `Content-Encoding: gzip` with it, or send it uncompressed")  # fmt: skip
        return body


def decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """`body` decoded, never more than `limit` bytes of output (413 beyond: a small bomb cannot fill memory)."""
    name = encoding.decode("latin-1")
    wbits = DECODERS[encoding]
    if wbits == zlib.MAX_WBITS and body and (body[0] & 0x0F != 8 or int.from_bytes(body[:2], "big") % 31):
        wbits = -zlib.MAX_WBITS  # "deflate" sent without its zlib header, as some clients do
    decoder = zlib.decompressobj(wbits)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error as error:
        raise ServerError(400, "validation", f"the request body is not valid {name} ({error}); send it as {name} "
                          "or uncompressed") from None  # fmt: skip
    if len(data) > limit:
        raise ServerError(413, "validation", f"the request body decompresses to more than {limit:,} bytes; send "
                          "fewer or shorter texts")  # fmt: skip
    if not decoder.eof:
        raise ServerError(400, "validation", f"the {name} request body is truncated; send all of it")
    return data
