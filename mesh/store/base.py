"""The chunk-store port and the logic every store shares.

What it owns: the public :class:`ChunkStore` API -- chunks named by their SHA-256,
verified on write and on read; signed releases; assembled model files; release
verification; garbage collection; statistics -- written once in :class:`BaseStore`
on top of a handful of storage primitives that each backend implements.

Rules:
* A chunk is only ever stored under its own hash: ``put`` checks, ``add`` computes.
* Every read is verified: ``get`` returns the exact bytes named or raises
  :class:`~mesh.errors.IntegrityError` naming the chunk.
* A release becomes visible atomically and only after its manifest decodes;
  presence of a release does not mean its chunks are all there (a node stores the
  manifest first, then fetches) -- ``release_info`` says how many are verified.
* Garbage collection keeps the newest ``keep`` versions of every model (at least 2:
  the current one and the previous one, for rollback) plus any pinned releases, and
  removes chunks that no kept release references.

Non-goals: networking, scheduling, deciding what is "active" (the core does that).
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from mesh.core.manifest import MAX_CHUNK_SIZE
from mesh.core.trust import SignedRelease
from mesh.errors import (
    EdgemeshError,
    IntegrityError,
    LocalProtocolError,
    NotFoundError,
    VersionError,
)
from mesh.ids import ChunkId, ReleaseId

MIN_KEEP = 2  # current + previous version of each model, for rollback

Buffer = bytes | bytearray | memoryview
"""Chunk bytes as callers may hold them (publish hands over reusable buffers)."""


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    chunks: int
    chunk_bytes: int
    releases: int
    assembled: int
    chunks_written: int
    chunks_deduplicated: int
    chunks_read: int
    bytes_written: int
    bytes_read: int
    integrity_failures: int


@dataclass(frozen=True, slots=True)
class ReleaseInfo:
    release_id: ReleaseId
    model: str
    version: int
    size: int
    chunks_total: int
    chunks_present: int
    assembled: bool

    @property
    def complete(self) -> bool:
        return self.chunks_present == self.chunks_total


@dataclass(frozen=True, slots=True)
class BadChunk:
    index: int
    path: str
    chunk_id: ChunkId
    reason: str

    def describe(self) -> str:
        return f"chunk #{self.index} ({self.chunk_id.short()}) of {self.path}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ReleaseReport:
    """Result of verifying every chunk of a release against its manifest."""

    release_id: ReleaseId
    model: str
    version: int
    chunks_total: int
    chunks_verified: int
    bad: tuple[BadChunk, ...]

    @property
    def ok(self) -> bool:
        return self.chunks_verified == self.chunks_total


@dataclass(frozen=True, slots=True)
class GcReport:
    releases_removed: tuple[ReleaseId, ...]
    chunks_removed: int
    bytes_freed: int


class ChunkStore(Protocol):
    """The port every store implements (see module docstring for the rules)."""

    def add(self, data: Buffer) -> ChunkId: ...
    def add_new(self, data: Buffer) -> tuple[ChunkId, bool]: ...
    def put(self, chunk_id: ChunkId, data: bytes) -> bool: ...
    def get(self, chunk_id: ChunkId) -> bytes: ...
    def get_into(self, chunk_id: ChunkId, buf: memoryview) -> None: ...
    def has(self, chunk_id: ChunkId) -> bool: ...
    def present(self, chunk_ids: Iterable[ChunkId]) -> set[ChunkId]: ...
    def delete_chunk(self, chunk_id: ChunkId) -> int: ...
    def chunk_ids(self) -> list[ChunkId]: ...
    def put_release(self, release: SignedRelease) -> ReleaseId: ...
    def get_release(self, release_id: ReleaseId) -> SignedRelease: ...
    def releases(self, model: str | None = None) -> list[ReleaseInfo]: ...
    def release_info(self, release_id: ReleaseId) -> ReleaseInfo: ...
    def delete_release(self, release_id: ReleaseId) -> None: ...
    def verify_release(self, release_id: ReleaseId) -> ReleaseReport: ...
    def assemble(self, release_id: ReleaseId) -> None: ...
    def is_assembled(self, release_id: ReleaseId) -> bool: ...
    def open_assembled(self, release_id: ReleaseId, path: str) -> BinaryIO: ...
    def gc(self, keep: int = MIN_KEEP, pinned: Iterable[ReleaseId] = ()) -> GcReport: ...
    def latest_version(self, model: str) -> int | None: ...
    def find_release(self, model: str, version: int | None = None) -> SignedRelease: ...
    def damaged_releases(self) -> dict[str, str]: ...
    def candidates(
        self, model: str, version: int | None = None
    ) -> list[tuple[SignedRelease, str | None]]: ...
    def statistics(self) -> StoreStatistics: ...
    def close(self) -> None: ...


class BaseStore(ABC):
    """Shared store logic over storage primitives (``_chunk_*``, ``_release_*``, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._releases: dict[ReleaseId, SignedRelease] = {}
        # release file name -> (why it was not loaded, the release if it still decoded)
        self._damaged: dict[str, tuple[str, SignedRelease | None]] = {}
        self._written = self._dedup = self._read = 0
        self._bytes_written = self._bytes_read = self._integrity_failures = 0

    # -- primitives ---

    @abstractmethod
    def _chunk_read(self, chunk_id: ChunkId) -> bytes | None: ...

    @abstractmethod
    def _chunk_write(self, chunk_id: ChunkId, data: Buffer) -> bool:
        """Store ``data`` (already verified); False if it was already present."""

    @abstractmethod
    def _chunk_exists(self, chunk_id: ChunkId) -> bool: ...

    @abstractmethod
    def _chunk_delete(self, chunk_id: ChunkId) -> int: ...

    @abstractmethod
    def _chunk_list(self) -> Iterator[tuple[ChunkId, int]]: ...

    @abstractmethod
    def _release_write(self, release_id: ReleaseId, data: bytes) -> None: ...

    @abstractmethod
    def _release_delete(self, release_id: ReleaseId) -> None: ...

    @abstractmethod
    def _assembled_write(
        self, release_id: ReleaseId, files: list[tuple[str, Iterator[bytes]]]
    ) -> None: ...

    @abstractmethod
    def _assembled_open(self, release_id: ReleaseId, path: str) -> BinaryIO | None: ...

    @abstractmethod
    def _assembled_list(self) -> set[ReleaseId]: ...

    @abstractmethod
    def _assembled_delete(self, release_id: ReleaseId) -> None: ...

    # -- chunks ---

    @staticmethod
    def _check_size(data: Buffer) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"chunk data must be bytes, got {type(data).__name__}")
        if len(data) > MAX_CHUNK_SIZE:
            raise LocalProtocolError(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_SIZE}")

    def add(self, data: Buffer) -> ChunkId:
        """Store ``data`` under its hash and return that id."""
        return self.add_new(data)[0]

    def add_new(self, data: Buffer) -> tuple[ChunkId, bool]:
        """Like :meth:`add`, also saying whether the chunk was newly stored."""
        self._check_size(data)
        chunk_id = ChunkId.of(data)
        return chunk_id, self._store(chunk_id, data)

    def put(self, chunk_id: ChunkId, data: bytes) -> bool:
        """Store ``data`` if it hashes to ``chunk_id``; True if newly stored."""
        self._check_size(data)
        if ChunkId.of(data) != chunk_id:
            with self._lock:
                self._integrity_failures += 1
            raise IntegrityError(f"chunk {chunk_id.short()}: data does not match its hash")
        return self._store(chunk_id, bytes(data))

    def _store(self, chunk_id: ChunkId, data: Buffer) -> bool:
        new = self._chunk_write(chunk_id, data)
        with self._lock:
            if new:
                self._written += 1
                self._bytes_written += len(data)
            else:
                self._dedup += 1
        return new

    def get(self, chunk_id: ChunkId) -> bytes:
        data = self._chunk_read(chunk_id)
        if data is None:
            raise NotFoundError(f"chunk {chunk_id.short()} is not in the store")
        if len(data) > MAX_CHUNK_SIZE or ChunkId.of(data) != chunk_id:
            with self._lock:
                self._integrity_failures += 1
            raise IntegrityError(
                f"chunk {chunk_id.short()} is corrupt in the store (its bytes do not hash to "
                "its name)"
            )
        with self._lock:
            self._read += 1
            self._bytes_read += len(data)
        return data

    def get_into(self, chunk_id: ChunkId, buf: memoryview) -> None:
        """:meth:`get` into ``buf``, which must be exactly the chunk's size (the size
        the manifest gives): same checks (a chunk of another size is corrupt), so a
        sender can read a chunk into a buffer it reuses.  ``buf`` is undefined after
        an error."""
        data = self.get(chunk_id)
        if len(data) != len(buf):
            with self._lock:
                self._integrity_failures += 1
            raise IntegrityError(
                f"chunk {chunk_id.short()} is corrupt in the store ({len(data)} bytes, "
                f"the manifest says {len(buf)})"
            )
        buf[:] = data

    def has(self, chunk_id: ChunkId) -> bool:
        return self._chunk_exists(chunk_id)

    def present(self, chunk_ids: Iterable[ChunkId]) -> set[ChunkId]:
        return {c for c in set(chunk_ids) if self._chunk_exists(c)}

    def delete_chunk(self, chunk_id: ChunkId) -> int:
        return self._chunk_delete(chunk_id)

    def chunk_ids(self) -> list[ChunkId]:
        return sorted(c for c, _ in self._chunk_list())

    # -- releases ---

    def put_release(self, release: SignedRelease) -> ReleaseId:
        """Make ``release`` visible.  Refuses a second release with the same model+version."""
        m = release.manifest
        rid = m.release_id
        with self._lock:
            if rid in self._releases:
                return rid
            for other in self._releases.values():
                om = other.manifest
                if om.model == m.model and om.version == m.version:
                    raise VersionError(
                        f"{m.model} v{m.version} already exists as release "
                        f"{om.release_id.short()}; versions are immutable"
                    )
        self._release_write(rid, release.encode())
        with self._lock:
            self._releases[rid] = release
            self._damaged.pop(rid.hex(), None)  # a damaged file by that name was replaced
        return rid

    def _loaded_release(self, name: str, data: bytes) -> None:
        """Called by backends when opening: index a stored release, or note why not."""
        try:
            release = SignedRelease.decode(data)
        except EdgemeshError as e:
            self._damaged[name] = (f"unreadable: {e}", None)
            return
        rid = release.manifest.release_id
        if rid.hex() != name:
            self._damaged[name] = (
                f"manifest does not hash to its release id (it hashes to {rid.short()}): "
                "the file was modified or corrupted",
                release,
            )
            return
        self._releases[rid] = release

    def damaged_releases(self) -> dict[str, str]:
        """Release files that could not be loaded, with the reason."""
        return {name: why for name, (why, _) in self._damaged.items()}

    def candidates(
        self, model: str, version: int | None = None
    ) -> list[tuple[SignedRelease, str | None]]:
        """Releases of ``model`` (at ``version``) including damaged ones that still decode,
        each with the damage reason or None; newest first, a damaged copy before a
        sound one of the same version (so ``verify`` reports it)."""
        with self._lock:
            found: list[tuple[SignedRelease, str | None]] = [
                (r, None) for r in self._releases.values() if r.manifest.model == model
            ]
        found += [
            (r, f"release file {name[:12]}: {why}")
            for name, (why, r) in self._damaged.items()
            if r is not None and r.manifest.model == model
        ]
        found = [x for x in found if version in (None, x[0].manifest.version)]
        found.sort(key=lambda x: (x[0].manifest.version, x[1] is not None), reverse=True)
        return found

    def get_release(self, release_id: ReleaseId) -> SignedRelease:
        try:
            return self._releases[release_id]
        except KeyError:
            raise NotFoundError(f"release {release_id.short()} is not in the store") from None

    def _info(self, release: SignedRelease, assembled: set[ReleaseId]) -> ReleaseInfo:
        m = release.manifest
        unique = m.unique_chunks()
        present = self.present(unique)
        return ReleaseInfo(
            release_id=m.release_id,
            model=m.model,
            version=m.version,
            size=m.total_size,
            chunks_total=m.chunk_total,
            chunks_present=sum(1 for r in m.chunk_refs() if r.chunk_id in present),
            assembled=m.release_id in assembled,
        )

    def release_info(self, release_id: ReleaseId) -> ReleaseInfo:
        return self._info(self.get_release(release_id), self._assembled_list())

    def releases(self, model: str | None = None) -> list[ReleaseInfo]:
        assembled = self._assembled_list()
        with self._lock:
            rels = list(self._releases.values())
        out = [self._info(r, assembled) for r in rels if model in (None, r.manifest.model)]
        return sorted(out, key=lambda i: (i.model, i.version))

    def latest_version(self, model: str) -> int | None:
        with self._lock:
            versions = [
                r.manifest.version for r in self._releases.values() if r.manifest.model == model
            ]
        return max(versions, default=None)

    def find_release(self, model: str, version: int | None = None) -> SignedRelease:
        """The release of ``model`` at ``version`` (default: the newest)."""
        with self._lock:
            matches = [r for r in self._releases.values() if r.manifest.model == model]
        if not matches:
            raise NotFoundError(f"no release of model {model!r} in the store")
        if version is None:
            return max(matches, key=lambda r: r.manifest.version)
        for r in matches:
            if r.manifest.version == version:
                return r
        have = ", ".join(str(v) for v in sorted(r.manifest.version for r in matches))
        raise NotFoundError(f"model {model!r} has no version {version} (have: {have})")

    def delete_release(self, release_id: ReleaseId) -> None:
        self.get_release(release_id)
        self._assembled_delete(release_id)
        self._release_delete(release_id)
        with self._lock:
            self._releases.pop(release_id, None)

    def verify_release(self, release_id: ReleaseId) -> ReleaseReport:
        """Re-hash every chunk of the release from storage; report each bad one."""
        m = self.get_release(release_id).manifest
        bad: list[BadChunk] = []
        verified = 0
        for ref in m.chunk_refs():
            path = m.files[ref.file_index].path
            data = self._chunk_read(ref.chunk_id)
            if data is None:
                bad.append(BadChunk(ref.index, path, ref.chunk_id, "missing"))
            elif len(data) != ref.length:
                bad.append(
                    BadChunk(
                        ref.index,
                        path,
                        ref.chunk_id,
                        f"truncated: {len(data)} of {ref.length} bytes"
                        if len(data) < ref.length
                        else f"wrong size: {len(data)} bytes, expected {ref.length}",
                    )
                )
            elif hashlib.sha256(data).digest() != ref.chunk_id.raw:
                bad.append(BadChunk(ref.index, path, ref.chunk_id, "content does not match hash"))
            else:
                verified += 1
        if bad:
            with self._lock:
                self._integrity_failures += sum(1 for b in bad if b.reason != "missing")
        return ReleaseReport(release_id, m.model, m.version, m.chunk_total, verified, tuple(bad))

    # -- assembled model files ---

    def assemble(self, release_id: ReleaseId) -> None:
        """Write the release's files from verified chunks, checking each whole-file hash."""
        m = self.get_release(release_id).manifest
        if release_id in self._assembled_list():
            return

        def file_blocks(index: int) -> Iterator[bytes]:
            entry = m.files[index]
            h = hashlib.sha256()
            for cid in entry.chunks:
                data = self.get(cid)
                h.update(data)
                yield data
            if h.digest() != entry.sha256:
                raise IntegrityError(
                    f"{m.describe()}: assembled {entry.path} does not match its whole-file hash"
                )

        self._assembled_write(release_id, [(f.path, file_blocks(i)) for i, f in enumerate(m.files)])

    def is_assembled(self, release_id: ReleaseId) -> bool:
        return release_id in self._assembled_list()

    def open_assembled(self, release_id: ReleaseId, path: str) -> BinaryIO:
        f = self._assembled_open(release_id, path)
        if f is None:
            raise NotFoundError(f"release {release_id.short()} has no assembled file {path!r}")
        return f

    # -- garbage collection ---

    def gc(self, keep: int = MIN_KEEP, pinned: Iterable[ReleaseId] = ()) -> GcReport:
        if keep < MIN_KEEP:
            raise LocalProtocolError(f"gc must keep at least {MIN_KEEP} versions per model")
        pinned_set = set(pinned)
        with self._lock:
            by_model: dict[str, list[SignedRelease]] = {}
            for r in self._releases.values():
                by_model.setdefault(r.manifest.model, []).append(r)
        drop: list[ReleaseId] = []
        for rels in by_model.values():
            rels.sort(key=lambda r: r.manifest.version, reverse=True)
            drop.extend(
                r.manifest.release_id
                for r in rels[keep:]
                if r.manifest.release_id not in pinned_set
            )
        for rid in drop:
            self.delete_release(rid)
        for rid in self._assembled_list() - set(self._releases):
            self._assembled_delete(rid)
        with self._lock:
            referenced: set[ChunkId] = set()
            for r in self._releases.values():
                referenced.update(f_c for f in r.manifest.files for f_c in f.chunks)
        removed = freed = 0
        for cid, _size in list(self._chunk_list()):
            if cid not in referenced:
                freed += self._chunk_delete(cid)
                removed += 1
        return GcReport(tuple(drop), removed, freed)

    # -- statistics ---

    def statistics(self) -> StoreStatistics:
        chunks = list(self._chunk_list())
        with self._lock:
            return StoreStatistics(
                chunks=len(chunks),
                chunk_bytes=sum(s for _, s in chunks),
                releases=len(self._releases),
                assembled=len(self._assembled_list()),
                chunks_written=self._written,
                chunks_deduplicated=self._dedup,
                chunks_read=self._read,
                bytes_written=self._bytes_written,
                bytes_read=self._bytes_read,
                integrity_failures=self._integrity_failures,
            )

    def close(self) -> None:  # noqa: B027 -- backends with resources override
        """Release resources (locks, files)."""
