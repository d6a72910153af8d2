"""Shared builders for the pure unit tests: manifests, signed releases and ONNX models."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import onnx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mesh.core.manifest import (
    ELEM_TYPES,
    MIN_CHUNK_SIZE,
    MIN_CREATED,
    Dim,
    FileEntry,
    Manifest,
    ModelInterface,
    TensorSpec,
    canonical_packb,
)
from mesh.core.trust import SignedRelease, Signer
from mesh.crypto import PrivateKey
from mesh.ids import ChunkId

#: Hypothesis settings for every property test here: enough examples to find
#: decoder crashes, few enough that the whole pure suite stays fast on 2 cores.
FAST = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CREATED = MIN_CREATED + 1_000_000
CHUNK = MIN_CHUNK_SIZE


def interface(
    inputs: Sequence[TensorSpec] = (TensorSpec("x", "float32", ("batch", 4)),),
    outputs: Sequence[TensorSpec] = (TensorSpec("y", "float32", ("batch", None)),),
) -> ModelInterface:
    return ModelInterface(
        ir_version=8, opsets=(("", 17),), inputs=tuple(inputs), outputs=tuple(outputs)
    )


def split(data: bytes, chunk_size: int = CHUNK) -> list[bytes]:
    return [data[o : o + chunk_size] for o in range(0, len(data), chunk_size)]


def pattern(size: int, seed: int) -> bytes:
    """Deterministic, seed-dependent bytes whose chunks differ from each other."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def file_entry(path: str, data: bytes, chunk_size: int = CHUNK) -> FileEntry:
    return FileEntry(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        chunks=tuple(ChunkId.of(c) for c in split(data, chunk_size)),
    )


def manifest(
    files: Mapping[str, bytes] | None = None,
    *,
    model: str = "cam-a",
    version: int = 1,
    mesh: str = "lab",
    chunk_size: int = CHUNK,
    created: int = CREATED,
    breaking: bool = False,
) -> Manifest:
    if files is None:
        files = {"model.onnx": pattern(chunk_size + 100, seed=version)}
    return Manifest(
        mesh=mesh,
        model=model,
        version=version,
        created=created,
        chunk_size=chunk_size,
        files=tuple(file_entry(p, d, chunk_size) for p, d in files.items()),
        interface=interface(),
        breaking=breaking,
    )


def wire(m: Manifest) -> dict[str, Any]:
    """The manifest's msgpack structure, to be tampered with and re-encoded."""
    raw: dict[str, Any] = msgpack.unpackb(m.encode(), raw=False)
    return raw


def encode_wire(obj: Any) -> bytes:
    """Canonical msgpack of a (tampered) wire structure."""
    return canonical_packb(obj)


_KEYS: list[PrivateKey] = []


def key(n: int = 0) -> PrivateKey:
    """The n-th test publisher key (generated once per test session)."""
    while len(_KEYS) <= n:
        _KEYS.append(PrivateKey.generate())
    return _KEYS[n]


@dataclass(frozen=True)
class Published:
    """A signed release together with the bytes of its files and chunks."""

    release: SignedRelease
    files: dict[str, bytes]
    chunks: dict[ChunkId, bytes]

    @property
    def manifest(self) -> Manifest:
        return self.release.manifest


def release(
    files: Mapping[str, bytes] | None = None,
    *,
    model: str = "cam-a",
    version: int = 1,
    signers: Sequence[Signer] | None = None,
    chunk_size: int = CHUNK,
    created: int = CREATED,
) -> Published:
    files = dict(files) if files is not None else {"model.onnx": pattern(2 * CHUNK + 7, version)}
    m = manifest(files, model=model, version=version, chunk_size=chunk_size, created=created)
    signed = SignedRelease.create(m, signers if signers is not None else [key()])
    chunks = {ChunkId.of(c): c for data in files.values() for c in split(data, chunk_size)}
    return Published(signed, files, chunks)


# -- Hypothesis strategies --------------------------------------------------------------

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
_path_parts = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,12}", fullmatch=True)
paths = st.lists(_path_parts, min_size=1, max_size=4).map("/".join)
_dims: st.SearchStrategy[Dim] = st.one_of(
    st.none(),
    st.integers(0, 2**40),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
)
tensor_specs = st.builds(
    TensorSpec,
    name=st.text(min_size=1, max_size=20),
    elem_type=st.sampled_from(sorted(ELEM_TYPES.values())),
    shape=st.none() | st.lists(_dims, max_size=5).map(tuple),
)
interfaces = st.builds(
    ModelInterface,
    ir_version=st.integers(1, 1000),
    opsets=st.dictionaries(
        st.from_regex(r"[a-z.]{0,12}", fullmatch=True), st.integers(1, 10_000), min_size=1
    ).map(lambda d: tuple(d.items())),
    inputs=st.lists(tensor_specs, max_size=3, unique_by=lambda t: t.name).map(tuple),
    outputs=st.lists(tensor_specs, min_size=1, max_size=3, unique_by=lambda t: t.name).map(tuple),
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    """Valid manifests with arbitrary (not content-derived) chunk ids."""
    chunk_size = draw(st.sampled_from([MIN_CHUNK_SIZE, 2 * MIN_CHUNK_SIZE, 1 << 24]))
    file_paths = draw(
        st.lists(paths, min_size=1, max_size=3, unique=True).filter(
            lambda ps: not any(q.startswith(p + "/") for p in ps for q in ps)
        )
    )
    entries = []
    for p in file_paths:
        size = draw(st.integers(0, 5 * chunk_size))
        count = -(-size // chunk_size)
        ids = draw(st.lists(st.binary(min_size=32, max_size=32), min_size=count, max_size=count))
        entries.append(
            FileEntry(
                path=p,
                size=size,
                sha256=draw(st.binary(min_size=32, max_size=32)),
                chunks=tuple(ChunkId(i) for i in ids),
            )
        )
    return Manifest(
        mesh=draw(names),
        model=draw(names),
        version=draw(st.integers(1, 2**63 - 1)),
        created=draw(st.integers(MIN_CREATED, MIN_CREATED + 10**9)),
        chunk_size=chunk_size,
        files=tuple(entries),
        interface=draw(interfaces),
        breaking=draw(st.booleans()),
    )


#: Anything msgpack can encode (no surrogates: they are not valid UTF-8).
msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)


# -- ONNX models ------------------------------------------------------------------------

OnnxShape = Sequence[int | str | None] | None


def value_info(name: str, elem: int, shape: OnnxShape) -> onnx.ValueInfoProto:
    info: onnx.ValueInfoProto = helper.make_tensor_value_info(name, elem, shape)
    return info


def identity_model(
    ios: Sequence[tuple[str, int, OnnxShape]],
    *,
    opsets: Sequence[tuple[str, int]] = (("", 17),),
    ir_version: int = 8,
    initializers: Sequence[onnx.TensorProto] = (),
    extra_inputs: Sequence[onnx.ValueInfoProto] = (),
) -> onnx.ModelProto:
    """A model with one Identity node per (name, elem type, shape): ``name`` -> ``name_out``."""
    nodes = [helper.make_node("Identity", [n], [f"{n}_out"], name=f"id_{n}") for n, _, _ in ios]
    graph = helper.make_graph(
        nodes,
        "g",
        [value_info(n, e, s) for n, e, s in ios] + list(extra_inputs),
        [value_info(f"{n}_out", e, s) for n, e, s in ios],
        initializer=list(initializers),
    )
    model: onnx.ModelProto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets],
        ir_version=ir_version,
    )
    return model


def save_model(model: onnx.ModelProto, path: Path, **kwargs: Any) -> Path:
    onnx.save(model, str(path), **kwargs)
    return path


def expected_interface(model: onnx.ModelProto) -> ModelInterface:
    """The oracle: the interface as onnx's own protobuf parser sees it."""

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        tt = vi.type.tensor_type
        shape: tuple[Dim, ...] | None = None
        if tt.HasField("shape"):
            dims: list[Dim] = []
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value >= 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    dims.append(str(d.dim_param))
                else:
                    dims.append(None)
            shape = tuple(dims)
        return TensorSpec(name=vi.name, elem_type=ELEM_TYPES[tt.elem_type], shape=shape)

    init_names = {t.name for t in model.graph.initializer}
    return ModelInterface(
        ir_version=model.ir_version,
        opsets=tuple((o.domain, o.version) for o in model.opset_import),
        inputs=tuple(spec(i) for i in model.graph.input if i.name not in init_names),
        outputs=tuple(spec(o) for o in model.graph.output),
    )


FLOAT = TensorProto.FLOAT


def run_as_pure_python(nodeid: str) -> None:
    """Run one test (a pytest node id) in a child pytest whose edgemesh loads the
    compiled modules' ``.py`` files (``mesh._native``): for tests that patch a class
    that is compiled in this process.  Fails if the child's test fails."""
    from mesh import _native

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, _native.ENV: "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{nodeid} as pure Python:\n{r.stdout[-4000:]}{r.stderr[-2000:]}"
