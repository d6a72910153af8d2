"""Publishing: turn an ONNX model file into a signed, content-addressed release.

What it owns: the one streaming pass over the model's files that hashes every chunk
and every whole file and stores the chunks, then the manifest and signature.

Rules:
* One pass, bounded memory: the file is read once, in chunk-sized blocks; at most
  ``_IN_FLIGHT_BYTES`` of blocks wait for the store at any time, whatever the model size.
* The whole-file SHA-256 runs on the reading thread while chunk hashing and the
  store's write+fsync run on a small thread pool (``hashlib`` and file I/O release
  the GIL), so hashing and disk work overlap on a multi-core device.
* No copies beyond the kernel's: blocks are read into a few reusable page-aligned
  buffers that are hashed in place and handed to the store as memoryviews; a file
  store writes them with ``O_DIRECT``, so the chunk bytes are not copied into the page
  cache either (``simulations/bench_publish.py`` measures the pass against a bare
  SHA-256 of the file).
* Publishing is all or nothing: the release file is written last, after every chunk
  is durable.  On any failure (disk full, bad input, interrupt) the chunks this run
  added are removed again; chunks that were there before are never touched.  After a
  ``kill -9`` only unreferenced chunks can remain; ``gc`` removes them and publishing
  again reuses them.
* Versions only go up: a version not newer than the newest stored one is refused.

Non-goals: reading the clock (``created`` is passed in), loading the model in
onnxruntime (the caller passes ``load_check``).
"""

from __future__ import annotations

import collections
import hashlib
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mesh.core.manifest import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    FileEntry,
    Manifest,
    check_name,
    check_path,
)
from mesh.core.trust import SignedRelease, Signer
from mesh.errors import ConfigError, EdgemeshError, ManifestError, ModelFormatError, VersionError
from mesh.ids import ChunkId
from mesh.onnxsig import read_onnx
from mesh.store.base import ChunkStore

_IN_FLIGHT_BYTES = 32 * 1024 * 1024  # blocks queued for the store: bounds publish memory
# Threads for chunk hash + write + fsync.  Mostly waiting in fsync, so more threads than
# cores: measured 4-8 as good on 2 cores (1 MiB chunks, ext4/virtio); 8 hides slow fsyncs.
_WORKERS = 8


@dataclass(frozen=True, slots=True)
class PublishResult:
    release: SignedRelease
    chunks_new: int
    chunks_reused: int
    bytes_hashed: int
    load_checked: bool


def check_chunk_size(chunk_size: int) -> int:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise ConfigError(
            f"chunk size {chunk_size} is not allowed: use a power of two from "
            f"{MIN_CHUNK_SIZE // 1024} KiB to {MAX_CHUNK_SIZE // (1024 * 1024)} MiB"
        )
    return chunk_size


def _manifest_path(path: Path) -> str:
    try:
        return check_path(path.name)
    except ManifestError:
        return "model.onnx"


def _read_into(f: BinaryIO, buf: mmap.mmap) -> int:
    """Fill ``buf`` from ``f``; fewer bytes only at the end of the file.  A short read
    before the end is completed, so chunk boundaries never shift."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _hash_file(
    store: ChunkStore,
    pool: ThreadPoolExecutor,
    path: Path,
    manifest_path: str,
    chunk_size: int,
    added: list[ChunkId],
) -> tuple[FileEntry, int]:
    """Stream ``path`` into the store; returns its entry and how many chunks were reused."""
    whole = hashlib.sha256()
    ids: list[ChunkId] = []
    reused = 0
    # Up to max_window reusable buffers: the file is read straight into one (readinto),
    # hashed here and handed to the store as a memoryview, and the buffer is reused once
    # the store has written it.  No per-chunk allocation, no copy, no fresh page faults.
    # Anonymous mmaps are page-aligned, so the store can write them with O_DIRECT (no
    # copy into the page cache either); made only as needed, so a small file costs little.
    max_window = max(2, _IN_FLIGHT_BYTES // chunk_size)
    free: list[mmap.mmap] = []
    made = 0
    window: collections.deque[tuple[Future[tuple[ChunkId, bool]], mmap.mmap]] = collections.deque()

    def settle(item: tuple[Future[tuple[ChunkId, bool]], mmap.mmap]) -> None:
        nonlocal reused
        cid, new = item[0].result()
        free.append(item[1])
        ids.append(cid)
        if new:
            added.append(cid)
        else:
            reused += 1

    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 -- closed in finally
    except OSError as e:
        raise ModelFormatError(f"cannot read {path}: {e.strerror}") from None
    try:
        size = os.fstat(f.fileno()).st_size
        total = 0
        while True:
            if not free:
                if made < max_window:
                    free.append(mmap.mmap(-1, chunk_size))
                    made += 1
                else:
                    settle(window.popleft())
            buf = free.pop()
            n = _read_into(f, buf)
            if not n:
                free.append(buf)
                break
            view = memoryview(buf)[:n]
            window.append((pool.submit(store.add_new, view), buf))  # hashed there and here
            whole.update(view)
            total += n
        while window:
            settle(window.popleft())
    except OSError as e:
        raise ModelFormatError(f"reading {path} failed: {e.strerror}") from None
    finally:
        for fut, _ in window:  # on failure: let in-flight writes finish, record what they added
            try:
                cid, new = fut.result()
                if new:
                    added.append(cid)
            except EdgemeshError:
                pass
        f.close()
    if total != size or os.stat(path).st_size != size:
        raise ModelFormatError(f"{path} changed while it was being published; try again")
    return FileEntry(
        path=manifest_path, size=total, sha256=whole.digest(), chunks=tuple(ids)
    ), reused


def publish(
    store: ChunkStore,
    model_path: Path,
    *,
    mesh: str,
    model: str,
    version: int,
    signer: Signer,
    created: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    breaking: bool = False,
    load_check: Callable[[Path, int], bool] | None = None,
) -> PublishResult:
    """Publish ``model_path`` (and its external-data files) as ``model`` ``version``."""
    check_name(mesh, "mesh name")
    check_name(model, "model name")
    check_chunk_size(chunk_size)
    if type(version) is not int or version < 1:
        raise ConfigError(f"version must be a positive integer, got {version!r}")
    newest = store.latest_version(model)
    if newest is not None and version <= newest:
        raise VersionError(
            f"model {model!r} already has version {newest} in this store; publish a version "
            f"above {newest} (versions only go up, so nodes never roll back by accident)"
        )
    info = read_onnx(model_path)
    sources = [(model_path, _manifest_path(model_path))] + [
        (model_path.parent / rel, rel) for rel in info.external_files
    ]
    total = sum(src.stat().st_size for src, _ in sources)  # external weights included
    checked = load_check(model_path, total) if load_check is not None else False
    if len({p for _, p in sources}) != len(sources):
        raise ModelFormatError(f"{model_path.name}: external data file names clash with the model")

    added: list[ChunkId] = []
    entries: list[FileEntry] = []
    reused = hashed = 0
    try:
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="publish") as pool:
            for src, rel in sources:
                entry, r = _hash_file(store, pool, src, rel, chunk_size, added)
                entries.append(entry)
                reused += r
                hashed += entry.size
        manifest = Manifest(
            mesh=mesh,
            model=model,
            version=version,
            created=created,
            chunk_size=chunk_size,
            files=tuple(entries),
            interface=info.interface,
            breaking=breaking,
        )
        release = SignedRelease.create(manifest, [signer])
        store.put_release(release)
    except BaseException:
        for cid in added:
            store.delete_chunk(cid)
        raise
    return PublishResult(release, len(added), reused, hashed, checked)
