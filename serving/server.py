"""uvicorn (with h11, its pure-Python HTTP/1.1 parser) serving ``serving.app``: configuration and lifecycle.

uvicorn parses and frames every request (h11 rejects CR or NUL in a header value, conflicting Content-Lengths and
malformed heads; chunked bodies are read). ``Protocol`` adds to uvicorn's h11 protocol what it leaves out:

- a bare LF in a request head is a 400 (h11 reads it as a line end, where other parties may not), and a head over
  ``MAX_HEAD_BYTES`` a 431 (h11 bounds only a head that is still incomplete);
- the 400s and 431s of malformed heads are JSON ``{"error": ...}`` like every other answer;
- a request head must be complete ``header_timeout_s`` after its first byte (408), and a connection that sends
  nothing is closed after ``idle_timeout_s`` (uvicorn only times out a kept-alive one after a response);
- past ``max_connections`` open connections, the longest idle one (no request in progress, no byte pending, for
  at least ``MIN_IDLE_S``) is closed to make room, so that idle connections cannot lock anyone out; when every
  connection is busy the new one gets a 503. uvicorn's own ``limit_concurrency`` caps the requests in progress
  (503 past it).

``Server`` is uvicorn's, with two changes: it calls ``on_ready(host, port)`` once bound, and on SIGTERM / SIGINT it
drains (stops accepting, answers in-flight requests for at most ``drain_timeout_s``, uvicorn's
``timeout_graceful_shutdown``) and returns instead of re-raising the signal, so that ``main`` exits 0.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.limits import HTTPLimits

logger = logging.getLogger(__name__)

_BARE_LF = re.compile(rb"(?<!\r)\n")
MAX_HEAD_BYTES = 16 << 10
MIN_IDLE_S = 1.0  # a connection is evicted only after this long without a request (not one about to send)
_REASONS = {
    400: "Bad Request",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def raw_error(status: int, message: str) -> bytes:
    """A whole ``Connection: close`` response with a JSON error body, for answers outside a request cycle."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _CoalescingTransport:
    """A transport whose writes of one event-loop turn go out as one ``send``: uvicorn writes a response's head and
    body separately, and each send of the event-loop thread has to take the GIL back from the model's threads."""

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with the additions of the module docstring; ``limits`` is set by ``make_server``."""

    limits: HTTPLimits = HTTPLimits()

    def connection_made(self, transport) -> None:
        super().connection_made(_CoalescingTransport(transport, self.loop))
        self._head_timer = None
        self._closing = False
        self._idle_since = self.loop.time()
        # A connection that never sends a byte is closed like a kept-alive one (uvicorn arms this only later).
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)
        if len(self.connections) > self.limits.max_connections and not self._evict_idle():
            message = (
                f"The server holds its maximum of {self.limits.max_connections} busy connections "
                "(--max-connections); retry later."
            )
            self._reject(503, message)

    def _idle(self, now: float) -> bool:
        return (
            not self._closing
            and now - self._idle_since >= MIN_IDLE_S
            and (self.cycle is None or self.cycle.response_complete)
            and self.conn.their_state is h11.IDLE
            and not self.conn.trailing_data[0]
            and self._head_timer is None
        )

    def _evict_idle(self) -> bool:
        now = self.loop.time()
        idle = [c for c in self.connections if c is not self and isinstance(c, Protocol) and c._idle(now)]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._idle_since)
        logger.debug("closing an idle connection to make room (--max-connections %d)", self.limits.max_connections)
        oldest._closing = True
        oldest.connections.discard(oldest)
        oldest.transport.close()
        return True

    def _reject(self, status: int, message: str) -> None:
        """Answers ``status`` and closes: the write side now, the connection once the client had time to read."""
        self._closing = True
        self.connections.discard(self)
        self._unset_keepalive_if_required()
        self._cancel_head_timer()
        self.transport.write(raw_error(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(1.0, self.transport.close)  # reading what it still sends avoids a reset

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # an answered connection: what it still sends is dropped
        if self._head_timer is None and self.conn.their_state is h11.IDLE:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)
        super().data_received(data)

    def handle_events(self) -> None:
        if self._closing:
            return
        if self.conn.their_state is h11.IDLE:
            pending = self.conn.trailing_data[0]
            end = pending.find(b"\r\n\r\n")
            head = pending if end < 0 else pending[:end]
            if _BARE_LF.search(head):
                self._reject(400, "Malformed request head: a line ends with a bare LF; end lines with CR LF.")
                return
            if len(head) > MAX_HEAD_BYTES:  # h11 bounds only an incomplete head, not one that came whole
                self._reject(431, f"The request line and headers should be at most {MAX_HEAD_BYTES} bytes.")
                return
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            message = f"The request head did not arrive within {self.limits.header_timeout_s:g} s (--header-timeout)."
            self._reject(408, message)

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        # Called by uvicorn inside its `except h11.RemoteProtocolError`: the error is the one being handled.
        err = sys.exc_info()[1]
        status = getattr(err, "error_status_hint", 400)
        status = status if status in (400, 431) else 400
        detail = str(err) if err is not None else msg
        if status == 431:
            message = f"The request line and headers should be at most {MAX_HEAD_BYTES} bytes."
        else:
            message = f"Malformed HTTP request: {detail[:200]}"
        self._reject(status, message)


class Server(uvicorn.Server):
    """uvicorn's server, calling ``on_ready(host, port)`` once bound and exiting 0 after a signal's drain."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str, int], None] | None = None):
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started and self.on_ready is not None:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            self.on_ready(host, port)

    @contextlib.contextmanager
    def capture_signals(self):
        # As uvicorn's, without raising the signal again once drained: a drained server exits 0.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit:
            logger.info("signal %d: draining (at most %g s)", sig, self.config.timeout_graceful_shutdown)
        super().handle_exit(sig, frame)


def make_server(app, host: str, port: int, limits: HTTPLimits, on_ready=None) -> Server:
    """A ``Server`` for ``app`` on ``host:port`` under ``limits`` (logging is left to ``trainer.logs``)."""
    protocol = type("Protocol", (Protocol,), {"limits": limits})
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=limits.max_connections + 1,  # uvicorn's check is `>=`: max_connections are served
        timeout_keep_alive=limits.idle_timeout_s,
        timeout_graceful_shutdown=limits.drain_timeout_s,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        backlog=1024,
    )
    return Server(config, on_ready)
