"""A small Open Inference Protocol (KServe v2) HTTP client on trio + h11.

What it owns: one keep-alive HTTP/1.1 connection to a node's local API, request
encoding with JSON tensors or the binary tensor extension, and response decoding.
Used by ``edgemesh infer``/``rollback``, the tests and ``simulations/bench_inference.py``.

Non-goals: connection pools, TLS, redirects, chunked request bodies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import numpy as np
import trio

from mesh.errors import ConfigError, EdgemeshError
from mesh.runtime.oip import decode_infer, encode_infer

MAX_RESPONSE = 1 << 30


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
    """One keep-alive connection; use ``async with V2Client(host, port) as c``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stream: trio.SocketStream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> V2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> Reply:
        if self._stream is None or self._conn.our_state is not h11.IDLE:
            await self.aclose()
            try:
                self._stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as e:
                raise ApiError(
                    f"cannot reach the edgemesh API at {self.host}:{self.port}: {e.strerror}"
                ) from None
            self._conn = h11.Connection(h11.CLIENT)
        stream, conn = self._stream, self._conn
        hdrs = [("host", f"{self.host}:{self.port}"), ("content-length", str(len(body)))]
        hdrs += headers or []
        try:
            await stream.send_all(
                conn.send(h11.Request(method=method, target=path, headers=hdrs))
                + conn.send(h11.Data(data=body))
                + conn.send(h11.EndOfMessage())
            )
            response: h11.Response | None = None
            parts: list[bytes] = []
            size = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(1 << 20)
                    if not data:
                        raise ApiError("the API closed the connection without an answer")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_RESPONSE:
                        raise ApiError("the API response is too large")
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise ApiError("the API closed the connection")
        except (trio.BrokenResourceError, h11.ProtocolError) as e:
            await self.aclose()
            raise ApiError(f"the API connection failed: {e}") from None
        assert response is not None
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            await self.aclose()
        return Reply(
            response.status_code,
            {k.decode(): v.decode("latin-1") for k, v in response.headers},
            b"".join(parts),
        )

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


def error_message(reply: Reply) -> str:
    try:
        msg = reply.json()["error"]
    except (ValueError, KeyError, TypeError):
        msg = reply.body[:200].decode(errors="replace")
    return f"{msg} (HTTP {reply.status})"


__all__ = ["ApiError", "Reply", "V2Client", "decode_infer", "encode_infer", "parse_api"]
