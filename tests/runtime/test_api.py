"""The local HTTP API over loopback: Open Inference Protocol routes, the binary tensor
extension, bad input, limits, metrics, status and rollback, hot swap under load."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import trio

from mesh.runtime import api
from mesh.runtime.api import serve_api
from mesh.runtime.inference import InferenceService
from mesh.runtime.v2client import ApiError, Reply, V2Client, encode_infer
from tests.runtime import models
from tests.runtime.conftest import Node, Running

if TYPE_CHECKING:
    from trio_typing import TaskStatus

X = np.arange(8, dtype=np.float32).reshape(2, 4)


async def activate(node: Node, running: Running, version: int, model: str = "m") -> None:
    await running.service.offer(node.publish_onnx(models.scale(float(version)), model, version))


async def post_json(c: V2Client, path: str, doc: Any) -> Reply:
    return await c.request("POST", path, json.dumps(doc).encode())


def infer_doc(**overrides: Any) -> dict[str, Any]:
    item = {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.ravel().tolist()}
    item.update(overrides)
    return {"inputs": [item]}


async def test_health_server_and_model_metadata(node: Node, running: Running) -> None:
    await activate(node, running, 1)
    async with running.client() as c:
        assert (await c.request("GET", "/v2/health/live")).json() == {"live": True}
        assert (await c.request("GET", "/v2/health/ready")).status == 200
        server = (await c.request("GET", "/v2")).json()
        assert server["name"] == "edgemesh"
        assert "binary_tensor_data" in server["extensions"]
        meta = await c.request("GET", "/v2/models/m")
        assert meta.headers["edgemesh-model-version"] == "1"
        assert meta.json() == {
            "name": "m",
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}],
        }
        assert (await c.request("GET", "/v2/models/m/versions/1")).status == 200
        ready = await c.request("GET", "/v2/models/m/versions/1/ready")
        assert ready.json() == {"name": "m", "version": "1", "ready": True}
        assert (await c.request("GET", "/v2/models/m/ready")).status == 200
        for path in ("/v2/models/m/versions/2", "/v2/models/zz", "/v2/models/zz/ready"):
            assert (await c.request("GET", path)).status == 404


async def test_infer_json_and_binary_name_the_version(node: Node, running: Running) -> None:
    await activate(node, running, 3)
    async with running.client() as c:
        for binary in (False, True):
            version, out = await c.infer("m", {"x": X}, binary=binary)
            assert version == 3
            np.testing.assert_array_equal(out["y"], X * 3)
        assert (await c.infer("m", {"x": X}, version=3))[0] == 3
        reply = await post_json(c, "/v2/models/m/infer", {**infer_doc(), "id": "req-7"})
        doc = reply.json()
        assert reply.headers["edgemesh-model-version"] == "3"
        assert doc["model_name"] == "m"
        assert doc["model_version"] == "3"
        assert doc["id"] == "req-7"
        assert doc["outputs"] == [
            {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": (X * 3).ravel().tolist()}
        ]


async def test_binary_per_output_request_like_tritonclient(node: Node, running: Running) -> None:
    """The request tritonclient sends by default: binary inputs, outputs asked for by
    name with ``binary_data: true``."""
    await activate(node, running, 2)
    raw = X.tobytes()
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    async with running.client() as c:
        reply = await c.request(
            "POST",
            "/v2/models/m/infer",
            head + raw,
            [("inference-header-content-length", str(len(head)))],
        )
    assert reply.status == 200
    n = int(reply.headers["inference-header-content-length"])
    doc = json.loads(reply.body[:n])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 32}
    np.testing.assert_array_equal(np.frombuffer(reply.body[n:], np.float32).reshape(2, 4), X * 2)


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        (infer_doc(name="z"), 400, "unknown input 'z'"),
        (infer_doc(datatype="FP64"), 400, "type float64, the model expects float32"),
        (infer_doc(datatype="INT64", data=[1] * 8), 400, "type int64"),
        (infer_doc(datatype="BYTES"), 400, "unsupported datatype 'BYTES'"),
        (infer_doc(shape=[2, 2, 2]), 400, "shape [2,2,2], expected x: float32[batch,4]"),
        (infer_doc(shape=[4, 4]), 400, "8 values do not fill shape [4, 4]"),
        (infer_doc(shape="2x4"), 400, "'shape' must be a list"),
        (infer_doc(data=["a"] * 8), 400, "data is not FP32"),
        ({"inputs": "x"}, 400, "'inputs' list"),
        ([1, 2], 400, "'inputs' list"),
        ({**infer_doc(), "outputs": [{"name": "q"}]}, 400, "unknown output 'q'"),
    ],
)
async def test_bad_tensors_are_400_naming_the_problem(
    node: Node, running: Running, doc: Any, status: int, message: str
) -> None:
    await activate(node, running, 1)
    async with running.client() as c:
        reply = await post_json(c, "/v2/models/m/infer", doc)
        assert reply.status == status
        assert message in reply.json()["error"]
        # the connection stays usable after a client error
        assert (await c.infer("m", {"x": X}))[0] == 1


async def test_unknown_model_or_version_is_404(node: Node, running: Running) -> None:
    await activate(node, running, 1)
    async with running.client() as c:
        reply = await post_json(c, "/v2/models/nope/infer", infer_doc())
        assert reply.status == 404
        assert reply.json() == {"error": "unknown model 'nope'"}
        reply = await post_json(c, "/v2/models/m/versions/9/infer", infer_doc())
        assert reply.status == 404
        assert "version 9 is not active (active: 1)" in reply.json()["error"]
        assert (await c.request("GET", "/nothing")).status == 404
        assert (await c.request("GET", "/v2/models/m/infer")).status == 405


async def test_malformed_json_and_binary_headers_are_400(node: Node, running: Running) -> None:
    await activate(node, running, 1)
    body, headers = encode_infer({"x": X}, binary=True)
    n = int(dict(headers)["inference-header-content-length"])
    cases = [
        (b"{not json", [], "malformed JSON"),
        (body, [("inference-header-content-length", "abc")], "not a number"),
        (body, [("inference-header-content-length", str(len(body) + 1))], "does not fit"),
        (body[:-4], [("inference-header-content-length", str(n))], "binary data is truncated"),
        (body + b"xx", [("inference-header-content-length", str(n))], "belong to no input"),
        (
            body[:n].replace(b'"binary_data_size":32', b'"binary_data_size":31') + body[n:],
            [("inference-header-content-length", str(n))],
            "binary_data_size 31 does not match",
        ),
    ]
    async with running.client() as c:
        for data, hdrs, message in cases:
            reply = await c.request("POST", "/v2/models/m/infer", data, hdrs)
            assert reply.status == 400, reply.body
            assert message in reply.json()["error"]


async def test_body_over_the_limit_is_413(node: Node, nursery: trio.Nursery) -> None:
    service = InferenceService(node.data_dir, node.store, warmup_runs=0)
    await service.start()
    await service.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    host, port = await nursery.start(
        lambda task_status: serve_api(service, max_body_bytes=1024, task_status=task_status)
    )
    async with V2Client(host, port) as c:
        big = np.zeros((100, 4), np.float32)
        with pytest.raises(ApiError, match="over the limit of 1024 bytes") as e:
            await c.infer("m", {"x": big})
        assert e.value.status == 413
        assert (await c.infer("m", {"x": X}))[0] == 1  # a new connection works


async def test_oversized_headers_are_refused(node: Node, running: Running) -> None:
    async with running.client() as c:
        reply = await c.request("GET", "/v2", headers=[("x-big", "a" * 20_000)])
        assert reply.status == 431


async def test_raw_garbage_gets_400_and_close(running: Running) -> None:
    stream = await trio.open_tcp_stream(running.host, running.port)
    async with stream:
        await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 ")


async def test_keep_alive_serves_many_requests_on_one_connection(
    node: Node, running: Running
) -> None:
    await activate(node, running, 1)
    async with running.client() as c:
        await c.infer("m", {"x": X})
        first = c._stream
        for _ in range(20):
            await c.infer("m", {"x": X})
        assert c._stream is first


async def test_metrics_status_and_rollback_endpoints(node: Node, running: Running) -> None:
    await activate(node, running, 1)
    await activate(node, running, 2)
    async with running.client() as c:
        await c.infer("m", {"x": X})
        await post_json(c, "/v2/models/m/infer", infer_doc(name="z"))
        text = (await c.request("GET", "/metrics")).body.decode()
        assert 'edgemesh_inference_requests_total{model="m"} 2' in text
        assert 'edgemesh_inference_errors_total{model="m",kind="bad_request"} 1' in text
        assert 'edgemesh_model_active_version{model="m"} 2' in text
        assert 'edgemesh_model_swaps_total{model="m"} 2' in text
        assert re.search(r'edgemesh_inference_latency_seconds_count\{model="m"\} 2', text)
        assert 'edgemesh_inference_latency_seconds_bucket{model="m",le="+Inf"} 2' in text
        status = (await c.request("GET", "/edgemesh/status")).json()
        assert status["models"]["m"]["active_version"] == 2
        reply = await c.request("POST", "/edgemesh/models/m/rollback")
        assert reply.json() == {"model": "m", "active_version": 1}
        assert (await c.infer("m", {"x": X}))[0] == 1
        reply = await c.request("POST", "/edgemesh/models/m/rollback")
        assert reply.status == 409
        assert "no earlier version" in reply.json()["error"]
        assert (await c.request("POST", "/edgemesh/models/zz/rollback")).status == 404


async def test_driver_status_feeds_status_and_metrics(node: Node, nursery: trio.Nursery) -> None:
    service = InferenceService(node.data_dir, node.store)
    await service.start()
    driver = {
        "peer_id": "12D3KooWtest",
        "addrs": [],
        "peers": ["a", "b"],
        "bytes_uploaded": 10,
        "bytes_downloaded": 20,
        "models": service.status(),
    }
    host, port = await nursery.start(
        lambda task_status: serve_api(service, status=lambda: driver, task_status=task_status)
    )
    async with V2Client(host, port) as c:
        assert (await c.request("GET", "/edgemesh/status")).json() == driver
        text = (await c.request("GET", "/metrics")).body.decode()
    assert "edgemesh_peers 2" in text
    assert 'edgemesh_mesh_bytes_total{direction="downloaded"} 20' in text


async def test_hot_swap_under_load_drops_nothing(node: Node, running: Running) -> None:
    """Clients send requests continuously while v1 -> v2 -> v3 activate and then an
    explicit rollback happens: no failed request, every answer computed by exactly the
    version it names, versions only go up except by the rollback."""
    rids = [node.publish_onnx(models.scale(float(v)), "m", v) for v in (1, 2, 3)]
    await running.service.offer(rids[0])
    seen: list[list[int]] = [[] for _ in range(4)]
    failures: list[str] = []
    done = trio.Event()

    async def client(i: int) -> None:
        async with running.client() as c:
            while not done.is_set():
                try:
                    version, out = await c.infer("m", {"x": X}, binary=i % 2 == 0)
                except ApiError as e:
                    failures.append(str(e))
                    continue
                # exactly one version computed it: the factor is the version number
                np.testing.assert_array_equal(out["y"], X * version)
                seen[i].append(version)

    async def until_all_see(version: int) -> None:
        while not all(s and s[-1] == version for s in seen):
            await trio.sleep(0.005)
        counts = [len(s) for s in seen]
        while not all(len(s) >= n + 10 for s, n in zip(seen, counts, strict=True)):
            await trio.sleep(0.005)

    async with trio.open_nursery() as n:
        for i in range(len(seen)):
            n.start_soon(client, i)
        await until_all_see(1)
        await running.service.offer(rids[1])
        await until_all_see(2)
        await running.service.offer(rids[2])
        await until_all_see(3)
        assert await running.service.rollback("m") == 2
        await until_all_see(2)
        done.set()
    assert failures == []
    for s in seen:
        pattern = "".join(map(str, s))
        assert re.fullmatch(r"1+2+3+2+", pattern), pattern


async def test_expect_100_continue_is_answered(node: Node, running: Running) -> None:
    """curl sends ``Expect: 100-continue`` for bodies over 1 KiB and waits for it."""
    await activate(node, running, 1)
    body = json.dumps(infer_doc()).encode()
    head = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(running.host, running.port)
    async with stream:
        await stream.send_all(head)
        first = await stream.receive_some(4096)
        assert first.startswith(b"HTTP/1.1 100 ")
        await stream.send_all(body)
        data = b""
        while b'"model_version"' not in data:
            data += await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 200 ")


async def test_chunked_request_bodies_are_read_and_limited(
    node: Node, nursery: trio.Nursery
) -> None:
    service = InferenceService(node.data_dir, node.store, warmup_runs=0)
    await service.start()
    await service.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    host, port = await nursery.start(
        lambda task_status: serve_api(service, max_body_bytes=4096, task_status=task_status)
    )
    body = json.dumps(infer_doc()).encode()

    async def send_chunked(payload: bytes) -> bytes:
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
            for i in range(0, len(payload), 100):
                part = payload[i : i + 100]
                await stream.send_all(b"%x\r\n%s\r\n" % (len(part), part))
            await stream.send_all(b"0\r\n\r\n")
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
            return data

    assert (await send_chunked(body)).startswith(b"HTTP/1.1 200 ")
    big = json.dumps(infer_doc(data=[0.0] * 8, pad="x" * 5000)).encode()
    reply = await send_chunked(big)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"over the limit of 4096 bytes" in reply


async def test_a_bug_in_a_handler_is_a_500_and_the_api_lives_on(
    node: Node, running: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await activate(node, running, 1)

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    async with running.client() as c:
        with monkeypatch.context() as m:
            m.setattr(running.service, "infer_then", broken)
            reply = await post_json(c, "/v2/models/m/infer", infer_doc())
        assert reply.status == 500
        assert reply.json() == {"error": "internal error: RuntimeError"}
        assert "API request failed" in caplog.text
        assert (await c.infer("m", {"x": X}))[0] == 1


async def _raw_exchange(running: Running, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(running.host, running.port)
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(30):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return out


async def test_pipelined_requests_head_and_connection_close(running: Running) -> None:
    live = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    head = b"HEAD /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    last = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    out = await _raw_exchange(running, live + head + last)  # ends: the server closes
    responses = out.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 3
    assert all(r.startswith(b"200 OK\r\n") for r in responses)
    assert responses[0].endswith(b'\r\n\r\n{"live":true}')
    assert b"content-length: 13\r\n" in responses[1]  # what a GET would get ...
    assert responses[1].endswith(b"\r\n\r\n")  # ... without the body
    assert b"connection: close\r\n" in responses[2]


async def test_http_1_0_client_gets_its_answer_and_the_connection_closed(
    running: Running,
) -> None:
    out = await _raw_exchange(running, b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in out
    assert out.endswith(b'{"live":true}')


async def _one_reply_server(
    reply: bytes, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def handle(stream: trio.SocketStream) -> None:  # one answer, then close
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            await stream.send_all(reply)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handle, listeners)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", "chunked"),
        (b"SPDY/3 200 OK\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nab", "more than one response"),
    ],
)
async def test_client_refuses_responses_it_cannot_read(
    nursery: trio.Nursery, reply: bytes, message: str
) -> None:
    port = await nursery.start(_one_reply_server, reply)
    async with V2Client("127.0.0.1", port) as c:
        with pytest.raises(ApiError, match=message):
            await c.request("GET", "/")
        assert c._stream is None  # a connection in an unknown state is not reused


async def test_client_reads_interim_and_close_delimited_responses(nursery: trio.Nursery) -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it"
    port = await nursery.start(_one_reply_server, reply)
    async with V2Client("127.0.0.1", port) as c:
        for _ in range(2):  # the second request opens a new connection
            with trio.fail_after(30):
                reply_ = await c.request("GET", "/")
            assert (reply_.status, reply_.body) == (200, b"all of it")
            assert c._stream is None


async def test_a_response_bigger_than_the_socket_buffer_arrives_whole(
    node: Node, running: Running
) -> None:
    # the thread that ran the model writes what the socket takes at once; the event
    # loop sends the rest
    await activate(node, running, 2)
    x = np.arange(4 * 500_000, dtype=np.float32).reshape(500_000, 4)  # 8 MB
    async with running.client() as c:
        for binary, rows in ((True, 500_000), (False, 100_000)):
            version, out = await c.infer("m", {"x": x[:rows]}, binary=binary)
            assert version == 2
            np.testing.assert_array_equal(out["y"], x[:rows] * 2)
        assert (await c.infer("m", {"x": X}))[0] == 2  # the connection is still in step


@pytest.mark.parametrize(
    ("head", "plain"),
    [
        (b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n", True),
        (b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x:1\r\nContent-Length:  12 \r\n\r\n", True),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nx-empty:\r\nuser-agent: a b\r\n\r\n", True),
        (b"GET /a HTTP/1.0\r\nhost: x\r\n\r\n", False),  # HTTP/1.0: h11 (no keep-alive)
        (b"PUT /a HTTP/1.1\r\nhost: x\r\n\r\n", False),
        (b"GET * HTTP/1.1\r\nhost: x\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\n\r\n", False),  # no Host
        (b"GET /a HTTP/1.1\r\nhost: x\r\nhost: y\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\ncontent-length: 1 2\r\n\r\n", False),
        (b"POST /a HTTP/1.1\r\nhost: x\r\nTransfer-Encoding: chunked\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nx: a\r\n b\r\n\r\n", False),  # folded line
        (b"GET /a HTTP/1.1\r\nhost: x\r\nx y: a\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nx: \xe9\r\n\r\n", False),
        (b"GET /a HTTP/1.1\r\nhost: x\r\nx: a\rb\r\n\r\n", False),
        (b"GET /a HTTP/1.1\nhost: x\r\n\r\n", False),
        (b"\r\nGET /a HTTP/1.1\r\nhost: x\r\n\r\n", False),
    ],
)
def test_only_plain_request_heads_skip_h11(head: bytes, plain: bool) -> None:
    parsed = api._simple_head(head, head.find(b"\r\n\r\n") + 4)
    assert (parsed is not None) is plain
    if parsed is not None:
        assert parsed.end == len(head)
        assert all(k == k.lower() and v == v.strip() for k, v in parsed.fields)


async def test_requests_outside_the_plain_form_get_h11s_answers(
    node: Node, running: Running
) -> None:
    await activate(node, running, 1)
    twice = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n"
    twice += b"\r\n"
    no_host = b"GET /v2/health/live HTTP/1.1\r\n\r\n"
    for bad in (twice, no_host):
        assert (await _raw_exchange(running, bad)).startswith(b"HTTP/1.1 400 ")
    folded = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx: a\r\n b\r\nconnection: close\r\n\r\n"
    assert (await _raw_exchange(running, folded)).startswith(b"HTTP/1.1 200 ")  # h11 unfolds
    body = json.dumps(infer_doc()).encode()
    chunked = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    plain = (
        f"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    last = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    # one connection, pipelined: h11's request, a plain one, h11's again (then closed)
    out = await _raw_exchange(running, chunked + plain + last)
    responses = out.split(b"HTTP/1.1 ")[1:]
    assert [r[:6] for r in responses] == [b"200 OK"] * 3
    assert b'"model_version":"1"' in responses[0]
    assert b'"model_version":"1"' in responses[1]
    # a plain request whose body arrives in pieces, after its head
    stream = await trio.open_tcp_stream(running.host, running.port)
    async with stream:
        await stream.send_all(plain[: len(plain) - len(body)])
        for i in range(0, len(body), 7):
            await stream.send_all(body[i : i + 7])
        data = b""
        while b'"model_version"' not in data:
            data += await stream.receive_some(65536)
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
