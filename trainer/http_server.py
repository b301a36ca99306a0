"""A small HTTP/1.1 server: an asyncio event loop for the connections and a fixed thread pool for the work.

The event loop reads each request head and body under deadlines and size limits, then hands the complete request
to a ``ThreadPoolExecutor`` of ``workers`` threads, first come first served. The number of threads is fixed
whatever the number of connections, and each connection has at most one request in the queue, so queued work is
bounded by ``max_connections``. Every request that reaches the server gets an HTTP status with a JSON body
(except HEAD, which gets none): framing errors too (400, 408, 411, 413, 431, 501, 505), and a connection over
``max_connections`` gets 503. Only the standard library is used; the handler is any function
``Request -> Response`` and may run concurrently in several threads.

Framing is strict where leniency lets two parties read one byte stream differently: one request line of three
parts, header names without spaces, no folded header lines, one Content-Length of ASCII digits (conflicting
values are a 400), no Transfer-Encoding (411: send a Content-Length). HTTP/1.1 connections are kept alive unless
the client sends ``Connection: close``; HTTP/1.0 ones only when it sends ``Connection: keep-alive``, which the
response then repeats.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus

logger = logging.getLogger(__name__)

_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an RFC 9110 token
_TARGET = re.compile(rb"/[\x21-\x7e]*")  # origin-form, visible ASCII
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_DIGITS = re.compile(rb"[0-9]{1,18}")
_MAX_HEADERS = 100
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one connection and one request may take.

    Attributes:
        max_connections: open connections; the next one gets 503 and is closed.
        workers: threads that run the handler (the requests wait their turn in arrival order).
        max_head_bytes: request line and headers; more gives 431.
        max_body_bytes: request body; more gives 413.
        idle_timeout_s: a kept-alive connection with no new request is closed after this.
        header_timeout_s: once its first byte has arrived, a request head must be complete within this (408).
        body_timeout_s: the whole body must arrive within this once the head is read (408).
    """

    max_connections: int = 256
    workers: int = 16
    max_head_bytes: int = 16 << 10
    max_body_bytes: int = 4 << 20
    idle_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0


@dataclasses.dataclass
class Request:
    """A parsed request: ``method``, ``path`` (undecoded, without the query), ``query``, ``version``
    ("HTTP/1.1"), ``headers`` (lower-case names -> values) and ``body``."""

    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes = b""


@dataclasses.dataclass
class Response:
    """What to send: ``status``, ``body``, its ``content_type`` and extra ``headers`` (such as Allow)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def json_response(status: int, value, headers: dict[str, str] | None = None) -> Response:
    """A JSON response of ``value`` (``NaN`` / ``Infinity`` as JavaScript writes them, as TF Serving does)."""
    return Response(int(status), json.dumps(value).encode(), "application/json", headers or {})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """``{"error": message}`` with ``status``."""
    return json_response(status, {"error": message}, headers)


class _Reject(Exception):
    """A request that cannot be read: answer ``response`` and close the connection."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.response = error_response(status, message)


class _Gone(Exception):
    """The client closed or reset the connection."""


class HTTPServer:
    """Serves ``handler`` on ``host:port`` under ``limits`` (see the module docstring).

    Args:
        handler: ``Request -> Response``, run in the worker threads; an exception it raises is logged with its
            traceback and answered 500.
        limits: the ``Limits``.
    """

    def __init__(self, handler: Callable[[Request], Response], limits: Limits):
        self.handler = handler
        self.limits = limits
        self.open_connections = 0
        self._pool = ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="serve-worker")
        self._server: asyncio.base_events.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, host: str, port: int, on_ready: Callable[[str, int], None] | None = None) -> None:
        """Binds, calls ``on_ready(host, port)`` and serves until SIGTERM / SIGINT or ``stop()``."""
        asyncio.run(self._main(host, port, on_ready))

    def stop(self) -> None:
        """Asks ``run`` to return (thread safe)."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def _main(self, host: str, port: int, on_ready) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._loop.add_signal_handler(sig, self._stopping.set)
            except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
                pass
        # The reader's limit bounds the head: readuntil() raises once it holds that much without a blank line.
        self._server = await asyncio.start_server(
            self._connection, host, port, limit=self.limits.max_head_bytes, backlog=1024
        )
        bound_host, bound_port = self._server.sockets[0].getsockname()[:2]
        if on_ready is not None:
            on_ready(bound_host, bound_port)
        try:
            await self._stopping.wait()
        finally:
            self._server.close()
            self._pool.shutdown(wait=True, cancel_futures=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if self.open_connections >= self.limits.max_connections:
            message = f"The server holds its maximum of {self.limits.max_connections} connections; retry later."
            try:
                await self._send(writer, error_response(HTTPStatus.SERVICE_UNAVAILABLE, message), "GET", True, None)
                await self._linger(reader, writer)
            except _Gone:
                pass
            await self._close(writer)
            return
        self.open_connections += 1
        try:
            await self._serve_connection(reader, writer)
        except _Gone as gone:
            logger.info("client %s: %s", client, gone)
        except Exception:  # a bug here must not end the server: log it once, with its traceback, and close
            logger.exception("client %s: connection ended by an internal error", client)
        finally:
            self.open_connections -= 1
            await self._close(writer)

    async def _serve_connection(self, reader, writer) -> None:
        while True:
            try:
                request = await self._read_request(reader)
            except _Reject as reject:
                await self._send(writer, reject.response, "GET", True, None)
                await self._linger(reader, writer)
                return
            if request is None:
                return
            keep_alive = _keep_alive(request)
            try:
                response = await asyncio.get_running_loop().run_in_executor(self._pool, self._handle, request)
            except RuntimeError:  # the pool is shut down: the server is stopping
                response = error_response(HTTPStatus.SERVICE_UNAVAILABLE, "The server is shutting down.")
                keep_alive = False
            echo = "keep-alive" if keep_alive and request.version == "HTTP/1.0" else None
            await self._send(writer, response, request.method, not keep_alive, echo)
            if not keep_alive:
                return

    def _handle(self, request: Request) -> Response:
        try:
            return self.handler(request)
        except Exception:
            logger.exception("error while answering %s %s", request.method, request.path)
            return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal error; the server log has the details.")

    async def _read_request(self, reader: asyncio.StreamReader) -> Request | None:
        """The next request, None when the client closed an idle connection; raises _Reject or _Gone."""
        limits = self.limits
        try:
            first = await asyncio.wait_for(reader.read(1), limits.idle_timeout_s)
        except asyncio.TimeoutError:
            return None
        except OSError as err:
            raise _Gone(f"connection lost while idle ({err})") from None
        if not first:
            return None
        try:
            head = first + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limits.header_timeout_s)
        except asyncio.TimeoutError:
            raise _Reject(
                HTTPStatus.REQUEST_TIMEOUT, f"The request head did not arrive within {limits.header_timeout_s:g} s."
            ) from None
        except asyncio.LimitOverrunError:
            raise _Reject(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"The request line and headers should be at most {limits.max_head_bytes} bytes.",
            ) from None
        except asyncio.IncompleteReadError:
            raise _Gone("closed the connection in the middle of a request head") from None
        except OSError as err:
            raise _Gone(f"connection lost in a request head ({err})") from None
        if len(head) > limits.max_head_bytes:  # readuntil's limit applies to the buffer, not to the first byte
            raise _Reject(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                f"The request line and headers should be at most {limits.max_head_bytes} bytes.",
            )
        request = _parse_head(head.lstrip(b"\r\n"))
        length = _content_length(request)
        if length > limits.max_body_bytes:
            raise _Reject(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"The request body should be at most {limits.max_body_bytes} bytes. Received Content-Length: {length}",
            )
        if length:
            try:
                request.body = await asyncio.wait_for(reader.readexactly(length), limits.body_timeout_s)
            except asyncio.TimeoutError:
                raise _Reject(
                    HTTPStatus.REQUEST_TIMEOUT, f"The request body did not arrive within {limits.body_timeout_s:g} s."
                ) from None
            except asyncio.IncompleteReadError as err:
                raise _Gone(f"closed the connection after {len(err.partial)} of {length} body bytes") from None
            except OSError as err:
                raise _Gone(f"connection lost in a request body ({err})") from None
        return request

    async def _send(self, writer, response: Response, method: str, close: bool, echo: str | None) -> None:
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}", "Server: wals2-serve"]
        lines.append(f"Content-Type: {response.content_type}")
        lines.append(f"Content-Length: {len(response.body)}")
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        if close:
            lines.append("Connection: close")
        elif echo:
            lines.append(f"Connection: {echo}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            writer.write(head if method == "HEAD" else head + response.body)
            await writer.drain()
        except OSError as err:
            raise _Gone(f"connection lost while sending the response ({err})") from None

    @staticmethod
    async def _linger(reader, writer, seconds: float = 1.0, max_bytes: int = 1 << 20) -> None:
        """Ends our side and reads what the client still sends (briefly, boundedly), so that closing with unread
        bytes does not reset the connection before the client has read the error response."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            deadline = asyncio.get_running_loop().time() + seconds
            received = 0
            while received < max_bytes:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                chunk = await asyncio.wait_for(reader.read(64 << 10), left)
                if not chunk:
                    break
                received += len(chunk)
        except (OSError, asyncio.TimeoutError):
            pass

    @staticmethod
    async def _close(writer) -> None:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def _parse_head(head: bytes) -> Request:
    """Request line and headers of ``head`` (ends with a blank line); raises _Reject."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]):
        raise _Reject(HTTPStatus.BAD_REQUEST, f"Malformed request line: {_brief(lines[0])}.")
    method, target, version = parts
    match = _VERSION.fullmatch(version)
    if not match:
        raise _Reject(HTTPStatus.BAD_REQUEST, f"Malformed HTTP version in the request line: {_brief(version)}.")
    if match.group(1) != b"1":
        raise _Reject(
            HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
            f"HTTP version {version.decode()} is not supported; send HTTP/1.1 or HTTP/1.0.",
        )
    if method.decode() not in KNOWN_METHODS:
        raise _Reject(HTTPStatus.NOT_IMPLEMENTED, f"Method {_brief(method)} is not implemented.")
    if not _TARGET.fullmatch(target):
        raise _Reject(
            HTTPStatus.BAD_REQUEST, f"The request target should be a path starting with '/'. Received: {_brief(target)}"
        )
    if len(lines) - 1 > _MAX_HEADERS:
        raise _Reject(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"A request should have at most {_MAX_HEADERS} header lines."
        )
    headers: dict[str, str] = {}
    lengths: set[bytes] = set()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _METHOD.fullmatch(name):
            raise _Reject(HTTPStatus.BAD_REQUEST, f"Malformed header line: {_brief(line)}.")
        key, value = name.decode().lower(), value.strip(b" \t")
        if key == "content-length":
            lengths.update(v.strip(b" \t") for v in value.split(b","))
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if len(lengths) > 1:
        raise _Reject(
            HTTPStatus.BAD_REQUEST, f"Conflicting Content-Length values: {_brief(b', '.join(sorted(lengths)))}."
        )
    if lengths and not _DIGITS.fullmatch(next(iter(lengths))):
        raise _Reject(
            HTTPStatus.BAD_REQUEST,
            f"Content-Length should be 1 to 18 ASCII digits. Received: {_brief(next(iter(lengths)))}",
        )
    path, _, query = target.decode("ascii").partition("?")
    return Request(method.decode(), path, query, version.decode(), headers)


def _content_length(request: Request) -> int:
    """The body's length: 0 without Content-Length (411 for POST / PUT / PATCH); no Transfer-Encoding (411)."""
    if "transfer-encoding" in request.headers:
        raise _Reject(
            HTTPStatus.LENGTH_REQUIRED,
            "Transfer-Encoding is not supported; send the body with a Content-Length header.",
        )
    if "content-length" in request.headers:
        return int(request.headers["content-length"].split(",")[0])
    if request.method in ("POST", "PUT", "PATCH"):
        raise _Reject(HTTPStatus.LENGTH_REQUIRED, "The request should have a Content-Length header.")
    return 0


def _keep_alive(request: Request) -> bool:
    tokens = {t.strip().lower() for t in request.headers.get("connection", "").split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _brief(value: bytes, limit: int = 60) -> str:
    text = value.decode("latin-1")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
