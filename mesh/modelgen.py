"""Generating example ONNX models: a real, runnable MLP of a chosen size.

What it owns: a small protobuf writer for ONNX ``ModelProto`` that streams weight
tensors to disk in blocks, so a 1 GiB model is written with a few MiB of memory.
The model is ``y = relu(x @ W + b)`` with ``x: float32[batch, D]``; ``D`` follows
from the requested size.  Weights come from a seeded generator: the same seed gives
the same bytes, another seed a different model with the same interface.

Used by ``edgemesh example-model``, the README quick start, tests and benchmarks.
Non-goals: general ONNX authoring (tests use ``onnx.helper`` for that).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mesh.errors import ConfigError

_BLOCK_FLOATS = 1 << 20  # 4 MiB per generated block: bounded memory, few Python calls
OPSET = 17
IR_VERSION = 8
MIN_WIDTH = 4
MAX_MODEL_BYTES = 1 << 31  # protobuf's 2 GiB message limit


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wt: int) -> bytes:
    return _varint(num << 3 | wt)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, 2) + _varint(len(payload)) + payload


def _int_field(num: int, value: int) -> bytes:
    return _key(num, 0) + _varint(value & 0xFFFFFFFFFFFFFFFF)


def _str(num: int, text: str) -> bytes:
    return _len_field(num, text.encode())


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _len_field(1, _str(2, d) if isinstance(d, str) else _int_field(1, d)) for d in dims
    )
    tensor_type = _int_field(1, 1) + _len_field(2, shape)  # elem_type FLOAT
    return _str(1, name) + _len_field(2, _len_field(1, tensor_type))


def _node(op: str, inputs: list[str], outputs: list[str], name: str) -> bytes:
    return (
        b"".join(_str(1, i) for i in inputs)
        + b"".join(_str(2, o) for o in outputs)
        + _str(3, name)
        + _str(4, op)
    )


def width_for_size(size_bytes: int) -> int:
    """Width D whose D x D float32 weight matrix fills ``size_bytes``."""
    return max(MIN_WIDTH, math.isqrt(max(size_bytes, 0) // 4))


def _weights(width: int, seed: int) -> Iterator[bytes]:
    rng = np.random.default_rng(seed)
    remaining = width * width
    scale = 1.0 / math.sqrt(width)
    while remaining:
        n = min(remaining, _BLOCK_FLOATS)
        yield (rng.standard_normal(n, dtype=np.float32) * np.float32(scale)).tobytes()
        remaining -= n


def write_example_model(path: Path, *, size_bytes: int = 1 << 20, seed: int = 0) -> int:
    """Write the example MLP to ``path`` (atomically); returns its width D."""
    if size_bytes > MAX_MODEL_BYTES:
        raise ConfigError(f"example models are at most {MAX_MODEL_BYTES} bytes")
    width = width_for_size(size_bytes)
    w_bytes = width * width * 4
    w_header = (
        _int_field(1, width)
        + _int_field(1, width)
        + _int_field(2, 1)
        + _str(8, "W")
        + _key(9, 2)
        + _varint(w_bytes)
    )
    w_len = len(w_header) + w_bytes
    rng = np.random.default_rng(seed + 1_000_003)
    bias = (rng.standard_normal(width, dtype=np.float32) * np.float32(0.01)).tobytes()
    b_tensor = _int_field(1, width) + _int_field(2, 1) + _str(8, "b") + _len_field(9, bias)
    graph_rest = (
        _len_field(1, _node("MatMul", ["x", "W"], ["h"], "matmul"))
        + _len_field(1, _node("Add", ["h", "b"], ["z"], "add"))
        + _len_field(1, _node("Relu", ["z"], ["y"], "relu"))
        + _str(2, "edgemesh-example-mlp")
        + _len_field(5, b_tensor)
        + _len_field(11, _value_info("x", ["batch", width]))
        + _len_field(12, _value_info("y", ["batch", width]))
    )
    graph_len = len(_key(5, 2)) + len(_varint(w_len)) + w_len + len(graph_rest)
    head = (
        _int_field(1, IR_VERSION)
        + _str(2, "edgemesh")
        + _str(3, "example")
        + _len_field(8, _int_field(2, OPSET))
        + _key(7, 2)
        + _varint(graph_len)
        + _key(5, 2)
        + _varint(w_len)
        + w_header
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(head)
            for block in _weights(width, seed):
                f.write(block)
            f.write(graph_rest)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return width
