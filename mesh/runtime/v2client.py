"""A small Open Inference Protocol (KServe v2) HTTP client on trio.

What it owns: one keep-alive HTTP/1.1 connection (requests written and responses
read here: ``Content-Length`` framing only) to a node's local API, request
encoding with JSON tensors or the binary tensor extension, and response decoding.
Used by ``edgemesh infer``/``rollback``, the tests and ``simulations/bench_inference.py``.

Non-goals: connection pools, TLS, redirects, chunked request or response bodies.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import trio

from mesh.errors import ConfigError, EdgemeshError
from mesh.runtime.oip import decode_infer, encode_infer

MAX_RESPONSE = 1 << 30
MAX_HEAD = 64 * 1024  # status line + headers of a response
_RECV = 256 * 1024
_JOIN_MAX = 1 << 20  # smaller bodies go out in one send with the head
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class ApiError(EdgemeshError):
    """The API answered with an error status (``status``) or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_api(url: str) -> tuple[str, int]:
    """``http://HOST:PORT``, ``HOST:PORT`` -> (host, port)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise ConfigError(f"API address {url!r} is not like http://127.0.0.1:8000")
    return parts.hostname, parts.port


class V2Client:
    """One keep-alive connection; use ``async with V2Client(host, port) as c``.

    HTTP/1.1 is written and read here directly rather than through h11, on a plain
    non-blocking socket rather than a trio stream: the client only ever sends its own
    well-formed requests (no user-controlled framing) and needs only
    ``Content-Length`` responses, which is all the node's API sends.  On the
    inference path every line of Python runs with cold CPU caches (a 50 MB model's
    weights stream through them on every run); h11's per-event validation and trio's
    stream layer (a scheduler pass after every send, an exception for every read
    that has to wait) were most of the client's cost per request
    (``simulations/bench_inference.py``).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stream: _Socket | None = None
        self._host_line = f"host: {host}:{port}\r\n"

    async def __aenter__(self) -> V2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        await trio.lowlevel.checkpoint()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        head = [f"{method} {path} HTTP/1.1\r\n{self._host_line}content-length: {len(body)}\r\n"]
        for k, v in headers or ():
            if not _TOKEN.fullmatch(k) or "\r" in v or "\n" in v:
                raise ConfigError(f"invalid HTTP header {k!r}")
            head.append(f"{k}: {v}\r\n")
        head.append("\r\n")
        data = "".join(head).encode("latin-1")
        if self._stream is None:
            try:
                self._stream = await _Socket.connect(self.host, self.port)
            except OSError as e:
                raise ApiError(
                    f"cannot reach the edgemesh API at {self.host}:{self.port}: {e.strerror}"
                ) from None
        stream = self._stream
        try:
            await stream.send_all(data + body if len(body) < _JOIN_MAX else data)
            if len(body) >= _JOIN_MAX:
                await stream.send_all(body)
            status, hdrs, payload, keep = await _read_response(stream, method == "HEAD")
        except OSError as e:
            await self.aclose()
            raise ApiError(f"the API connection failed: {e.strerror or e}") from None
        except ApiError:
            await self.aclose()
            raise
        if not keep:
            await self.aclose()
        return Reply(status, hdrs, payload)

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray[Any, Any]],
        *,
        binary: bool = True,
        version: int | None = None,
    ) -> tuple[int, dict[str, np.ndarray[Any, Any]]]:
        """Run one inference; (answering version, outputs).  Errors raise ApiError."""
        body, headers = encode_infer(inputs, binary=binary)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        reply = await self.request("POST", path, body, headers)
        if reply.status != 200:
            raise ApiError(error_message(reply), reply.status)
        return decode_infer(reply.headers, reply.body)


class _Socket:
    """A connected non-blocking TCP socket, read and written through trio's I/O waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()

    @classmethod
    async def connect(cls, host: str, port: int) -> _Socket:
        error: OSError | None = None
        for family, kind, proto, _, addr in await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    sock.connect(addr)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock.fileno())
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        raise OSError(code, os.strerror(code)) from None
                return cls(sock)
            except OSError as e:
                sock.close()
                error = e
            except BaseException:
                sock.close()
                raise
        raise error or OSError(0, f"no address for {host}")

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fd)

    async def receive_some(self, max_bytes: int) -> bytes:
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            try:
                return self.sock.recv(max_bytes)
            except BlockingIOError:  # a spurious wake-up
                continue

    def close(self) -> None:
        trio.lowlevel.notify_closing(self.fd)
        self.sock.close()


async def _read_response(
    stream: _Socket, head_only: bool
) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, lower-case headers, body, connection reusable) of the next response."""
    buf = b""
    while True:  # an interim 1xx response is skipped
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEAD:
                raise ApiError("the API response headers are too large")
            data = await stream.receive_some(_RECV)
            if not data:
                raise ApiError("the API closed the connection without an answer")
            buf += data
        lines = buf[:end].decode("latin-1").split("\r\n")
        buf = buf[end + 4 :]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ApiError(f"the API sent a malformed status line {lines[0][:80]!r}")
        status = int(parts[1])
        if status >= 200:
            break
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ApiError(f"the API sent a malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if "transfer-encoding" in headers:
        raise ApiError("the API sent a chunked response, which this client does not read")
    if head_only or status in (204, 304):
        if buf:
            raise ApiError("the API sent more than one response")
        return status, headers, b"", keep
    length = headers.get("content-length")
    if length is None:  # the body ends when the server closes the connection
        chunks = [buf]
        size = len(buf)
        while data := await stream.receive_some(_RECV):
            size += len(data)
            if size > MAX_RESPONSE:
                raise ApiError("the API response is too large")
            chunks.append(data)
        return status, headers, b"".join(chunks), False
    if not length.isdigit() or int(length) > MAX_RESPONSE:
        raise ApiError(f"the API sent a bad or too large Content-Length {length[:20]!r}")
    n = int(length)
    if len(buf) < n:
        chunks, size = [buf], len(buf)
        while size < n:
            data = await stream.receive_some(max(_RECV, n - size))
            if not data:
                raise ApiError("the API closed the connection in the middle of a response")
            chunks.append(data)
            size += len(data)
        buf = b"".join(chunks)
    if len(buf) > n:  # bytes after the response: nothing was asked for them
        raise ApiError("the API sent more than one response")
    return status, headers, buf, keep


def error_message(reply: Reply) -> str:
    try:
        msg = reply.json()["error"]
    except (ValueError, KeyError, TypeError):
        msg = reply.body[:200].decode(errors="replace")
    return f"{msg} (HTTP {reply.status})"


__all__ = ["ApiError", "Reply", "V2Client", "decode_infer", "encode_infer", "parse_api"]
