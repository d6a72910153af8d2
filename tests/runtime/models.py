"""Small ONNX models built with ``onnx.helper`` for the activation checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    model: onnx.ModelProto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8
    )
    return model


def scale(factor: float, *, width: int | str = 4, elem: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """``y = x * factor`` with ``x: [batch, width]``: versions differ by their factor, so a
    response shows which version computed it."""
    np_dtype = helper.tensor_dtype_to_np_dtype(elem)
    k = numpy_helper.from_array(np.array(factor, dtype=np_dtype), "k")
    return _model(
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [helper.make_tensor_value_info("x", elem, ["batch", width])],
        [helper.make_tensor_value_info("y", elem, ["batch", width])],
        [k],
    )


def gather(offset: int = 0) -> onnx.ModelProto:
    """``y = x[:, idx] + offset``: a request with an out-of-range ``idx`` fails in
    onnxruntime (used to trip the health rule) while zeros run fine."""
    off = numpy_helper.from_array(np.array(offset, dtype=np.float32), "off")
    return _model(
        [
            helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
            helper.make_node("Add", ["g", "off"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("idx", TensorProto.INT64, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        [off],
    )


def unloadable() -> onnx.ModelProto:
    """Structurally valid ONNX that onnxruntime refuses: an operator that does not exist."""
    return _model(
        [helper.make_node("NoSuchOperator", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )


def fails_to_run() -> onnx.ModelProto:
    """Loads, but every inference fails: a reshape of ``[batch, 4]`` to ``[3, 5]``."""
    shape = numpy_helper.from_array(np.array([3, 5], dtype=np.int64), "shape")
    return _model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [shape],
    )
