"""Release manifests: the canonical, signed description of one model version.

What it owns: the manifest data model, its canonical msgpack encoding, strict
decoding, and the release id (SHA-256 of the manifest bytes).

Rules:
* Canonical encoding: msgpack maps with keys sorted, smallest integer encodings,
  ``bin`` for bytes, ``str`` for text, no floats, no nil.  ``decode`` re-encodes what
  it parsed and refuses input that is not byte-for-byte canonical, so one release has
  exactly one encoding and therefore one id.
* Everything is bounded before it is trusted: total size, string lengths, number of
  files and chunks, names limited to a safe alphabet, paths relative and normalised.
* Sizes must agree with chunk lists: ``len(chunks) == ceil(size / chunk_size)``.

Non-goals: signatures (``mesh.core.trust``), reading model files (``mesh.onnxsig``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from mesh.errors import ManifestError
from mesh.ids import DIGEST_SIZE, ChunkId, ReleaseId

FORMAT_VERSION = 1

#: 64 KiB .. 16 MiB: below 64 KiB per-chunk overhead (a hash, a request, a file) dominates;
#: above 16 MiB a lost or corrupt chunk costs too much to re-fetch on a slow link.
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024  # 1 MiB: the best write size measured for libp2p streams

#: 8 MiB of manifest holds ~250 000 chunk hashes: 16 GiB at 64 KiB chunks, 4 TiB at 16 MiB.
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_FILES = 64  # a model plus its external-data files; more is a packaging mistake
MAX_NAME_LEN = 64
MAX_PATH_LEN = 255
MAX_PATH_DEPTH = 8
MAX_TENSORS = 1024  # per direction; real models have a handful of inputs and outputs
MAX_RANK = 32
MAX_OPSETS = 64
MAX_DIM = 2**62
#: Creation time bounds (Unix seconds): 2020-01-01 .. 2200-01-01.
MIN_CREATED = 1_577_836_800
MAX_CREATED = 7_258_118_400
MAX_VERSION = 2**63 - 1

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_PATH_PART_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")
_DIM_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:+*/() -]{0,63}")
_DOMAIN_RE = re.compile(r"[A-Za-z0-9._-]{0,128}")

#: ONNX TensorProto.DataType values and the names edgemesh prints (numpy-style).
ELEM_TYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    8: "string",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8e4m3fn",
    18: "float8e4m3fnuz",
    19: "float8e5m2",
    20: "float8e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4e2m1",
    24: "float8e8m0",
    25: "uint2",
    26: "int2",
}
ELEM_TYPE_NAMES = frozenset(ELEM_TYPES.values())

Dim = int | str | None
"""A tensor dimension: a fixed size, a symbolic name, or unknown (``None``)."""


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [_sorted(v) for v in obj]
    return obj


def canonical_packb(obj: Any) -> bytes:
    """msgpack with map keys sorted at every level (the canonical form of DESIGN §3)."""
    packed: bytes = msgpack.packb(_sorted(obj), use_bin_type=True)
    return packed


def check_name(value: object, what: str) -> str:
    """A mesh or model name: lowercase letters, digits, ``.``, ``_``, ``-``; 1..64 chars."""
    if not isinstance(value, str):
        raise ManifestError(f"{what} must be a string, got {type(value).__name__}")
    if not (0 < len(value) <= MAX_NAME_LEN) or not NAME_RE.fullmatch(value):
        raise ManifestError(
            f"{what} {value!r} is not allowed: use 1-{MAX_NAME_LEN} of a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    return value


def check_path(value: object) -> str:
    """A relative POSIX path inside a release: no ``..``, no absolute paths, safe chars."""
    if not isinstance(value, str):
        raise ManifestError(f"file path must be a string, got {type(value).__name__}")
    if not (0 < len(value) <= MAX_PATH_LEN):
        raise ManifestError(f"file path length must be 1-{MAX_PATH_LEN}: {value[:80]!r}")
    parts = value.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        raise ManifestError(f"file path {value!r} is deeper than {MAX_PATH_DEPTH} levels")
    for part in parts:
        if not _PATH_PART_RE.fullmatch(part):
            raise ManifestError(
                f"file path {value!r} is not allowed: each part uses A-Z a-z 0-9 . _ + - "
                "and may not start with '.' or '-'"
            )
    return value


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise ManifestError(f"{what} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ManifestError(f"{what} {value} is outside {lo}..{hi}")
    return value


def _map(value: object, what: str, keys: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"{what} must be a map, got {type(value).__name__}")
    got = frozenset(value)
    if got != keys:
        missing = sorted(keys - got)
        extra = sorted(str(k) for k in got - keys)
        raise ManifestError(f"{what} fields wrong: missing {missing}, unexpected {extra}")
    return value


def _list(value: object, what: str, limit: int) -> tuple[Any, ...]:
    if not isinstance(value, tuple | list):
        raise ManifestError(f"{what} must be an array, got {type(value).__name__}")
    if len(value) > limit:
        raise ManifestError(f"{what} has {len(value)} entries, more than {limit}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output: name, element type and shape."""

    name: str
    elem_type: str
    shape: tuple[Dim, ...] | None  # None: rank unknown

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (0 < len(self.name) <= 256):
            raise ManifestError(f"tensor name must be 1-256 characters: {self.name!r}")
        if self.elem_type not in ELEM_TYPE_NAMES:
            raise ManifestError(f"tensor {self.name!r}: unknown element type {self.elem_type!r}")
        if self.shape is not None:
            if len(self.shape) > MAX_RANK:
                raise ManifestError(f"tensor {self.name!r}: rank above {MAX_RANK}")
            for d in self.shape:
                if d is None:
                    continue
                if type(d) is int:
                    if not 0 <= d <= MAX_DIM:
                        raise ManifestError(f"tensor {self.name!r}: dimension {d} out of range")
                elif not isinstance(d, str) or not _DIM_PARAM_RE.fullmatch(d):
                    raise ManifestError(f"tensor {self.name!r}: bad symbolic dimension {d!r}")

    def describe(self) -> str:
        if self.shape is None:
            return f"{self.name}: {self.elem_type}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.elem_type}[{dims}]"

    def _wire(self) -> dict[str, Any]:
        # Unknown dims are encoded as "" (msgpack nil is not used in manifests).
        shape = None if self.shape is None else ["" if d is None else d for d in self.shape]
        return {
            "name": self.name,
            "shape": [] if shape is None else shape,
            "rank_known": self.shape is not None,
            "type": self.elem_type,
        }

    @classmethod
    def _from_wire(cls, raw: object, what: str) -> TensorSpec:
        m = _map(raw, what, frozenset({"name", "shape", "rank_known", "type"}))
        if type(m["rank_known"]) is not bool:
            raise ManifestError(f"{what}.rank_known must be a boolean")
        dims = _list(m["shape"], f"{what}.shape", MAX_RANK)
        if not m["rank_known"] and dims:
            raise ManifestError(f"{what}: a shape is given but rank_known is false")
        shape: tuple[Dim, ...] | None = (
            tuple(None if d == "" else d for d in dims) if m["rank_known"] else None
        )
        if not isinstance(m["type"], str):
            raise ManifestError(f"{what}.type must be a string")
        return cls(name=m["name"], elem_type=m["type"], shape=shape)


@dataclass(frozen=True, slots=True)
class ModelInterface:
    """The ONNX model's interface, read at publish time for the pre-activation check."""

    ir_version: int
    opsets: tuple[tuple[str, int], ...]  # (domain, version); "" is the default domain
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        _int(self.ir_version, "ir_version", 1, 1000)
        if not self.opsets or len(self.opsets) > MAX_OPSETS:
            raise ManifestError(f"a model needs 1-{MAX_OPSETS} opset imports")
        for domain, version in self.opsets:
            if not isinstance(domain, str) or not _DOMAIN_RE.fullmatch(domain):
                raise ManifestError(f"bad opset domain {domain!r}")
            _int(version, f"opset version of {domain!r}", 1, 10_000)
        if len({d for d, _ in self.opsets}) != len(self.opsets):
            raise ManifestError("opset domains repeat")
        if not self.outputs:
            raise ManifestError("a model needs at least one output")
        for group, what in ((self.inputs, "input"), (self.outputs, "output")):
            if len(group) > MAX_TENSORS:
                raise ManifestError(f"more than {MAX_TENSORS} {what}s")
            names = [t.name for t in group]
            if len(set(names)) != len(names):
                raise ManifestError(f"{what} names repeat")

    def _wire(self) -> dict[str, Any]:
        return {
            "inputs": [t._wire() for t in self.inputs],
            "ir_version": self.ir_version,
            "opsets": [[d, v] for d, v in self.opsets],
            "outputs": [t._wire() for t in self.outputs],
        }

    @classmethod
    def _from_wire(cls, raw: object) -> ModelInterface:
        m = _map(raw, "onnx", frozenset({"inputs", "ir_version", "opsets", "outputs"}))
        opsets = []
        for i, item in enumerate(_list(m["opsets"], "onnx.opsets", MAX_OPSETS)):
            pair = _list(item, f"onnx.opsets[{i}]", 2)
            if len(pair) != 2:
                raise ManifestError(f"onnx.opsets[{i}] must be [domain, version]")
            opsets.append((pair[0], pair[1]))
        inputs = tuple(
            TensorSpec._from_wire(t, f"onnx.inputs[{i}]")
            for i, t in enumerate(_list(m["inputs"], "onnx.inputs", MAX_TENSORS))
        )
        outputs = tuple(
            TensorSpec._from_wire(t, f"onnx.outputs[{i}]")
            for i, t in enumerate(_list(m["outputs"], "onnx.outputs", MAX_TENSORS))
        )
        return cls(ir_version=m["ir_version"], opsets=tuple(opsets), inputs=inputs, outputs=outputs)


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of chunks a file of ``size`` bytes has (an empty file has none)."""
    return -(-size // chunk_size)


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a release: its path, size, whole-file SHA-256 and chunk ids in order."""

    path: str
    size: int
    sha256: bytes
    chunks: tuple[ChunkId, ...]

    def __post_init__(self) -> None:
        check_path(self.path)
        if type(self.sha256) is not bytes or len(self.sha256) != DIGEST_SIZE:
            raise ManifestError(f"file {self.path!r}: sha256 must be {DIGEST_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """Where a chunk sits: release-wide index, file index, offset and length in that file."""

    index: int
    file_index: int
    offset: int
    length: int
    chunk_id: ChunkId


@dataclass(frozen=True, slots=True)
class Manifest:
    """One model version as published.  ``encode()`` is canonical; ``release_id`` names it."""

    mesh: str
    model: str
    version: int
    created: int
    chunk_size: int
    files: tuple[FileEntry, ...]
    interface: ModelInterface
    breaking: bool = False  # the publisher marks an intentional interface change
    _encoded: bytes = field(default=b"", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name(self.mesh, "mesh name")
        check_name(self.model, "model name")
        _int(self.version, "version", 1, MAX_VERSION)
        _int(self.created, "created", MIN_CREATED, MAX_CREATED)
        _int(self.chunk_size, "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        if self.chunk_size & (self.chunk_size - 1):
            raise ManifestError(f"chunk_size {self.chunk_size} is not a power of two")
        if type(self.breaking) is not bool:
            raise ManifestError("breaking must be a boolean")
        if not 0 < len(self.files) <= MAX_FILES:
            raise ManifestError(f"a release has 1-{MAX_FILES} files, got {len(self.files)}")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise ManifestError("file paths repeat")
        dirs = {p[:i] for p in paths for i, c in enumerate(p) if c == "/"}
        if clash := sorted(dirs.intersection(paths)):
            raise ManifestError(f"file path {clash[0]!r} is also a directory of another file")
        for f in self.files:
            _int(f.size, f"size of {f.path!r}", 0, 2**50)
            want = chunk_count(f.size, self.chunk_size)
            if len(f.chunks) != want:
                raise ManifestError(
                    f"file {f.path!r}: {f.size} bytes need {want} chunks of "
                    f"{self.chunk_size}, manifest lists {len(f.chunks)}"
                )
        encoded = canonical_packb(self._wire())
        if len(encoded) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"manifest is {len(encoded)} bytes, over the {MAX_MANIFEST_BYTES} limit: "
                "use a larger chunk size"
            )
        object.__setattr__(self, "_encoded", encoded)

    # -- derived values -------------------------------------------------------------

    def encode(self) -> bytes:
        """The canonical bytes that are hashed and signed."""
        return self._encoded

    @property
    def release_id(self) -> ReleaseId:
        return ReleaseId.of(self._encoded)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def chunk_total(self) -> int:
        return sum(len(f.chunks) for f in self.files)

    def chunk_refs(self) -> Iterator[ChunkRef]:
        """Every chunk of the release in order (a chunk shared by two files appears twice)."""
        index = 0
        for fi, f in enumerate(self.files):
            for ci, cid in enumerate(f.chunks):
                offset = ci * self.chunk_size
                yield ChunkRef(index, fi, offset, min(self.chunk_size, f.size - offset), cid)
                index += 1

    def unique_chunks(self) -> dict[ChunkId, int]:
        """Each distinct chunk id with its length."""
        return {ref.chunk_id: ref.length for ref in self.chunk_refs()}

    def describe(self) -> str:
        return f"{self.model} v{self.version} ({self.release_id.short()})"

    # -- wire form --------------------------------------------------------------------

    def _wire(self) -> dict[str, Any]:
        return {
            "breaking": self.breaking,
            "chunk_size": self.chunk_size,
            "created": self.created,
            "files": [
                {
                    "chunks": b"".join(c.raw for c in f.chunks),
                    "path": f.path,
                    "sha256": f.sha256,
                    "size": f.size,
                }
                for f in self.files
            ],
            "format": FORMAT_VERSION,
            "mesh": self.mesh,
            "model": self.model,
            "onnx": self.interface._wire(),
            "version": self.version,
        }

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse and validate manifest bytes; raises :class:`ManifestError` on anything off."""
        if not isinstance(data, bytes):
            raise ManifestError(f"manifest must be bytes, got {type(data).__name__}")
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is {len(data)} bytes, over {MAX_MANIFEST_BYTES}")
        try:
            raw = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
            )
        except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
            raise ManifestError(f"manifest is not valid msgpack: {type(e).__name__}") from None
        top = _map(
            raw,
            "manifest",
            frozenset(
                {
                    "breaking",
                    "chunk_size",
                    "created",
                    "files",
                    "format",
                    "mesh",
                    "model",
                    "onnx",
                    "version",
                }
            ),
        )
        if top["format"] != FORMAT_VERSION or type(top["format"]) is not int:
            raise ManifestError(
                f"manifest format {top['format']!r} is not supported (this edgemesh reads "
                f"format {FORMAT_VERSION}); upgrade edgemesh"
            )
        files = []
        for i, fraw in enumerate(_list(top["files"], "files", MAX_FILES)):
            fm = _map(fraw, f"files[{i}]", frozenset({"chunks", "path", "sha256", "size"}))
            blob = fm["chunks"]
            if type(blob) is not bytes or len(blob) % DIGEST_SIZE:
                raise ManifestError(f"files[{i}].chunks must be bytes, a multiple of 32 long")
            if type(fm["sha256"]) is not bytes:
                raise ManifestError(f"files[{i}].sha256 must be bytes")
            chunks = tuple(
                ChunkId(blob[o : o + DIGEST_SIZE]) for o in range(0, len(blob), DIGEST_SIZE)
            )
            _int(fm["size"], f"files[{i}].size", 0, 2**50)
            files.append(
                FileEntry(
                    path=check_path(fm["path"]), size=fm["size"], sha256=fm["sha256"], chunks=chunks
                )
            )
        manifest = cls(
            mesh=check_name(top["mesh"], "mesh name"),
            model=check_name(top["model"], "model name"),
            version=top["version"],
            created=top["created"],
            chunk_size=top["chunk_size"],
            files=tuple(files),
            interface=ModelInterface._from_wire(top["onnx"]),
            breaking=top["breaking"],
        )
        if manifest.encode() != data:
            raise ManifestError("manifest is not in canonical form (re-encoding differs)")
        return manifest
