"""Reading an ONNX model's interface without loading the model.

What it owns: a streaming reader of the ONNX protobuf wire format that extracts
what a release manifest records -- IR version, opset imports, graph inputs (minus
initializers) and outputs with element types and shapes (fixed, symbolic or
unknown dimensions) -- and the external-data files the model refers to.

Rules:
* Memory stays O(graph metadata): tensor payloads (``raw_data`` of initializers, which
  hold nearly all of a model's bytes) are skipped with ``seek``, never read.
* Anything that is not a structurally valid ONNX ``ModelProto`` -- truncated
  varints, lengths past the end of the file, wrong wire types, a missing graph or
  outputs -- raises :class:`~mesh.errors.ModelFormatError` with one line saying why.
* External-data locations must be relative paths inside the model's directory.

Non-goals: checking operator semantics (onnxruntime does that at activation),
writing ONNX (``mesh.modelgen``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mesh.core.manifest import ELEM_TYPES, Dim, ModelInterface, TensorSpec, check_path
from mesh.errors import ManifestError, ModelFormatError

# Protobuf wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_SMALL_MSG = 1 << 20  # value-info/opset messages are tiny; 1 MiB bounds a hostile file
_MAX_FIELDS = 10_000_000


@dataclass(frozen=True, slots=True)
class OnnxInfo:
    interface: ModelInterface
    external_files: tuple[str, ...]  # relative paths, in first-seen order
    node_count: int


class _Reader:
    """Protobuf field reader over a seekable file, bounded by an end offset."""

    def __init__(self, f: BinaryIO, end: int, what: str) -> None:
        self.f = f
        self.end = end
        self.what = what

    def tell(self) -> int:
        return self.f.tell()

    def _byte(self) -> int:
        if self.f.tell() >= self.end:
            raise ModelFormatError(f"{self.what}: truncated (field runs past its end)")
        b = self.f.read(1)
        if not b:
            raise ModelFormatError(f"{self.what}: truncated file")
        return b[0]

    def varint(self) -> int:
        shift = result = 0
        for _ in range(10):
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise ModelFormatError(f"{self.what}: malformed varint")

    def fields(self) -> list[tuple[int, int, int]]:
        """Not used for large messages; see :meth:`next_field`."""
        out = []
        while (item := self.next_field()) is not None:
            out.append(item)
        return out

    def next_field(self) -> tuple[int, int, int] | None:
        """(field number, wire type, value-or-length), leaving the file at the payload."""
        if self.f.tell() >= self.end:
            return None
        key = self.varint()
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ModelFormatError(f"{self.what}: field number 0 is invalid")
        if wt == _VARINT:
            return num, wt, self.varint()
        if wt == _LEN:
            n = self.varint()
            if self.f.tell() + n > self.end:
                raise ModelFormatError(f"{self.what}: a field of {n} bytes runs past the end")
            return num, wt, n
        if wt in (_I64, _I32):
            n = 8 if wt == _I64 else 4
            if self.f.tell() + n > self.end:
                raise ModelFormatError(f"{self.what}: a field of {n} bytes runs past the end")
            return num, wt, n
        raise ModelFormatError(f"{self.what}: unsupported protobuf wire type {wt}")

    def skip(self, wt: int, value: int) -> None:
        if wt != _VARINT:
            self.f.seek(value, os.SEEK_CUR)

    def read(self, n: int, what: str) -> bytes:
        if n > _SMALL_MSG:
            raise ModelFormatError(f"{self.what}: {what} of {n} bytes is implausibly large")
        data = self.f.read(n)
        if len(data) != n:
            raise ModelFormatError(f"{self.what}: truncated file")
        return data

    def sub(self, n: int, what: str) -> _Reader:
        return _Reader(self.f, self.f.tell() + n, what)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError(f"{what} is not valid UTF-8") from None


class _Mem:
    """Protobuf field iteration over a small in-memory message."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def varint(self) -> int:
        shift = result = 0
        for _ in range(10):
            if self.pos >= len(self.data):
                raise ModelFormatError(f"{self.what}: truncated")
            b = self.data[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise ModelFormatError(f"{self.what}: malformed varint")

    def __iter__(self) -> _Mem:
        return self

    def __next__(self) -> tuple[int, int, int | bytes]:
        if self.pos >= len(self.data):
            raise StopIteration
        key = self.varint()
        num, wt = key >> 3, key & 7
        if num == 0:
            raise ModelFormatError(f"{self.what}: field number 0 is invalid")
        if wt == _VARINT:
            return num, wt, self.varint()
        if wt == _LEN:
            n = self.varint()
            if self.pos + n > len(self.data):
                raise ModelFormatError(f"{self.what}: field runs past the end")
            v = self.data[self.pos : self.pos + n]
            self.pos += n
            return num, wt, v
        if wt in (_I64, _I32):
            n = 8 if wt == _I64 else 4
            if self.pos + n > len(self.data):
                raise ModelFormatError(f"{self.what}: field runs past the end")
            v = self.data[self.pos : self.pos + n]
            self.pos += n
            return num, wt, v
        raise ModelFormatError(f"{self.what}: unsupported protobuf wire type {wt}")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _merged(data: bytes, field: int, what: str) -> bytes | None:
    """All occurrences of the embedded-message ``field`` joined, or None if absent.

    Protobuf merges repeated occurrences of a singular message field, and parsing the
    concatenation of two encodings is the same as merging them: so a file that states
    a type or a shape twice means what onnx reads, not only the last statement."""
    parts = [v for num, wt, v in _Mem(data, what) if num == field and wt == _LEN]
    if not parts:
        return None
    return b"".join(p for p in parts if isinstance(p, bytes))


def _parse_value_info(data: bytes, what: str) -> TensorSpec:
    name = ""
    for num, wt, v in _Mem(data, what):
        if num == 1 and wt == _LEN:
            assert isinstance(v, bytes)
            name = _text(v, f"{what} name")
    elem: int | None = None
    shape: tuple[Dim, ...] | None = None
    type_proto = _merged(data, 2, what)
    if type_proto is not None:
        for tnum, _twt, _tv in _Mem(type_proto, f"{what} type"):
            if tnum in (4, 5, 8, 9):
                kind = {4: "sequence", 5: "map", 8: "sparse tensor", 9: "optional"}[tnum]
                raise ModelFormatError(
                    f"{what} is a {kind}; edgemesh serves models with tensor inputs and "
                    "outputs only"
                )
        tensor_type = _merged(type_proto, 1, f"{what} type")  # TypeProto.tensor_type
        if tensor_type is not None:
            elem, shape = _parse_tensor_type(tensor_type, what)
    if not name:
        raise ModelFormatError(f"{what} has no name")
    if elem is None:
        raise ModelFormatError(f"{what} ({name!r}) has no tensor type")
    if elem not in ELEM_TYPES:
        raise ModelFormatError(f"{what} ({name!r}) has unknown element type {elem}")
    try:
        return TensorSpec(name=name, elem_type=ELEM_TYPES[elem], shape=shape)
    except ManifestError as e:
        raise ModelFormatError(f"{what}: {e}") from None


def _parse_tensor_type(data: bytes, what: str) -> tuple[int, tuple[Dim, ...] | None]:
    elem = 0
    for num, wt, v in _Mem(data, f"{what} tensor type"):
        if num == 1 and wt == _VARINT:
            assert isinstance(v, int)
            elem = v
    shape_proto = _merged(data, 2, f"{what} tensor type")
    if shape_proto is None:
        return elem, None
    dims: list[Dim] = []
    for dnum, dwt, dv in _Mem(shape_proto, f"{what} shape"):
        if dnum == 1 and dwt == _LEN:
            assert isinstance(dv, bytes)
            dim: Dim = None
            for xnum, xwt, xv in _Mem(dv, f"{what} dim"):
                if xnum == 1 and xwt == _VARINT:
                    assert isinstance(xv, int)
                    dim = _signed64(xv)
                    if dim < 0:
                        dim = None
                elif xnum == 2 and xwt == _LEN:
                    assert isinstance(xv, bytes)
                    dim = _text(xv, f"{what} dim_param") or None
            dims.append(dim)
    return elem, tuple(dims)


def _parse_initializer(r: _Reader, n: int, index: int) -> tuple[str, list[str]]:
    """Name and external-data locations of one TensorProto, skipping its payload."""
    sub = r.sub(n, f"initializer #{index}")
    name = ""
    locations: list[str] = []
    while (item := sub.next_field()) is not None:
        num, wt, v = item
        if num == 8 and wt == _LEN:
            name = _text(sub.read(v, "initializer name"), "initializer name")
        elif num == 13 and wt == _LEN:  # external_data: StringStringEntryProto
            key = value = ""
            for knum, kwt, kv in _Mem(sub.read(v, "external_data entry"), "external_data"):
                if kwt == _LEN and isinstance(kv, bytes):
                    if knum == 1:
                        key = _text(kv, "external_data key")
                    elif knum == 2:
                        value = _text(kv, "external_data value")
            if key == "location":
                locations.append(value)
        else:
            sub.skip(wt, v)
    r.f.seek(sub.end)
    return name, locations


def read_onnx(path: Path) -> OnnxInfo:
    """Read the interface of the ONNX model at ``path``; :class:`ModelFormatError` if invalid."""
    try:
        size = path.stat().st_size
        f = open(path, "rb")  # noqa: SIM115 -- closed below
    except FileNotFoundError:
        raise ModelFormatError(f"model file {path} does not exist") from None
    except IsADirectoryError:
        raise ModelFormatError(f"{path} is a directory, not a model file") from None
    except PermissionError:
        raise ModelFormatError(f"model file {path} is not readable (permission denied)") from None
    except OSError as e:
        raise ModelFormatError(f"model file {path} cannot be read: {e.strerror}") from None
    if size == 0:
        f.close()
        raise ModelFormatError(f"model file {path} is empty")
    with f:
        what = f"{path.name} is not a valid ONNX model"
        try:
            return _read_model(_Reader(f, size, what), path)
        except OSError as e:
            raise ModelFormatError(f"{path}: read failed: {e.strerror}") from None


def _read_model(r: _Reader, path: Path) -> OnnxInfo:
    ir_version = 0
    opsets: list[tuple[str, int]] = []
    graph_seen = False
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    initializers: set[str] = set()
    external: list[str] = []
    nodes = 0
    fields = 0
    while (item := r.next_field()) is not None:
        num, wt, v = item
        fields += 1
        if num == 1 and wt == _VARINT:
            ir_version = v
        elif num == 8 and wt == _LEN:
            domain, version = "", 0
            for onum, owt, ov in _Mem(r.read(v, "opset import"), f"{r.what} (opset)"):
                if onum == 1 and owt == _LEN and isinstance(ov, bytes):
                    domain = _text(ov, "opset domain")
                elif onum == 2 and owt == _VARINT and isinstance(ov, int):
                    version = _signed64(ov)
            opsets.append((domain, version))
        elif num == 7 and wt == _LEN:
            if graph_seen:
                raise ModelFormatError(f"{r.what}: more than one graph")
            graph_seen = True
            g = r.sub(v, r.what)
            while (gitem := g.next_field()) is not None:
                gnum, gwt, gv = gitem
                fields += 1
                if fields > _MAX_FIELDS:
                    raise ModelFormatError(f"{r.what}: too many protobuf fields")
                if gnum == 1 and gwt == _LEN:
                    nodes += 1
                    g.skip(gwt, gv)
                elif gnum == 5 and gwt == _LEN:
                    name, locs = _parse_initializer(g, gv, len(initializers))
                    initializers.add(name)
                    external.extend(x for x in locs if x not in external)
                elif gnum == 11 and gwt == _LEN:
                    data = g.read(gv, "graph input")
                    inputs.append(_parse_value_info(data, f"input #{len(inputs)}"))
                elif gnum == 12 and gwt == _LEN:
                    data = g.read(gv, "graph output")
                    outputs.append(_parse_value_info(data, f"output #{len(outputs)}"))
                else:
                    g.skip(gwt, gv)
            r.f.seek(g.end)
        else:
            r.skip(wt, v)
    if not graph_seen:
        raise ModelFormatError(f"{r.what}: it has no graph")
    if ir_version <= 0:
        raise ModelFormatError(f"{r.what}: missing or invalid ir_version")
    if not opsets:
        raise ModelFormatError(f"{r.what}: it imports no operator set")
    if not outputs:
        raise ModelFormatError(f"{r.what}: its graph has no outputs")
    if nodes == 0:
        raise ModelFormatError(f"{r.what}: its graph has no nodes")
    real_inputs = tuple(t for t in inputs if t.name not in initializers)
    for loc in external:
        try:
            check_path(loc)
        except ManifestError:
            raise ModelFormatError(
                f"{path.name} refers to external data {loc!r}, which is not a plain relative "
                "path inside the model's directory"
            ) from None
        if not (path.parent / loc).is_file():
            raise ModelFormatError(f"{path.name} refers to external data {loc!r}, which is missing")
    try:
        interface = ModelInterface(
            ir_version=ir_version,
            opsets=tuple(opsets),
            inputs=real_inputs,
            outputs=tuple(outputs),
        )
    except ManifestError as e:
        raise ModelFormatError(f"{r.what}: {e}") from None
    return OnnxInfo(interface=interface, external_files=tuple(external), node_count=nodes)
