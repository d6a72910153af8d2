"""The infer request decoder on arbitrary input: it returns tensors or raises HttpError
(a 4xx), never anything else.  Pure, no server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.runtime.oip import HttpError, loads, parse_infer_request, split_body
from tests.helpers import FAST

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "BYTES", "x", "binary_data_size"]),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "inputs",
                    "outputs",
                    "name",
                    "datatype",
                    "shape",
                    "data",
                    "parameters",
                    "binary_data_size",
                    "binary_data",
                    "binary_data_output",
                    "id",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


def decode(body: bytes, header_len: bytes | None) -> None:
    error: HttpError | None = None
    try:
        req, binary = split_body(body, header_len)
        inputs, _, _, _ = parse_infer_request(req, binary)
    except HttpError as e:
        error = e
    if error is not None:
        assert 400 <= error.status < 500
        assert "\n" not in str(error)
        return
    for arr in inputs.values():
        assert isinstance(arr, np.ndarray)


@FAST
@given(json_values, st.binary(max_size=64))
def test_any_json_with_any_binary_tail(doc: Any, tail: bytes) -> None:
    head = json.dumps(doc).encode()
    decode(head + tail, str(len(head)).encode())
    decode(head, None)


@FAST
@given(st.binary(max_size=200), st.one_of(st.none(), st.binary(max_size=6)))
def test_any_bytes(body: bytes, header_len: bytes | None) -> None:
    decode(body, header_len)


@pytest.mark.parametrize(
    "item",
    [
        {"name": "x", "datatype": [], "shape": [1], "data": [1]},
        {"name": "x", "datatype": "FP32", "shape": [1], "data": [[1, 2], [3]]},
        {"name": "x", "datatype": "INT64", "shape": [1], "data": [2**70]},
        {"name": "x", "datatype": "FP32", "shape": [2**31 - 1, 2**31 - 1], "data": [1]},
        {"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]},
        {"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": -4}},
    ],
)
def test_hostile_inputs_are_400(item: dict[str, Any]) -> None:
    with pytest.raises(HttpError) as e:
        parse_infer_request({"inputs": [item]}, b"")
    assert e.value.status == 400


def _lists(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lists(v) for v in value]
    return value


@FAST
@given(json_values, st.sampled_from(["inputs", "outputs"]))
def test_fast_loads_is_orjson_with_float_tensors_as_arrays(doc: Any, key: str) -> None:
    text = json.dumps(doc).encode()
    try:
        want = orjson.loads(text)
    except orjson.JSONDecodeError:
        with pytest.raises(orjson.JSONDecodeError):
            loads(text, key)
        return
    assert _lists(loads(text, key)) == want


def test_fast_loads_reads_float_tensor_data_into_arrays() -> None:
    items = [
        {"name": "a", "datatype": "FP32", "data": [1, 2.5, -3e-5]},
        {"name": "b", "datatype": "INT64", "data": [1, 2]},  # ints: the list, as before
        {"name": "c", "datatype": "FP16", "data": [[1, 2], [3, 4]]},  # nested: the list
        {"name": "d", "datatype": "FP64", "data": [1, True]},  # not all numbers: the list
    ]
    got = loads(json.dumps({"inputs": items, "id": "r"}).encode(), "inputs")
    assert got["id"] == "r"
    a, b, c, d = (t["data"] for t in got["inputs"])
    assert isinstance(a, np.ndarray)
    assert a.dtype == np.float64
    assert a.tolist() == [1, 2.5, -3e-5]
    assert (b, c, d) == ([1, 2], [[1, 2], [3, 4]], [1, True])
