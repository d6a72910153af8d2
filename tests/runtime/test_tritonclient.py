"""Interoperability: the standard Triton HTTP client against the API, with its defaults
(binary tensors in both directions) and with JSON.  tritonclient[http] is a test
dependency; the test skips only where it is missing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import trio

from tests.runtime import models
from tests.runtime.conftest import Node, Running

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def triton_calls(url: str) -> dict[str, Any]:
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=url)
    try:
        out: dict[str, Any] = {
            "live": client.is_server_live(),
            "ready": client.is_model_ready("m"),
            "meta": client.get_model_metadata("m"),
        }
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(X)  # binary_data=True by default
        res = client.infer("m", [inp])
        out["binary"] = (res.as_numpy("y"), res.get_response()["model_version"])
        inp = httpclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(X, binary_data=False)
        want = httpclient.InferRequestedOutput("y", binary_data=False)
        res = client.infer("m", [inp], outputs=[want])
        out["json"] = (res.as_numpy("y"), res.get_response()["model_version"])
        return out
    finally:
        client.close()


async def test_tritonclient_defaults_work(node: Node, running: Running) -> None:
    pytest.importorskip("tritonclient.http")
    await running.service.offer(node.publish_onnx(models.scale(2.0), "m", 1))
    out = await trio.to_thread.run_sync(triton_calls, f"{running.host}:{running.port}")
    assert out["live"] is True
    assert out["ready"] is True
    assert out["meta"]["versions"] == ["1"]
    for mode in ("binary", "json"):
        y, version = out[mode]
        np.testing.assert_array_equal(y, X * 2)
        assert version == "1"
