"""The streaming ONNX interface reader, checked against onnx's own parser and onnxruntime."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from mesh.core.manifest import ELEM_TYPES, ModelInterface, TensorSpec
from mesh.errors import ModelFormatError
from mesh.modelgen import _key, _varint, write_example_model
from mesh.onnxsig import read_onnx
from tests.helpers import (
    FAST,
    FLOAT,
    OnnxShape,
    expected_interface,
    identity_model,
    save_model,
    value_info,
)


def check_against_onnx(path: Path) -> ModelInterface:
    """read_onnx must agree with onnx.load (without external data) on the interface."""
    got = read_onnx(path).interface
    assert got == expected_interface(onnx.load(str(path), load_external_data=False))
    return got


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    return save_model(
        identity_model([("x", FLOAT, ["N", 3]), ("i", TensorProto.INT64, [None, 2])]),
        tmp_path / "m.onnx",
    )


def test_symbolic_and_unknown_dims(tmp_path: Path) -> None:
    model = identity_model(
        [
            ("sym", FLOAT, ["batch", "seq len", 3]),
            ("unknown", FLOAT, [None, None]),
            ("scalar", FLOAT, []),
            ("norank", FLOAT, None),
            ("zero", FLOAT, [0, 1]),
        ]
    )
    got = check_against_onnx(save_model(model, tmp_path / "m.onnx"))
    assert got.inputs == (
        TensorSpec("sym", "float32", ("batch", "seq len", 3)),
        TensorSpec("unknown", "float32", (None, None)),
        TensorSpec("scalar", "float32", ()),
        TensorSpec("norank", "float32", None),
        TensorSpec("zero", "float32", (0, 1)),
    )
    assert [o.name for o in got.outputs] == [
        "sym_out",
        "unknown_out",
        "scalar_out",
        "norank_out",
        "zero_out",
    ]


def test_dim_with_empty_param_and_negative_value_is_unknown(tmp_path: Path) -> None:
    model = identity_model([("x", FLOAT, [1, 2])])
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = ""
    dims[1].dim_value = -1
    got = check_against_onnx(save_model(model, tmp_path / "m.onnx"))
    assert got.inputs[0].shape == (None, None)


ELEM_CASES = [
    (TensorProto.FLOAT, "float32"),
    (TensorProto.INT64, "int64"),
    (TensorProto.FLOAT16, "float16"),
    (TensorProto.BOOL, "bool"),
    (TensorProto.UINT8, "uint8"),
    (TensorProto.INT8, "int8"),
    (TensorProto.INT32, "int32"),
    (TensorProto.DOUBLE, "float64"),
    (TensorProto.STRING, "string"),
    (TensorProto.BFLOAT16, "bfloat16"),
    (TensorProto.UINT64, "uint64"),
    (TensorProto.COMPLEX64, "complex64"),
]


def test_element_types(tmp_path: Path) -> None:
    model = identity_model([(f"in_{name}", elem, [2]) for elem, name in ELEM_CASES])
    got = check_against_onnx(save_model(model, tmp_path / "m.onnx"))
    assert [t.elem_type for t in got.inputs] == [name for _, name in ELEM_CASES]
    assert ELEM_TYPES[TensorProto.FLOAT16] == "float16"


def test_initializers_listed_as_inputs_are_excluded(tmp_path: Path) -> None:
    """IR 3 style: weights appear in graph.input too; they are not real inputs."""
    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "W")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["y"]),
        ],
        "ir3",
        [
            value_info("W", FLOAT, [3, 3]),
            value_info("x", FLOAT, ["n", 3]),
            value_info("b", FLOAT, [3]),
        ],
        [value_info("y", FLOAT, ["n", 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=3)
    path = save_model(model, tmp_path / "m.onnx")
    got = check_against_onnx(path)
    assert got.inputs == (TensorSpec("x", "float32", ("n", 3)),)
    assert got.ir_version == 3
    info = read_onnx(path)
    assert info.node_count == 2
    assert info.external_files == ()


def test_multiple_opsets(tmp_path: Path) -> None:
    opsets = (("", 17), ("ai.onnx.ml", 3), ("com.microsoft", 1))
    model = identity_model([("x", FLOAT, [1])], opsets=opsets)
    got = check_against_onnx(save_model(model, tmp_path / "m.onnx"))
    assert got.opsets == opsets


def test_external_data_files_listed(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), "W")
    b = numpy_helper.from_array(np.arange(64, dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "ext",
        [value_info("x", FLOAT, ["batch", 64])],
        [value_info("y", FLOAT, ["batch", 64])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=0,
    )
    info = read_onnx(path)
    assert info.external_files == ("m.onnx.data",)
    assert info.interface == expected_interface(onnx.load(str(path), load_external_data=False))
    assert path.stat().st_size < 1024  # the weights are not in the model file
    # and a missing data file is an error, not a silently incomplete release
    (tmp_path / "m.onnx.data").unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        read_onnx(path)


def test_external_data_in_several_files(tmp_path: Path) -> None:
    tensors = [numpy_helper.from_array(np.full((32, 32), i, np.float32), f"W{i}") for i in range(3)]
    nodes = [helper.make_node("Add", ["x", "W0"], ["h0"])] + [
        helper.make_node("Add", [f"h{i - 1}", f"W{i}"], [f"h{i}"]) for i in (1, 2)
    ]
    graph = helper.make_graph(
        nodes, "g", [value_info("x", FLOAT, [32, 32])], [value_info("h2", FLOAT, [32, 32])], tensors
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "weights").mkdir()
    for i, t in enumerate(model.graph.initializer):
        (tmp_path / "weights" / f"w{i}.bin").write_bytes(t.raw_data)
        onnx.external_data_helper.set_external_data(t, f"weights/w{i}.bin")
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
    path = save_model(model, tmp_path / "m.onnx")
    assert read_onnx(path).external_files == ("weights/w0.bin", "weights/w1.bin", "weights/w2.bin")


@pytest.mark.parametrize("location", ["../escape.bin", "/etc/passwd", "a/../../b", ".hidden"])
def test_external_data_outside_the_model_dir_refused(tmp_path: Path, location: str) -> None:
    w = numpy_helper.from_array(np.ones(4, np.float32), "W")
    onnx.external_data_helper.set_external_data(w, location)
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "W"], ["y"])],
        "g",
        [value_info("x", FLOAT, [4])],
        [value_info("y", FLOAT, [4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (tmp_path / "sub").mkdir()
    path = save_model(model, tmp_path / "sub" / "m.onnx")
    (tmp_path / "escape.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFormatError, match="not a plain relative path"):
        read_onnx(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: helper.make_tensor_sequence_value_info("s", FLOAT, [2]), "sequence"),
        (
            lambda: helper.make_value_info(
                "m",
                helper.make_map_type_proto(
                    TensorProto.INT64, helper.make_tensor_type_proto(FLOAT, [1])
                ),
            ),
            "map",
        ),
        (
            lambda: helper.make_value_info(
                "o", helper.make_optional_type_proto(helper.make_tensor_type_proto(FLOAT, [1]))
            ),
            "optional",
        ),
        (lambda: helper.make_sparse_tensor_value_info("sp", FLOAT, [4, 4]), "sparse"),
    ],
)
def test_non_tensor_inputs_refused(
    tmp_path: Path, make: Callable[[], onnx.ValueInfoProto], kind: str
) -> None:
    model = identity_model([("x", FLOAT, [1])], extra_inputs=[make()])
    with pytest.raises(ModelFormatError, match=kind):
        read_onnx(save_model(model, tmp_path / "m.onnx"))


def _truncations(size: int) -> Iterator[int]:
    yield from range(0, min(size, 200))
    yield from range(200, size, max(1, size // 97))


def test_every_truncation_refused(small_model: Path, tmp_path: Path) -> None:
    data = small_model.read_bytes()
    cut = tmp_path / "cut.onnx"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(ModelFormatError):
            read_onnx(cut)


def test_truncated_example_model_refused(tmp_path: Path) -> None:
    path = tmp_path / "ex.onnx"
    write_example_model(path, size_bytes=64 * 1024, seed=3)
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    for n in _truncations(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(ModelFormatError):
            read_onnx(cut)


@pytest.mark.parametrize(
    "tail",
    [
        _key(99, 5) + b"\x00\x00",  # fixed32 field cut short
        _key(99, 1) + b"\x00" * 7,  # fixed64 field cut short
        _key(99, 2) + b"\x05ab",  # length-delimited field cut short
        _key(99, 0) + b"\x80",  # varint cut short
        _key(99, 3),  # group start: not used by ONNX
        b"\x00",  # field number 0
    ],
)
def test_malformed_trailing_field_refused(small_model: Path, tail: bytes) -> None:
    small_model.write_bytes(small_model.read_bytes() + tail)
    with pytest.raises(ModelFormatError):
        read_onnx(small_model)


def test_complete_unknown_trailing_fields_are_ignored(small_model: Path) -> None:
    before = read_onnx(small_model)
    tail = _key(99, 5) + b"\x00" * 4 + _key(98, 1) + b"\x00" * 8 + _key(97, 0) + b"\x01"
    small_model.write_bytes(small_model.read_bytes() + tail)
    assert read_onnx(small_model) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello, this is a text file\n", "not a valid ONNX model"),
        (b"ir_version: 8\ngraph {\n}\n", "not a valid ONNX model"),
        (b"\x08\x08", "no graph"),  # ir_version only
        (b"\xff" * 11, "varint"),
    ],
)
def test_not_a_model(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        read_onnx(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        read_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ModelFormatError, match="directory"):
        read_onnx(tmp_path)


def test_structural_requirements(tmp_path: Path) -> None:
    def without(field: str) -> onnx.ModelProto:
        model = identity_model([("x", FLOAT, [1])])
        if field == "node":
            del model.graph.node[:]
        elif field == "output":
            del model.graph.output[:]
        elif field == "opset_import":
            del model.opset_import[:]
        elif field == "ir_version":
            model.ClearField("ir_version")
        elif field == "input name":
            model.graph.input[0].name = ""
        return model

    for field, message in [
        ("node", "no nodes"),
        ("output", "no outputs"),
        ("opset_import", "no operator set"),
        ("ir_version", "ir_version"),
        ("input name", "no name"),
    ]:
        with pytest.raises(ModelFormatError, match=message):
            read_onnx(save_model(without(field), tmp_path / f"{field}.onnx"))


def test_implausibly_large_metadata_refused(small_model: Path) -> None:
    """An opset import of 2 MiB is not read into memory, even when the file is that big."""
    size = 2 * 1024 * 1024
    small_model.write_bytes(small_model.read_bytes() + _key(8, 2) + _varint(size) + bytes(size))
    with pytest.raises(ModelFormatError, match="implausibly large"):
        read_onnx(small_model)


def test_two_graphs_refused(small_model: Path) -> None:
    model = onnx.load(str(small_model))
    graph = model.graph.SerializeToString()
    small_model.write_bytes(model.SerializeToString() + _key(7, 2) + _varint(len(graph)) + graph)
    with pytest.raises(ModelFormatError, match="more than one graph"):
        read_onnx(small_model)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnxsig") / "random.onnx"


@FAST
@given(data=st.binary(min_size=1, max_size=400))
def test_random_bytes_raise_only_model_format_error(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    with pytest.raises(ModelFormatError):
        read_onnx(scratch)


@FAST
@given(data=st.data())
def test_mutated_model_raises_only_model_format_error(
    scratch: Path, small_model_bytes: bytes, data: st.DataObject
) -> None:
    mutated = bytearray(small_model_bytes)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(mutated) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    scratch.write_bytes(bytes(mutated))
    try:
        info = read_onnx(scratch)
    except ModelFormatError:
        return
    # read_onnx skips node bodies, so it may accept what onnx refuses; but where both
    # parse the file, they must see the same interface
    try:
        proto = onnx.load_from_string(bytes(mutated))
    except DecodeError:
        return
    assert info.interface == expected_interface(proto)


@pytest.fixture(scope="module")
def small_model_bytes() -> bytes:
    model = identity_model([("x", FLOAT, ["N", 3]), ("i", TensorProto.INT64, [None, 2])])
    data: bytes = model.SerializeToString()
    return data


# -- the generated example model --------------------------------------------------------


@pytest.mark.parametrize("size", [1, 64 * 1024, 300 * 1024])
def test_example_model_interface_and_onnxruntime(tmp_path: Path, size: int) -> None:
    path = tmp_path / "example.onnx"
    width = write_example_model(path, size_bytes=size, seed=5)
    info = read_onnx(path)
    assert info.interface == expected_interface(onnx.load(str(path)))
    assert info.interface.inputs == (TensorSpec("x", "float32", ("batch", width)),)
    assert info.interface.outputs == (TensorSpec("y", "float32", ("batch", width)),)
    assert info.interface.opsets == (("", 17),)
    assert info.node_count == 3
    assert info.external_files == ()
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("x", "tensor(float)", ["batch", width])
    assert (out.name, out.shape) == ("y", ["batch", width])
    x = np.linspace(-1, 1, 3 * width, dtype=np.float32).reshape(3, width)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (3, width)
    assert (y >= 0).all()  # relu


def test_example_model_is_deterministic_per_seed(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    write_example_model(a, size_bytes=16 * 1024, seed=1)
    write_example_model(b, size_bytes=16 * 1024, seed=1)
    write_example_model(c, size_bytes=16 * 1024, seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert read_onnx(a) == read_onnx(c)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_identity_model_runs_in_onnxruntime(tmp_path: Path) -> None:
    """The builder used above makes real models, not just parseable bytes."""
    shape: OnnxShape = ["n", 2]
    path = save_model(identity_model([("x", TensorProto.INT64, shape)]), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.arange(6, dtype=np.int64).reshape(3, 2)
    (y,) = session.run(None, {"x": x})
    assert (y == x).all()
