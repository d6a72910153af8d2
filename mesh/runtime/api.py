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
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import numpy as np
import orjson
import trio

from mesh import __version__
from mesh.core.rollout import RolloutError
from mesh.errors import EdgemeshError
from mesh.runtime.inference import (
    BadInputError,
    InferenceFailedError,
    InferenceService,
    UnknownModelError,
    spec_of,
)

#: 64 MiB: a batch of camera frames or a few seconds of audio fits; a client cannot
#: make the node hold more than this per connection.
DEFAULT_MAX_BODY = 64 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # request line + headers; h11 refuses bigger with a 431
KEEPALIVE_IDLE = 75.0  # seconds an idle keep-alive connection is kept (nginx's default)
_RECV = 256 * 1024
DRAIN_SECONDS = 2.0  # after an early error response, time given to read the client's rest
#: Latency histogram buckets (seconds): sub-millisecond to seconds, for CPU models.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

DATATYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPE_OF = {v: k for k, v in DATATYPES.items()}
if TYPE_CHECKING:  # trio's own TaskStatus; the installed trio-typing stubs name it here
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)
_ROUTE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?")
_ROLLBACK = re.compile(r"/edgemesh/models/([^/]+)/rollback")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Metrics:
    """Counters for ``/metrics``; labels only for models this node serves."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.errors: dict[tuple[str, str], int] = {}
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = {}
        self.http_requests = 0
        self.bytes_in = self.bytes_out = 0

    def observe(self, model: str, seconds: float, error: str | None) -> None:
        self.requests[model] = self.requests.get(model, 0) + 1
        if error is not None:
            self.errors[(model, error)] = self.errors.get((model, error), 0) + 1
        counts = self.latency.setdefault(model, [0] * (len(BUCKETS) + 1))
        for i, bound in enumerate(BUCKETS):
            if seconds <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self.latency_sum[model] = self.latency_sum.get(model, 0.0) + seconds


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while True:
                try:
                    with trio.move_on_after(KEEPALIVE_IDLE) as idle:
                        request = await self._next(conn, stream)
                    if idle.cancelled_caught or request is None:
                        return
                    assert isinstance(request, h11.Request)
                    size = len(request.target) + sum(len(k) + len(v) for k, v in request.headers)
                    if size > MAX_HEADER_BYTES:
                        raise HttpError(431, f"request headers over {MAX_HEADER_BYTES} bytes")
                    body = await self._body(conn, stream, request)
                    status, headers, payload = await self._dispatch(request, body)
                except HttpError as e:
                    status, headers, payload = _error(e.status, str(e))
                except h11.RemoteProtocolError as e:
                    status, headers, payload = _error(e.error_status_hint, f"bad request: {e}")
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    raise
                except Exception as e:  # a bug: answer 500, keep the node and the API up
                    log.exception("API request failed")
                    status, headers, payload = _error(500, f"internal error: {type(e).__name__}")
                if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                    return
                self.metrics.http_requests += 1
                self.metrics.bytes_out += len(payload)
                headers = [*headers, ("content-length", str(len(payload)))]
                if status >= 400 and conn.their_state is not h11.DONE:
                    headers.append(("connection", "close"))  # body not read: cannot reuse
                # one write per response: head, body and end in a single send
                await stream.send_all(
                    b"".join(
                        [
                            conn.send(h11.Response(status_code=status, headers=headers)) or b"",
                            conn.send(h11.Data(data=payload)) or b"",
                            conn.send(h11.EndOfMessage()) or b"",
                        ]
                    )
                )
                if conn.their_state is not h11.DONE:
                    await _drain(stream)
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            return
        finally:
            await stream.aclose()

    async def _next(self, conn: h11.Connection, stream: trio.SocketStream) -> h11.Event | None:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(_RECV)
                self.metrics.bytes_in += len(data)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
            assert isinstance(event, h11.Event)
            return event

    async def _body(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> bytes:
        length = next((v for k, v in request.headers if k == b"content-length"), None)
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
        self, request: h11.Request, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        method = request.method.decode()
        path = request.target.decode("latin-1").split("?", 1)[0]
        get = method == "GET"
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
            text = self._metrics_text().encode()
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
            return await self._infer(request, name, version, body)
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
                "inputs": [_meta(t) for t in spec.inputs],
                "outputs": [_meta(t) for t in spec.outputs],
            },
        )
        return status, hdrs + vh, payload

    # -- infer ---------------------------------------------------------------------------

    async def _infer(
        self, request: h11.Request, name: str, version: int | None, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        start = time.perf_counter()
        label = name if name in self.service.models() else ""
        try:
            header_len = next(
                (v for k, v in request.headers if k == b"inference-header-content-length"), None
            )
            req, binary = _split(body, header_len)
            inputs, out_names, out_binary, req_id = _parse_infer(req, binary)
            served, outputs = await self.service.infer(
                name, inputs, version=version, outputs=out_names
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
        response, headers, payload = _encode_outputs(
            served.model, served.version, outputs, out_binary, req_id
        )
        self.metrics.observe(name, time.perf_counter() - start, None)
        return response, headers, payload

    # -- status and metrics -------------------------------------------------------------

    def _status(self) -> dict[str, Any]:
        return self.status() if self.status is not None else {"models": self.service.status()}

    def _metrics_text(self) -> str:
        mt = self.metrics
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        family("edgemesh_inference_requests_total", "counter", "Inference requests by model.")
        for model, n in sorted(mt.requests.items()):
            lines.append(f'edgemesh_inference_requests_total{{model="{_esc(model)}"}} {n}')
        family("edgemesh_inference_errors_total", "counter", "Failed inference requests.")
        for (model, kind), n in sorted(mt.errors.items()):
            lines.append(
                f'edgemesh_inference_errors_total{{model="{_esc(model)}",kind="{kind}"}} {n}'
            )
        family("edgemesh_inference_latency_seconds", "histogram", "Inference request latency.")
        for model, counts in sorted(mt.latency.items()):
            acc = 0
            lab = f'model="{_esc(model)}"'
            for bound, c in zip([*BUCKETS, math.inf], counts, strict=True):
                acc += c
                le = "+Inf" if bound == math.inf else repr(bound)
                lines.append(f'edgemesh_inference_latency_seconds_bucket{{{lab},le="{le}"}} {acc}')
            lines.append(
                f"edgemesh_inference_latency_seconds_sum{{{lab}}} {mt.latency_sum[model]:.6f}"
            )
            lines.append(f"edgemesh_inference_latency_seconds_count{{{lab}}} {acc}")
        family("edgemesh_model_active_version", "gauge", "Active version per model.")
        for model, st in self.service.status().items():
            if st["active_version"] is not None:
                lines.append(
                    f'edgemesh_model_active_version{{model="{_esc(model)}"}} {st["active_version"]}'
                )
        family("edgemesh_model_swaps_total", "counter", "Version swaps (incl. rollbacks).")
        for model, n in sorted(self.service.swaps.items()):
            lines.append(f'edgemesh_model_swaps_total{{model="{_esc(model)}"}} {n}')
        family("edgemesh_api_requests_total", "counter", "HTTP requests answered by the API.")
        lines.append(f"edgemesh_api_requests_total {mt.http_requests}")
        family("edgemesh_api_bytes_total", "counter", "HTTP bytes received and sent by the API.")
        lines.append(f'edgemesh_api_bytes_total{{direction="in"}} {mt.bytes_in}')
        lines.append(f'edgemesh_api_bytes_total{{direction="out"}} {mt.bytes_out}')
        if self.status is not None:
            st = self.status()
            family("edgemesh_peers", "gauge", "Connected mesh peers.")
            lines.append(f"edgemesh_peers {len(st.get('peers', []))}")
            family("edgemesh_mesh_bytes_total", "counter", "Bytes moved over the mesh.")
            up, down = st.get("bytes_uploaded", 0), st.get("bytes_downloaded", 0)
            lines.append(f'edgemesh_mesh_bytes_total{{direction="uploaded"}} {up}')
            lines.append(f'edgemesh_mesh_bytes_total{{direction="downloaded"}} {down}')
        return "\n".join(lines) + "\n"


# -- helpers -------------------------------------------------------------------------------


async def _drain(stream: trio.SocketStream) -> None:
    """Discard what the client still sends (for a short while) before closing, so it
    reads our error response instead of a connection reset."""
    with trio.move_on_after(DRAIN_SECONDS):
        await stream.send_eof()
        while await stream.receive_some(_RECV):
            pass


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def dumps(obj: Any) -> bytes:
    """JSON with numpy arrays written natively by orjson (ADR 0004: ~15x faster than
    ``json`` + ``tolist()`` for tensors, and float32 values in their shortest form)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY, default=_default)


def _json(status: int, obj: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("content-type", "application/json")], dumps(obj)


def _error(status: int, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return _json(status, {"error": message.splitlines()[0] if message else "error"})


def _meta(t: Any) -> dict[str, Any]:
    s = spec_of(t)
    dtype = DATATYPE_OF.get(np.dtype(t.elem_type)) if t.elem_type in _NP_OK else None
    return {"name": s["name"], "datatype": dtype or t.elem_type.upper(), "shape": s["shape"]}


_NP_OK = {str(d) for d in DATATYPES.values()}


def _split(body: bytes, header_len: bytes | None) -> tuple[Any, bytes]:
    if header_len is None:
        json_part, binary = body, b""
    else:
        try:
            n = int(header_len)
        except ValueError:
            raise HttpError(400, "Inference-Header-Content-Length is not a number") from None
        if not 0 < n <= len(body):
            raise HttpError(
                400, f"Inference-Header-Content-Length {n} does not fit the {len(body)}-byte body"
            )
        json_part, binary = body[:n], body[n:]
    try:
        return orjson.loads(json_part), binary
    except orjson.JSONDecodeError as e:
        raise HttpError(400, f"malformed JSON request: {e}") from None


def _parse_infer(
    req: Any, binary: bytes
) -> tuple[dict[str, np.ndarray[Any, Any]], list[str] | None, dict[str, bool], Any]:
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise HttpError(400, "request must be a JSON object with an 'inputs' list")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise HttpError(400, "'parameters' must be an object")
    default_binary = params.get("binary_data_output") is True
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for i, t in enumerate(req["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise HttpError(400, f"inputs[{i}] must be an object with a 'name'")
        name = t["name"]
        datatype = t.get("datatype")
        dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None
        if dtype is None:
            raise HttpError(400, f"input {name!r}: unsupported datatype {t.get('datatype')!r}")
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and 0 <= d < 2**31 for d in shape):
            raise HttpError(400, f"input {name!r}: 'shape' must be a list of sizes")
        count = math.prod(shape)
        tp = t.get("parameters") or {}
        size = tp.get("binary_data_size") if isinstance(tp, dict) else None
        if size is not None:
            if type(size) is not int or size != count * dtype.itemsize:
                raise HttpError(
                    400,
                    f"input {name!r}: binary_data_size {size!r} does not match "
                    f"shape {shape} of {t['datatype']}",
                )
            if offset + size > len(binary):
                raise HttpError(400, f"input {name!r}: binary data is truncated")
            arr = np.frombuffer(binary, dtype, count, offset).reshape(shape)
            offset += size
        else:
            if "data" not in t:
                raise HttpError(400, f"input {name!r} has neither 'data' nor binary data")
            try:
                arr = np.asarray(t["data"], dtype=dtype)
            except (ValueError, TypeError, OverflowError):
                raise HttpError(400, f"input {name!r}: data is not {t['datatype']}") from None
            if arr.size != count:
                raise HttpError(400, f"input {name!r}: {arr.size} values do not fill shape {shape}")
            arr = arr.reshape(shape)
        if name in inputs:
            raise HttpError(400, f"input {name!r} is given twice")
        inputs[name] = arr
    if offset != len(binary):
        raise HttpError(400, f"{len(binary) - offset} bytes of binary data belong to no input")
    out_names: list[str] | None = None
    out_binary: dict[str, bool] = {}
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list):
            raise HttpError(400, "'outputs' must be a list")
        out_names = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise HttpError(400, "each requested output must have a 'name'")
            op = o.get("parameters") or {}
            out_names.append(o["name"])
            out_binary[o["name"]] = (
                bool(op.get("binary_data", default_binary))
                if isinstance(op, dict)
                else default_binary
            )
    out_binary.setdefault("", default_binary)
    return inputs, out_names, out_binary, req.get("id")


def _encode_outputs(
    model: str,
    version: int,
    outputs: dict[str, np.ndarray[Any, Any]],
    binary: dict[str, bool],
    req_id: Any,
) -> tuple[int, list[tuple[str, str]], bytes]:
    descr: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs.items():
        arr = np.asarray(arr)
        dtype = DATATYPE_OF.get(arr.dtype)
        if dtype is None:
            raise HttpError(500, f"output {name!r} has type {arr.dtype}, which the API cannot send")
        item: dict[str, Any] = {"name": name, "datatype": dtype, "shape": list(arr.shape)}
        if binary.get(name, binary[""]):
            raw = arr.tobytes()  # C order
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = arr.ravel()
        descr.append(item)
    doc: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": descr}
    if isinstance(req_id, str):
        doc["id"] = req_id
    head = dumps(doc)
    headers = [("edgemesh-model-version", str(version))]
    if not blobs:
        return 200, [("content-type", "application/json"), *headers], head
    headers += [
        ("content-type", "application/octet-stream"),
        ("inference-header-content-length", str(len(head))),
    ]
    return 200, headers, b"".join([head, *blobs])


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


__all__ = ["DEFAULT_MAX_BODY", "Api", "EdgemeshError", "serve_api"]
