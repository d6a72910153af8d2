"""Release manifests: round trip, canonical form, bounds, and hostile input to decode."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.core.manifest import (
    MAX_CHUNK_SIZE,
    MAX_CREATED,
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    MAX_PATH_DEPTH,
    MAX_RANK,
    MAX_VERSION,
    MIN_CHUNK_SIZE,
    MIN_CREATED,
    FileEntry,
    Manifest,
    ModelInterface,
    TensorSpec,
    check_name,
    check_path,
    chunk_count,
)
from mesh.errors import ManifestError
from mesh.ids import ChunkId, ReleaseId
from tests.helpers import (
    CHUNK,
    CREATED,
    FAST,
    encode_wire,
    file_entry,
    interface,
    manifest,
    manifests,
    msgpack_values,
    pattern,
    wire,
)

Wire = dict[str, Any]


def decode_wire(w: Wire) -> Manifest:
    return Manifest.decode(encode_wire(w))


def _ids(n: int) -> tuple[ChunkId, ...]:
    return tuple(ChunkId.of(i.to_bytes(4, "big")) for i in range(n))


# -- round trip -------------------------------------------------------------------------


def test_round_trip_and_release_id() -> None:
    m = manifest({"model.onnx": pattern(3 * CHUNK + 5, 1), "weights.bin": b"w" * 10})
    data = m.encode()
    back = Manifest.decode(data)
    assert back == m
    assert back.encode() == data
    assert m.release_id == back.release_id == ReleaseId(hashlib.sha256(data).digest())
    # encoding is a pure function of the content
    assert manifest({"model.onnx": pattern(3 * CHUNK + 5, 1), "weights.bin": b"w" * 10}) == m
    assert (
        manifest({"model.onnx": pattern(3 * CHUNK + 5, 1), "weights.bin": b"w" * 10}).encode()
        == data
    )


def test_any_field_changes_the_release_id() -> None:
    base = manifest()
    variants = [
        manifest(version=2),
        manifest(model="cam-b"),
        manifest(mesh="lab2"),
        manifest(created=CREATED + 1),
        manifest(breaking=True),
        manifest({"model.onnx": pattern(CHUNK + 101, 1)}),
    ]
    ids = {v.release_id for v in variants} | {base.release_id}
    assert len(ids) == len(variants) + 1


@FAST
@given(manifests())
def test_round_trip_property(m: Manifest) -> None:
    data = m.encode()
    back = Manifest.decode(data)
    assert back == m
    assert back.encode() == data
    assert back.release_id == m.release_id
    assert back.chunk_total == sum(chunk_count(f.size, m.chunk_size) for f in m.files)


def test_derived_values() -> None:
    a, b = pattern(2 * CHUNK + 10, 1), pattern(CHUNK, 2)
    m = manifest({"a.onnx": a, "dir/b.bin": b, "empty": b""})
    assert m.total_size == len(a) + len(b)
    assert m.chunk_total == 4
    refs = list(m.chunk_refs())
    assert [(r.index, r.file_index, r.offset, r.length) for r in refs] == [
        (0, 0, 0, CHUNK),
        (1, 0, CHUNK, CHUNK),
        (2, 0, 2 * CHUNK, 10),
        (3, 1, 0, CHUNK),
    ]
    assert refs[2].chunk_id == ChunkId.of(a[2 * CHUNK :])
    assert m.unique_chunks()[refs[2].chunk_id] == 10
    assert m.describe() == f"cam-a v1 ({m.release_id.short()})"


def test_shared_chunks_counted_per_reference() -> None:
    block = pattern(CHUNK, 7)
    m = manifest({"a": block + block, "b": block})
    assert m.chunk_total == 3
    assert m.unique_chunks() == {ChunkId.of(block): CHUNK}


def test_unknown_dims_and_unknown_rank_round_trip() -> None:
    iface = interface(
        inputs=[
            TensorSpec("a", "int64", None),
            TensorSpec("b", "bool", ()),
            TensorSpec("c", "float16", (None, "n", 0, 2**62)),
        ],
        outputs=[TensorSpec("out", "string", ("batch",))],
    )
    m = Manifest("lab", "m", 1, CREATED, CHUNK, (file_entry("f", b"x"),), iface)
    back = Manifest.decode(m.encode())
    assert back.interface == iface
    assert back.interface.inputs[0].shape is None
    assert back.interface.inputs[1].shape == ()
    assert back.interface.inputs[2].describe() == "c: float16[?,n,0,4611686018427387904]"
    assert back.interface.inputs[0].describe() == "a: int64[?]"


# -- canonical form ---------------------------------------------------------------------


def _reordered(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _reordered(obj[k]) for k in sorted(obj, reverse=True)}
    if isinstance(obj, list):
        return [_reordered(v) for v in obj]
    return obj


def test_unsorted_top_level_keys_refused() -> None:
    data = msgpack.packb(_reordered(wire(manifest())), use_bin_type=True)
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.decode(data)


def test_unsorted_nested_keys_refused() -> None:
    w = wire(manifest())
    w["onnx"]["inputs"][0] = _reordered(w["onnx"]["inputs"][0])
    data = msgpack.packb(w, use_bin_type=True)  # insertion order: only the tensor is unsorted
    assert Manifest.decode(encode_wire(w)) == manifest()
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.decode(data)


@pytest.mark.parametrize(
    ("canonical", "longer"),
    [
        (b"\xa7version\x01", b"\xa7version\xcc\x01"),  # uint8 for a fixint
        (b"\xa7version\x01", b"\xa7version\xcd\x00\x01"),  # uint16
        (b"\xa7version\x01", b"\xa7version\xcf" + (1).to_bytes(8, "big")),  # uint64
        (b"\xa7version\x01", b"\xa7version\xd0\x01"),  # int8
        (
            b"\xaachunk_size\xce\x00\x01\x00\x00",
            b"\xaachunk_size\xcf\x00\x00\x00\x00\x00\x01\x00\x00",
        ),
        (b"\x89\xa8breaking", b"\xde\x00\x09\xa8breaking"),  # map16 for a fixmap
        (b"\xa4mesh\xa3lab", b"\xa4mesh\xd9\x03lab"),  # str8 for a fixstr
        (b"\xa4mesh\xa3lab", b"\xa4mesh\xda\x00\x03lab"),  # str16
        (b"\xa5files\x91", b"\xa5files\xdc\x00\x01"),  # array16 for a fixarray
        (b"\xa6sha256\xc4\x20", b"\xa6sha256\xc5\x00\x20"),  # bin16 for bin8
    ],
)
def test_non_minimal_encodings_refused(canonical: bytes, longer: bytes) -> None:
    data = manifest().encode()
    assert data.count(canonical) == 1
    tampered = data.replace(canonical, longer)
    assert msgpack.unpackb(tampered, raw=False) == msgpack.unpackb(data, raw=False)
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.decode(tampered)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[Wire], None]:
    def mutate(w: Wire) -> None:
        target: Any = w
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[Wire], None]:
    def mutate(w: Wire) -> None:
        target: Any = w
        for k in path[:-1]:
            target = target[k]
        del target[path[-1]]

    return mutate


BAD_WIRE: list[tuple[str, Callable[[Wire], None], str]] = [
    # extra and missing keys
    ("extra top key", _set(("zzz",), 1), "unexpected"),
    ("extra file key", _set(("files", 0, "mode"), 420), "unexpected"),
    ("extra onnx key", _set(("onnx", "doc"), "x"), "unexpected"),
    ("extra tensor key", _set(("onnx", "inputs", 0, "doc"), "x"), "unexpected"),
    ("missing version", _delete(("version",)), "missing"),
    ("missing sha256", _delete(("files", 0, "sha256")), "missing"),
    ("missing tensor type", _delete(("onnx", "outputs", 0, "type")), "missing"),
    # floats
    ("float version", _set(("version",), 1.0), "integer"),
    ("float created", _set(("created",), float(CREATED)), "integer"),
    ("float chunk_size", _set(("chunk_size",), float(CHUNK)), "integer"),
    ("float size", _set(("files", 0, "size"), 65636.0), "integer"),
    ("float dim", _set(("onnx", "inputs", 0, "shape", 1), 4.0), "dimension"),
    ("float format", _set(("format",), 1.0), "format"),
    # nil
    ("nil breaking", _set(("breaking",), None), "boolean"),
    ("nil version", _set(("version",), None), "integer"),
    ("nil mesh", _set(("mesh",), None), "string"),
    ("nil dim", _set(("onnx", "inputs", 0, "shape", 1), None), "canonical"),
    ("nil path", _set(("files", 0, "path"), None), "string"),
    ("nil shape", _set(("onnx", "inputs", 0, "shape"), None), "array"),
    # wrong types
    ("bool version", _set(("version",), True), "integer"),
    ("int breaking", _set(("breaking",), 0), "boolean"),
    ("bytes mesh", _set(("mesh",), b"lab"), "string"),
    ("str sha256", _set(("files", 0, "sha256"), "ab" * 16), "bytes"),
    ("str chunks", _set(("files", 0, "chunks"), "x" * 64), "bytes"),
    ("list top", lambda w: w.clear(), "missing"),
    ("files not a list", _set(("files",), {"a": 1}), "array"),
    ("file not a map", _set(("files", 0), [1, 2]), "map"),
    ("bool dim", _set(("onnx", "inputs", 0, "shape", 1), True), "dimension"),
    ("rank_known int", _set(("onnx", "inputs", 0, "rank_known"), 1), "boolean"),
    ("shape without rank", _set(("onnx", "inputs", 0, "rank_known"), False), "rank_known"),
    ("opset not a pair", _set(("onnx", "opsets", 0), ["", 17, 1]), "opsets"),
    ("opset short", _set(("onnx", "opsets", 0), [""]), "domain, version"),
    # format
    ("format 2", _set(("format",), 2), "upgrade"),
    ("format 0", _set(("format",), 0), "not supported"),
    # names
    ("uppercase model", _set(("model",), "Cam"), "model name"),
    ("space in model", _set(("model",), "cam a"), "model name"),
    ("leading dash", _set(("model",), "-cam"), "model name"),
    ("leading dot", _set(("mesh",), ".lab"), "mesh name"),
    ("empty model", _set(("model",), ""), "model name"),
    ("long model", _set(("model",), "a" * 65), "model name"),
    ("slash in model", _set(("model",), "cam/x"), "model name"),
    ("unicode model", _set(("model",), "camé"), "model name"),
    ("newline model", _set(("model",), "cam\n"), "model name"),
    # paths
    ("absolute path", _set(("files", 0, "path"), "/etc/passwd"), "not allowed"),
    ("dotdot path", _set(("files", 0, "path"), "../model.onnx"), "not allowed"),
    ("inner dotdot", _set(("files", 0, "path"), "a/../../b"), "not allowed"),
    ("dot part", _set(("files", 0, "path"), "a/./b"), "not allowed"),
    ("hidden file", _set(("files", 0, "path"), ".hidden"), "not allowed"),
    ("empty part", _set(("files", 0, "path"), "a//b"), "not allowed"),
    ("trailing slash", _set(("files", 0, "path"), "a/"), "not allowed"),
    ("backslash", _set(("files", 0, "path"), "a\\b"), "not allowed"),
    ("nul in path", _set(("files", 0, "path"), "a\x00b"), "not allowed"),
    ("empty path", _set(("files", 0, "path"), ""), "length"),
    ("long path", _set(("files", 0, "path"), "a" * 256), "length"),
    ("deep path", _set(("files", 0, "path"), "/".join("d" * (MAX_PATH_DEPTH + 1))), "deeper"),
    # sizes and chunk lists
    ("too few chunks", _set(("files", 0, "size"), 2 * CHUNK + 1), "need 3 chunks"),
    ("too many chunks", _set(("files", 0, "size"), CHUNK), "need 1 chunks"),
    ("empty file with chunk", _set(("files", 0, "size"), 0), "need 0 chunks"),
    ("negative size", _set(("files", 0, "size"), -1), "outside"),
    ("huge size", _set(("files", 0, "size"), 2**51), "outside"),
    ("ragged chunk list", _set(("files", 0, "chunks"), b"x" * 63), "multiple of 32"),
    ("short sha256", _set(("files", 0, "sha256"), b"x" * 31), "sha256"),
    ("no files", _set(("files",), []), "1-64 files"),
    # chunk size
    ("chunk_size not power of two", _set(("chunk_size",), 3 * MIN_CHUNK_SIZE), "power of two"),
    ("chunk_size odd", _set(("chunk_size",), MIN_CHUNK_SIZE + 1), "power of two"),
    ("chunk_size too small", _set(("chunk_size",), MIN_CHUNK_SIZE // 2), "chunk_size"),
    ("chunk_size too big", _set(("chunk_size",), 2 * MAX_CHUNK_SIZE), "chunk_size"),
    ("chunk_size zero", _set(("chunk_size",), 0), "chunk_size"),
    # version and created
    ("version 0", _set(("version",), 0), "version"),
    ("version negative", _set(("version",), -1), "version"),
    ("version too big", _set(("version",), MAX_VERSION + 1), "version"),
    ("created too early", _set(("created",), MIN_CREATED - 1), "created"),
    ("created too late", _set(("created",), MAX_CREATED + 1), "created"),
    # interface
    ("unknown elem type", _set(("onnx", "inputs", 0, "type"), "float128"), "element type"),
    ("elem type as int", _set(("onnx", "inputs", 0, "type"), 1), "string"),
    ("negative dim", _set(("onnx", "inputs", 0, "shape", 1), -1), "out of range"),
    ("dim too big", _set(("onnx", "inputs", 0, "shape", 1), 2**62 + 1), "out of range"),
    ("bad symbolic dim", _set(("onnx", "inputs", 0, "shape", 0), "1batch"), "symbolic"),
    ("rank too high", _set(("onnx", "inputs", 0, "shape"), [1] * (MAX_RANK + 1)), "entries"),
    ("empty tensor name", _set(("onnx", "inputs", 0, "name"), ""), "tensor name"),
    ("long tensor name", _set(("onnx", "inputs", 0, "name"), "n" * 257), "tensor name"),
    ("no outputs", _set(("onnx", "outputs"), []), "output"),
    ("no opsets", _set(("onnx", "opsets"), []), "opset"),
    ("opset version 0", _set(("onnx", "opsets", 0), ["", 0]), "opset version"),
    ("bad opset domain", _set(("onnx", "opsets", 0), ["a b", 1]), "domain"),
    ("ir_version 0", _set(("onnx", "ir_version"), 0), "ir_version"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in BAD_WIRE], ids=[d for d, _, _ in BAD_WIRE]
)
def test_bad_fields_refused(mutate: Callable[[Wire], None], message: str) -> None:
    w = wire(manifest())
    mutate(w)
    with pytest.raises(ManifestError, match=message):
        decode_wire(w)


def test_duplicate_paths_refused() -> None:
    w = wire(manifest({"a.onnx": b"1", "b.onnx": b"2"}))
    w["files"][1]["path"] = "a.onnx"
    with pytest.raises(ManifestError, match="repeat"):
        decode_wire(w)
    with pytest.raises(ManifestError, match="repeat"):
        Manifest(
            "lab",
            "m",
            1,
            CREATED,
            CHUNK,
            (file_entry("a", b"1"), file_entry("a", b"2")),
            interface(),
        )


@pytest.mark.parametrize("paths", [("a", "a/b"), ("x/y/z", "x/y"), ("m.onnx", "d/e", "d")])
def test_file_path_that_is_also_a_directory_refused(paths: tuple[str, ...]) -> None:
    """Such a release could not be assembled on a filesystem."""
    with pytest.raises(ManifestError, match="also a directory"):
        manifest(dict.fromkeys(paths, b"x"))
    w = wire(manifest({f"p{i}": b"x" for i in range(len(paths))}))
    for f, p in zip(w["files"], paths, strict=True):
        f["path"] = p
    with pytest.raises(ManifestError, match="also a directory"):
        decode_wire(w)


def test_similar_paths_that_do_not_clash() -> None:
    m = manifest(dict.fromkeys(("a", "ab/c", "a.d/e", "b/a"), b"x"))
    assert Manifest.decode(m.encode()) == m


def test_duplicate_tensor_names_and_opsets_refused() -> None:
    w = wire(manifest())
    w["onnx"]["outputs"].append(w["onnx"]["outputs"][0])
    with pytest.raises(ManifestError, match="output names repeat"):
        decode_wire(w)
    w = wire(manifest())
    w["onnx"]["opsets"] = [["", 17], ["", 18]]
    with pytest.raises(ManifestError, match="opset domains repeat"):
        decode_wire(w)


def test_too_many_files_refused() -> None:
    files = tuple(file_entry(f"f{i}", b"x") for i in range(MAX_FILES + 1))
    with pytest.raises(ManifestError, match="files"):
        Manifest("lab", "m", 1, CREATED, CHUNK, files, interface())
    w = wire(Manifest("lab", "m", 1, CREATED, CHUNK, files[:MAX_FILES], interface()))
    w["files"].append({**w["files"][0], "path": "extra"})
    with pytest.raises(ManifestError, match="more than 64"):
        decode_wire(w)


def test_manifest_over_size_refused() -> None:
    n = MAX_MANIFEST_BYTES // 32 + 1
    big = FileEntry("big", n * MIN_CHUNK_SIZE, bytes(32), _ids(n))
    with pytest.raises(ManifestError, match="over the"):
        Manifest("lab", "m", 1, CREATED, MIN_CHUNK_SIZE, (big,), interface())
    # the same file list at a larger chunk size fits
    fits = Manifest(
        "lab",
        "m",
        1,
        CREATED,
        MIN_CHUNK_SIZE,
        (FileEntry("big", 4 * MIN_CHUNK_SIZE, bytes(32), _ids(4)),),
        interface(),
    )
    with pytest.raises(ManifestError, match="over"):
        Manifest.decode(fits.encode() + b"\x00" * MAX_MANIFEST_BYTES)


def test_non_bytes_refused() -> None:
    data = manifest().encode()
    for bad in (bytearray(data), memoryview(data), data.decode("latin-1"), None):
        with pytest.raises(ManifestError, match="bytes"):
            Manifest.decode(bad)  # type: ignore[arg-type]


def test_constructor_checks_match_decoder() -> None:
    iface = interface()
    entry = file_entry("model.onnx", b"x" * 10)
    with pytest.raises(ManifestError, match="model name"):
        Manifest("lab", "Bad", 1, CREATED, CHUNK, (entry,), iface)
    with pytest.raises(ManifestError, match="version"):
        Manifest("lab", "m", 0, CREATED, CHUNK, (entry,), iface)
    with pytest.raises(ManifestError, match="power of two"):
        Manifest("lab", "m", 1, CREATED, 3 * CHUNK, (entry,), iface)
    with pytest.raises(ManifestError, match="need 1 chunks"):
        Manifest("lab", "m", 1, CREATED, CHUNK, (FileEntry("f", 10, bytes(32), ()),), iface)
    with pytest.raises(ManifestError, match="sha256"):
        FileEntry("f", 0, b"short", ())
    with pytest.raises(ManifestError, match="not allowed"):
        FileEntry("../f", 0, bytes(32), ())
    with pytest.raises(ManifestError, match="element type"):
        TensorSpec("x", "float", None)
    with pytest.raises(ManifestError, match="at least one output"):
        ModelInterface(8, (("", 17),), (), ())


@pytest.mark.parametrize("name", ["a", "cam-a", "x.y_z-9", "0", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name, "model name") == name


@pytest.mark.parametrize(
    "path", ["model.onnx", "a/b/c.data", "W+b.bin", "_x", "/".join("d" * MAX_PATH_DEPTH)]
)
def test_good_paths(path: str) -> None:
    assert check_path(path) == path


# -- hostile input ----------------------------------------------------------------------


def _decode_or_manifest_error(data: bytes) -> Manifest | None:
    """Decode; a success must be the canonical encoding of what was decoded."""
    try:
        m = Manifest.decode(data)
    except ManifestError:
        return None
    assert m.encode() == data
    return m


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError):
        Manifest.decode(data)


@FAST
@given(msgpack_values)
def test_arbitrary_structures_raise_only_manifest_error(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    with pytest.raises(ManifestError):
        Manifest.decode(data)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


_BASE_WIRE = wire(manifest())
_BASE_PATHS = list(_paths(_BASE_WIRE))


@FAST
@given(st.sampled_from(_BASE_PATHS), msgpack_values, st.booleans())
def test_mutated_structures_raise_only_manifest_error(
    path: tuple[Any, ...], value: Any, canonical: bool
) -> None:
    w = copy.deepcopy(_BASE_WIRE)
    _set(path, value)(w)
    data = encode_wire(w) if canonical else msgpack.packb(w, use_bin_type=True)
    _decode_or_manifest_error(data)


def test_every_flipped_byte_is_refused_or_another_release() -> None:
    m = manifest()
    data = m.encode()
    decoded = 0
    for i in range(len(data)):
        for mask in (0x01, 0x20, 0x80, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= mask
            other = _decode_or_manifest_error(bytes(flipped))
            if other is not None:
                decoded += 1
                assert other.release_id != m.release_id
                assert other != m
    assert decoded > 0  # e.g. a flipped hash byte gives a valid, different release


@pytest.mark.parametrize(
    "garbage", [b"\x00", b"\xc0", b"\x90", b"\xff" * 3, b"\x81\xa1a\x01", b"manifest"]
)
def test_trailing_garbage_refused(garbage: bytes) -> None:
    data = manifest().encode()
    with pytest.raises(ManifestError):
        Manifest.decode(data + garbage)
    with pytest.raises(ManifestError):
        Manifest.decode(data + data)


def test_every_prefix_refused() -> None:
    data = manifest().encode()
    for n in range(len(data)):
        with pytest.raises(ManifestError):
            Manifest.decode(data[:n])


def test_deep_nesting_refused() -> None:
    for depth in (100, 5000, 100_000):
        with pytest.raises(ManifestError):
            Manifest.decode(b"\x91" * depth + b"\x00")
        with pytest.raises(ManifestError):
            Manifest.decode(b"\x81\xa1a" * depth + b"\x00")


def test_huge_declared_lengths_refused_without_allocation() -> None:
    for data in (
        b"\xdd\xff\xff\xff\xff",  # array32 of 4 billion
        b"\xdf\xff\xff\xff\xff",  # map32
        b"\xc6\xff\xff\xff\xff",  # bin32
        b"\xdb\xff\xff\xff\xff",  # str32
    ):
        with pytest.raises(ManifestError):
            Manifest.decode(data)
