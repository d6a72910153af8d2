"""The node's local HTTP API: Open Inference Protocol (KServe v2) plus status and metrics.

What it owns: an HTTP/1.1 server on trio + h11 (ADR 0004) with keep-alive, bounded
header and body sizes, the v2 routes (health, server and model metadata, readiness,
``infer`` with JSON tensors and the binary tensor extension that tritonclient uses
by default), ``GET /metrics`` (Prometheus text), ``GET /edgemesh/status`` and
``POST /edgemesh/models/{name}/rollback``.

Rules:
* Bound to 127.0.0.1 unless told otherwise: the API has no authentication.
* Every infer/metadata response names the model version that answered, in the body
  (``model_version``) and in the ``Edgemesh-Model-Version`` header.
* Client mistakes get a 4xx with a one-line ``{"error": ...}``; nothing a client
  sends can raise out of a connection handler or grow memory past the limits.

Non-goals: TLS, authentication, gRPC, the BYTES (string) tensor type.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import h11
import trio

# trio-typing (a py-libp2p dependency) installs type annotations for trio that mypy
# reads in place of trio's own; TaskStatus is defined in them.
from trio_typing import TaskStatus

from mesh import __version__
from mesh.core.rollout import RolloutError
from mesh.runtime.inference import (
    BadInputError,
    InferenceFailedError,
    InferenceService,
    Served,
    UnknownModelError,
)
from mesh.runtime.metrics import Metrics, render
from mesh.runtime.oip import (
    HttpError,
    dumps,
    encode_infer_response,
    parse_infer_request,
    split_body,
    tensor_metadata,
)

#: 64 MiB: a batch of camera frames or a few seconds of audio fits; a client cannot
#: make the node hold more than this per connection.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; h11 refuses bigger with a 431
KEEPALIVE_IDLE = 75.0  # seconds an idle keep-alive connection is kept (nginx's default)
_RECV = 256 * 1024
DRAIN_SECONDS = 2.0  # after an early error response, time given to read the client's rest

log = logging.getLogger(__name__)
_ROUTE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")
_ROLLBACK = re.compile(r"/edgemesh/models/([^/]+)/rollback")


class Api:
    def __init__(
        self,
        service: InferenceService,
        status: Callable[[], dict[str, Any]] | None,
        max_body_bytes: int,
    ) -> None:
        self.service = service
        self.status = status
        self.max_body = max_body_bytes
        self.metrics = Metrics()

    # -- connections --------------------------------------------------------------------

    async def connection(self, stream: trio.SocketStream) -> None:
        """Serve one client connection.  A request in the plain form our clients and
        tritonclient send (:func:`_simple_head`: GET/HEAD/POST, HTTP/1.1, a Host, at
        most a Content-Length for framing, no Connection/Expect/Transfer-Encoding/Upgrade
        header, nothing outside a strict grammar) is read here; any other goes to a
        fresh h11 connection, fed the bytes received, which parses it with all of
        HTTP/1.1's rules and answers what it rejects.  h11's parse costs ~0.1 ms with
        the cold caches that every run of a big model leaves behind (ADR 0004), the
        strict form ~0.02 ms.  Responses are written here (a fixed, small set of our
        own headers)."""
        buf, closed = b"", False  # received, not yet parsed (a pipelined next request)
        idle = trio.CancelScope()  # one per connection: the deadline moves, no scope per request
        try:
            with idle:
                while True:
                    request: _Head | h11.Request | None = None
                    fields: list[tuple[bytes, bytes]] = []
                    conn: h11.Connection | None = None
                    complete = keep_ok = False
                    try:
                        idle.deadline = trio.current_time() + KEEPALIVE_IDLE
                        simple, buf, closed = await self._simple_head(stream, buf, closed)
                        if idle.cancel_called or (simple is None and not buf and closed):
                            return
                        if simple is not None:
                            idle.deadline = math.inf
                            request, fields = simple, simple.fields
                            body, buf, closed = await self._simple_body(stream, simple, buf, closed)
                            complete = keep_ok = True
                        else:
                            conn = _server_conn()
                            conn.receive_data(buf)
                            if closed:  # (an empty receive_data means end of input)
                                conn.receive_data(b"")
                            buf = b""
                            event = await self._next(conn, stream)
                            idle.deadline = math.inf
                            if event is None or idle.cancel_called:
                                return
                            assert isinstance(event, h11.Request)
                            request = event
                            fields = list(request.headers)  # h11's Headers iterate in Python
                            size = len(request.target) + sum(len(k) + len(v) for k, v in fields)
                            if size > MAX_HEADER_BYTES:
                                raise HttpError(
                                    431, f"request headers over {MAX_HEADER_BYTES} bytes"
                                )
                            body = await self._body(conn, stream, fields)
                            keep_ok = _keep_alive(conn, fields)
                        out = _Out(stream.socket.fileno(), keep_ok, stream)
                        answer = await self._dispatch(request, fields, body, out)
                    except HttpError as e:
                        answer = _error(e.status, str(e))
                    except h11.RemoteProtocolError as e:
                        answer = _error(e.error_status_hint, f"bad request: {e}")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise
                    except Exception as e:  # a bug: answer 500, keep the node and the API up
                        log.exception("API request failed")
                        answer = _error(500, f"internal error: {type(e).__name__}")
                    if conn is not None:
                        complete = conn.their_state is h11.DONE  # the whole request was read
                    if isinstance(answer, _Sent):  # written (or begun) by the thread that ran it
                        keep, data, sent, size = answer.keep, answer.data, answer.sent, answer.size
                    else:
                        keep = complete and request is not None and keep_ok
                        status, headers, payload = answer
                        # HEAD: the headers a GET would get, no body
                        body_too = request is None or request.method != b"HEAD"
                        # one write per response: head and body in a single send
                        data = _response(status, headers, payload, keep, body_too)
                        sent, size = 0, len(payload) if body_too else 0
                    self.metrics.http_requests += 1
                    self.metrics.bytes_out += size
                    if sent < len(data):
                        await stream.send_all(memoryview(data)[sent:])
                    if not complete:
                        await _drain(stream)
                        return
                    if not keep:
                        return
                    if conn is not None:
                        buf, closed = conn.trailing_data  # a pipelined next request, if any
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            return
        finally:
            await stream.aclose()

    async def _receive(self, stream: trio.SocketStream) -> bytes:
        data = await stream.receive_some(_RECV)
        self.metrics.bytes_in += len(data)
        return data

    async def _simple_head(
        self, stream: trio.SocketStream, buf: bytes, closed: bool
    ) -> tuple[_Head | None, bytes, bool]:
        """Read until ``buf`` holds a request head; (the head if it has the plain form,
        else None for h11, the bytes, whether the client closed its side).  None with no
        bytes and ``closed``: the client is done."""
        searched = 0
        while (end := buf.find(b"\r\n\r\n", searched)) < 0:
            if closed or len(buf) > MAX_HEADER_BYTES:
                return None, buf, closed
            searched = max(0, len(buf) - 3)  # a client sending bytes one by one costs O(n)
            data = await self._receive(stream)
            if not data:
                return None, buf, True
            buf += data
        return _simple_head(buf, end + 4), buf, closed

    async def _simple_body(
        self, stream: trio.SocketStream, head: _Head, buf: bytes, closed: bool
    ) -> tuple[bytes, bytes, bool]:
        """The body of a plain-form request: (body, the bytes after it, closed)."""
        if head.length > self.max_body:
            raise HttpError(
                413,
                f"request body of {head.length} bytes is over the limit of {self.max_body} bytes",
            )
        need = head.end + head.length
        if len(buf) < need:
            parts, size = [buf], len(buf)
            while size < need:
                data = b"" if closed else await self._receive(stream)
                if not data:
                    raise trio.BrokenResourceError("client went away")
                parts.append(data)
                size += len(data)
            buf = b"".join(parts)
        return buf[head.end : need], buf[need:], closed

    async def _next(self, conn: h11.Connection, stream: trio.SocketStream) -> h11.Event | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await self._receive(stream))
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            assert isinstance(event, h11.Event)
            return event

    async def _body(
        self, conn: h11.Connection, stream: trio.SocketStream, fields: list[tuple[bytes, bytes]]
    ) -> bytes:
        length = next((v for k, v in fields if k == b"content-length"), None)
        if length is not None and int(length) > self.max_body:
            raise HttpError(
                413,
                f"request body of {int(length)} bytes is over the limit of {self.max_body} bytes",
            )
        if conn.they_are_waiting_for_100_continue:  # curl does this for bodies > 1 KiB
            await stream.send_all(
                conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b""
            )
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self._next(conn, stream)
            if event is None:
                raise trio.BrokenResourceError("client went away")
            if isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > self.max_body:
                    raise HttpError(413, f"request body is over the limit of {self.max_body} bytes")
                parts.append(bytes(event.data))

    # -- routing ------------------------------------------------------------------------

    async def _dispatch(
        self,
        request: _Head | h11.Request,
        fields: list[tuple[bytes, bytes]],
        body: bytes,
        out: _Out,
    ) -> Answer:
        method = request.method.decode()
        path = request.target.decode("latin-1").split("?", 1)[0]
        get = method in ("GET", "HEAD")
        if path == "/v2/health/live" and get:
            return _json(200, {"live": True})
        if path == "/v2/health/ready" and get:
            ready = self.service.started
            return _json(200 if ready else 503, {"ready": ready})
        if path == "/v2" and get:
            return _json(
                200,
                {
                    "name": "edgemesh",
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "model_repository_status"],
                },
            )
        if path == "/metrics" and get:
            node = self.status() if self.status is not None else None
            text = render(self.metrics, self.service.status(), self.service.swaps, node).encode()
            return 200, [("content-type", "text/plain; version=0.0.4")], text
        if path == "/edgemesh/status" and get:
            return _json(200, self._status())
        if m := _ROLLBACK.fullmatch(path):
            if method != "POST":
                raise HttpError(405, f"use POST for {path}")
            try:
                back = await self.service.rollback(m.group(1))
            except RolloutError as e:
                code = 404 if m.group(1) not in self.service.status() else 409
                raise HttpError(code, str(e)) from None
            return _json(200, {"model": m.group(1), "active_version": back})
        m = _ROUTE.fullmatch(path)
        if m is None:
            raise HttpError(404, f"no such endpoint: {method} {path}")
        name, vtext, tail = m.group(1), m.group(2), m.group(3)
        version: int | None = None
        if vtext is not None:
            if not vtext.isdigit():
                raise HttpError(404, f"model {name!r} has no version {vtext!r}")
            version = int(vtext)
        if tail == "/infer":
            if method != "POST":
                raise HttpError(405, f"use POST for {path}")
            return await self._infer(fields, name, version, body, out)
        if not get:
            raise HttpError(405, f"use GET for {path}")
        try:
            served = self.service.serving(name, version)
        except UnknownModelError as e:
            raise HttpError(404, str(e)) from None
        vh = [("edgemesh-model-version", str(served.version))]
        if tail == "/ready":
            status, hdrs, payload = _json(
                200, {"name": name, "version": str(served.version), "ready": True}
            )
            return status, hdrs + vh, payload
        spec = served.interface
        status, hdrs, payload = _json(
            200,
            {
                "name": name,
                "versions": [str(served.version)],
                "platform": "onnxruntime_onnx",
                "inputs": [tensor_metadata(t) for t in spec.inputs],
                "outputs": [tensor_metadata(t) for t in spec.outputs],
            },
        )
        return status, hdrs + vh, payload

    # -- infer ---------------------------------------------------------------------------

    async def _infer(
        self,
        fields: list[tuple[bytes, bytes]],
        name: str,
        version: int | None,
        body: bytes,
        out: _Out,
    ) -> Answer:
        start = time.perf_counter()
        label = name if self.service.serves(name) else ""
        try:
            header_len = next(
                (v for k, v in fields if k == b"inference-header-content-length"), None
            )
            req, binary = split_body(body, header_len)
            inputs, out_names, out_binary, req_id = parse_infer_request(req, binary)

            def reply(served: Served, outputs: dict[str, Any]) -> _Sent | HttpError:
                # in the thread that ran the model, right after the run
                try:
                    status, headers, payload = encode_infer_response(
                        served.model, served.version, outputs, out_binary, req_id
                    )
                except HttpError as e:
                    return e
                data = _response(status, headers, payload, out.keep)
                return _Sent(data, _send_now(out.fd, data), len(payload), out.keep)

            _, _, sent = await self.service.infer_then(
                name, inputs, reply, version=version, outputs=out_names, source=out.source
            )
        except UnknownModelError as e:
            self.metrics.observe(label, time.perf_counter() - start, "not_found")
            raise HttpError(404, str(e)) from None
        except (BadInputError, HttpError) as e:
            self.metrics.observe(label, time.perf_counter() - start, "bad_request")
            raise HttpError(getattr(e, "status", 400), str(e)) from None
        except InferenceFailedError as e:
            self.metrics.observe(label, time.perf_counter() - start, "failed")
            raise HttpError(500, str(e)) from None
        if isinstance(sent, HttpError):  # the outputs cannot be sent (a type the API lacks)
            raise sent
        self.metrics.observe(name, time.perf_counter() - start, None)
        return sent

    # -- status and metrics -------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return self.status() if self.status is not None else {"models": self.service.status()}


# -- helpers -------------------------------------------------------------------------------


async def _drain(stream: trio.SocketStream) -> None:
    """Discard what the client still sends (for a short while) before closing, so it
    reads our error response instead of a connection reset."""
    with trio.move_on_after(DRAIN_SECONDS):
        await stream.send_eof()
        while await stream.receive_some(_RECV):
            pass


@dataclass(frozen=True, slots=True)
class _Head:
    """A request head in the plain form (:func:`_simple_head`)."""

    method: bytes
    target: bytes
    fields: list[tuple[bytes, bytes]]  # lower-case names, values without surrounding space
    end: int  # where the body starts in the buffer
    length: int  # of the body


_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST) (/[\x21-\x7e]*) HTTP/1\.1\r\n")
_FIELD = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*"  # name, optional space
    rb"((?:[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?)[ \t]*\r\n"  # visible ASCII value
)
#: with one of these (any value) h11 decides: framing, upgrades, keep-alive, 100-continue
_NOT_SIMPLE = frozenset(
    {b"transfer-encoding", b"connection", b"expect", b"upgrade", b"te", b"trailer"}
)


def _simple_head(buf: bytes, end: int) -> _Head | None:
    """The head that ends at ``end`` in ``buf``, if it is in the plain form -- request
    line ``GET|HEAD|POST /target HTTP/1.1``, header lines matching a strict grammar
    (token name, visible-ASCII value, no folding), exactly one Host, at most one
    Content-Length of digits, none of ``_NOT_SIMPLE``, at most ``MAX_HEADER_BYTES``;
    None for anything else, which h11 then parses (and answers if it is wrong)."""
    if end > MAX_HEADER_BYTES:
        return None
    line = _REQUEST_LINE.match(buf)
    if line is None:
        return None
    fields: list[tuple[bytes, bytes]] = []
    hosts, length, pos, stop = 0, -1, line.end(), end - 2
    while pos < stop:
        m = _FIELD.match(buf, pos, stop)
        if m is None:
            return None
        name, value = m.group(1).lower(), m.group(2)
        if name in _NOT_SIMPLE:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return None
            length = int(value)
        fields.append((name, value))
        pos = m.end()
    if hosts != 1:
        return None
    return _Head(line.group(1), line.group(2), fields, end, max(length, 0))


@dataclass(frozen=True, slots=True)
class _Sent:
    """An infer response that the thread which ran the model wrote (``sent`` bytes of
    ``data``; the event loop sends the rest)."""

    data: bytes
    sent: int
    size: int  # of the body, for the metrics
    keep: bool


Answer = tuple[int, list[tuple[str, str]], bytes] | _Sent


@dataclass(frozen=True, slots=True)
class _Out:
    """Where and how an infer response goes: the connection's socket, keep-alive."""

    fd: int
    keep: bool
    source: object  # the connection, which the service tells from other callers


def _send_now(fd: int, data: bytes) -> int:
    """Write as much of ``data`` as the socket takes now, without waiting (from any
    thread); the event loop sends the rest, and finds a broken connection itself."""
    try:
        return os.write(fd, data)
    except OSError:
        return 0


def _server_conn() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)


def _keep_alive(conn: h11.Connection, fields: list[tuple[bytes, bytes]]) -> bool:
    """h11's rule: HTTP/1.1 and no ``Connection: close`` from the client."""
    if conn.their_http_version is None or conn.their_http_version < b"1.1":
        return False
    return not any(
        k == b"connection" and b"close" in v.lower().replace(b" ", b"").split(b",")
        for k, v in fields
    )


_REASON = {s.value: s.phrase for s in HTTPStatus}


def _response(
    status: int, headers: list[tuple[str, str]], payload: bytes, keep: bool, body: bool = True
) -> bytes:
    """The bytes of a response: status line, our headers (constant names, values we
    made: never a client's text), framing, and the body unless ``body`` is false."""
    head = [f"HTTP/1.1 {status} {_REASON.get(status, '')}\r\n"]
    head += [f"{k}: {v}\r\n" for k, v in headers]
    head.append(f"content-length: {len(payload)}\r\n")
    if not keep:
        head.append("connection: close\r\n")
    head.append("\r\n")
    return b"".join(["".join(head).encode("latin-1"), payload if body else b""])


def _json(status: int, obj: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("content-type", "application/json")], dumps(obj)


def _error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return _json(status, {"error": message.splitlines()[0] if message else "error"})


async def serve_api(
    service: InferenceService,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    status: Callable[[], dict[str, Any]] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    task_status: TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API until cancelled; ``task_status.started((host, bound_port))``."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    api = Api(service, status, max_body_bytes)
    task_status.started((host, bound))
    await trio.serve_listeners(api.connection, listeners)


__all__ = ["DEFAULT_MAX_BODY", "Api", "HttpError", "serve_api"]
