"""The filesystem chunk store.

Layout under the store root (``DATA_DIR/store``)::

    chunks/ab/ab12…(64 hex)     one file per chunk, named by its SHA-256
    releases/<release id>.rel    signed release (manifest + signatures), msgpack
    assembled/<release id>/…     the release's files, rebuilt from verified chunks
    tmp/                         work files; emptied when a writer opens the store
    lock                         flock held by the one process that may write

Rules:
* Every write is atomic: write a temp file in ``tmp/``, ``fsync`` it, ``rename`` it
  into place, then ``fsync`` the directory (batched: directories touched by chunk
  writes are synced before the next release file is written, so a release is never
  durable before its chunks are).  A ``kill -9`` at any moment leaves only complete
  files plus leftovers in ``tmp/``.
* ``ENOSPC``/``EDQUOT`` become :class:`~mesh.errors.StoreFullError`; the temp file is
  removed and nothing already stored is touched.
* One writer per data dir (``flock``); read-only opens (``verify``, ``status``) take
  no lock and never modify anything.
* Chunk files are read back and re-hashed on every ``get`` (verify on read).

Non-goals: packing small chunks together, deduplicating assembled files against
chunks (an assembled model costs its size once more on disk).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import mmap
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mesh.errors import EdgemeshError, IntegrityError, NotFoundError, StoreError, StoreFullError
from mesh.ids import DIGEST_SIZE, ChunkId, ReleaseId
from mesh.store.base import BaseStore, Buffer

_FULL = (errno.ENOSPC, errno.EDQUOT)
_counter = itertools.count()
_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)  # None: not Linux
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)  # 0: not Linux


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsStore(BaseStore):
    def __init__(self, root: Path, *, readonly: bool = False) -> None:
        super().__init__()
        self.root = Path(root)
        self.readonly = readonly
        self._chunks = self.root / "chunks"
        self._rels = self.root / "releases"
        self._asm = self.root / "assembled"
        self._tmp = self.root / "tmp"
        self._dirty_dirs: set[Path] = set()
        self._lock_fd: int | None = None
        if readonly:
            if not self.root.is_dir():
                raise StoreError(f"no store at {self.root} (nothing has been published or fetched)")
        else:
            try:
                for d in (self._chunks, self._rels, self._asm, self._tmp):
                    d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the store at {self.root}: {e.strerror}") from None
            self._take_lock()
            self._clean_tmp()
        self._load_releases()

    # -- lifecycle ---

    def _take_lock(self) -> None:
        path = self.root / "lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"the store {self.root} is in use by another edgemesh process (pid {holder}); "
                "stop it or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _clean_tmp(self) -> None:
        for p in self._tmp.iterdir():
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> FsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_releases(self) -> None:
        if not self._rels.is_dir():
            return
        for p in sorted(self._rels.glob("*.rel")):
            try:
                data = p.read_bytes()
            except OSError as e:
                self._damaged[p.stem] = (f"unreadable: {e.strerror}", None)
                continue
            self._loaded_release(p.stem, data)

    # -- atomic file writes ---

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"the store {self.root} was opened read-only")

    def _tmp_path(self) -> Path:
        return self._tmp / f"{os.getpid()}.{next(_counter)}.tmp"

    def _write_atomic(
        self, target: Path, data: Buffer | Iterator[bytes], what: str, *, drop_cache: bool = False
    ) -> int:
        self._check_writable()
        tmp = self._tmp_path()
        written = 0
        # drop_cache: the data is streamed (chunks), keep none of it in the page cache.
        # Page-aligned memory (publish's mmap buffers) goes to the disk with O_DIRECT,
        # no copy; anything O_DIRECT refuses (EINVAL: unaligned, e.g. a short last chunk,
        # or a file system without it) is written through the cache and dropped below.
        direct = (
            drop_cache
            and _O_DIRECT != 0
            and isinstance(data, memoryview)
            and isinstance(data.obj, mmap.mmap)
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            try:
                fd = os.open(tmp, flags | (_O_DIRECT if direct else 0), 0o644)
            except OSError as e:
                if not direct or e.errno != errno.EINVAL:
                    raise
                direct = False
                tmp.unlink(missing_ok=True)
                fd = os.open(tmp, flags, 0o644)
            try:
                for block in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
                    view = memoryview(block)
                    while view:
                        try:
                            n = os.write(fd, view)
                        except OSError as e:
                            if not direct or e.errno != errno.EINVAL:
                                raise
                            fcntl.fcntl(
                                fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT
                            )
                            direct = False
                            continue
                        view = view[n:]
                        written += n
                os.fsync(fd)
                if drop_cache and _DONTNEED is not None:
                    # Clean after fsync, so this frees any cached pages now (none if all
                    # went direct): streaming GBs of chunks neither evicts the working set
                    # nor keeps allocating cold pages.
                    os.posix_fadvise(fd, 0, 0, _DONTNEED)
            finally:
                os.close(fd)
            os.rename(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            if e.errno in _FULL:
                raise StoreFullError(
                    f"disk full while writing {what} in {self.root}: free space and retry "
                    "(nothing partial was kept)"
                ) from None
            raise StoreError(f"cannot write {what} in {self.root}: {e.strerror}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def _sync_dirty_dirs(self) -> None:
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        for d in dirs:
            _fsync_dir(d)

    # -- fast paths ---

    def put(self, chunk_id: ChunkId, data: Buffer) -> bool:
        """:meth:`BaseStore.put` without its defensive ``bytes()`` copy: this store
        writes ``data`` to disk before returning and keeps no reference to it, so a
        ``bytearray`` or ``memoryview`` (the chunk streams' receive buffers) is
        verified and written as it is.  Same checks, same result."""
        self._check_size(data)
        if ChunkId.of(data) != chunk_id:
            with self._lock:
                self._integrity_failures += 1
            raise IntegrityError(f"chunk {chunk_id.short()}: data does not match its hash")
        return self._store(chunk_id, data)

    def get_into(self, chunk_id: ChunkId, buf: memoryview) -> None:
        """:meth:`BaseStore.get_into` without an intermediate ``bytes``: the file is
        read straight into ``buf`` (no allocation, zero-fill and page faults per chunk
        on the sender, no copy).  Same checks: the file must be exactly ``len(buf)``
        bytes and hash to ``chunk_id``."""
        try:
            with open(self._chunk_path(chunk_id), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                got = 0
                if size == len(buf):
                    while got < size and (n := f.readinto(buf[got:])):
                        got += n
        except FileNotFoundError:
            raise NotFoundError(f"chunk {chunk_id.short()} is not in the store") from None
        except OSError as e:
            raise StoreError(f"cannot read chunk {chunk_id.short()}: {e.strerror}") from None
        if size != len(buf) or got != size or ChunkId.of(buf) != chunk_id:
            with self._lock:
                self._integrity_failures += 1
            raise IntegrityError(
                f"chunk {chunk_id.short()} is corrupt in the store (its bytes do not hash to "
                "its name, or its size is not the manifest's)"
            )
        with self._lock:
            self._read += 1
            self._bytes_read += size

    # -- chunk primitives ---

    def _chunk_path(self, chunk_id: ChunkId) -> Path:
        h = chunk_id.hex()
        return self._chunks / h[:2] / h

    def _chunk_read(self, chunk_id: ChunkId) -> bytes | None:
        try:
            with open(self._chunk_path(chunk_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read chunk {chunk_id.short()}: {e.strerror}") from None

    def _chunk_write(self, chunk_id: ChunkId, data: Buffer) -> bool:
        self._check_writable()  # before the mkdir below: a read-only open never writes
        path = self._chunk_path(chunk_id)
        if path.exists():
            if self._chunk_intact(path, chunk_id):
                return False
            # the stored copy is damaged: replace it with these (verified) bytes
            self._write_atomic(path, data, f"chunk {chunk_id.short()}", drop_cache=True)
            with self._lock:
                self._dirty_dirs.add(path.parent)
            return True
        d = path.parent
        if not d.is_dir():
            d.mkdir(exist_ok=True)
            with self._lock:
                self._dirty_dirs.add(self._chunks)
        self._write_atomic(path, data, f"chunk {chunk_id.short()}", drop_cache=True)
        with self._lock:
            self._dirty_dirs.add(d)
        return True

    @staticmethod
    def _chunk_intact(path: Path, chunk_id: ChunkId) -> bool:
        try:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).digest() == chunk_id.raw
        except OSError:
            return False

    def _chunk_exists(self, chunk_id: ChunkId) -> bool:
        return self._chunk_path(chunk_id).is_file()

    def _chunk_delete(self, chunk_id: ChunkId) -> int:
        self._check_writable()
        path = self._chunk_path(chunk_id)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size

    def _chunk_list(self) -> Iterator[tuple[ChunkId, int]]:
        if not self._chunks.is_dir():
            return
        for sub in sorted(self._chunks.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for entry in os.scandir(sub):
                name = entry.name
                if len(name) == 2 * DIGEST_SIZE and name.startswith(sub.name):
                    try:
                        yield ChunkId.from_hex(name), entry.stat().st_size
                    except (EdgemeshError, OSError):  # a stray file is not a chunk
                        continue

    # -- release primitives ---

    def _release_write(self, release_id: ReleaseId, data: bytes) -> None:
        self._sync_dirty_dirs()  # chunks become durable before the release that names them
        self._write_atomic(self._rels / f"{release_id.hex()}.rel", data, "release manifest")
        _fsync_dir(self._rels)

    def _release_delete(self, release_id: ReleaseId) -> None:
        self._check_writable()
        (self._rels / f"{release_id.hex()}.rel").unlink(missing_ok=True)

    # -- assembled files ---

    def assembled_dir(self, release_id: ReleaseId) -> Path:
        return self._asm / release_id.hex()

    def _assembled_write(
        self, release_id: ReleaseId, files: list[tuple[str, Iterator[bytes]]]
    ) -> None:
        self._check_writable()
        work = self._tmp / f"asm-{release_id.hex()}-{os.getpid()}.{next(_counter)}"
        try:
            work.mkdir()
            for rel_path, blocks in files:
                target = work / rel_path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._write_atomic(target, blocks, f"assembled file {rel_path}")
                _fsync_dir(target.parent)
            os.rename(work, self.assembled_dir(release_id))
            _fsync_dir(self._asm)
        except (StoreError, IntegrityError, OSError) as e:
            shutil.rmtree(work, ignore_errors=True)
            if isinstance(e, OSError):
                if e.errno in _FULL:
                    raise StoreFullError(
                        f"disk full while assembling release {release_id.short()}"
                    ) from None
                raise StoreError(
                    f"cannot assemble release {release_id.short()}: {e.strerror}"
                ) from None
            raise

    def _assembled_open(self, release_id: ReleaseId, path: str) -> BinaryIO | None:
        try:
            return open(self.assembled_dir(release_id) / path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def assembled_path(self, release_id: ReleaseId, path: str) -> Path:
        return self.assembled_dir(release_id) / path

    def _assembled_list(self) -> set[ReleaseId]:
        out: set[ReleaseId] = set()
        if not self._asm.is_dir():
            return out
        for p in self._asm.iterdir():
            if p.is_dir() and len(p.name) == 2 * DIGEST_SIZE:
                try:
                    out.add(ReleaseId.from_hex(p.name))
                except EdgemeshError:  # a stray directory is not a release
                    continue
        return out

    def _assembled_delete(self, release_id: ReleaseId) -> None:
        self._check_writable()
        d = self.assembled_dir(release_id)
        if d.exists():
            trash = self._tmp / f"del-{release_id.hex()}-{next(_counter)}"
            os.rename(d, trash)  # atomic disappearance, then the slow delete
            shutil.rmtree(trash, ignore_errors=True)

    # -- fault injection for tests (same names as MemoryStore) ---

    def corrupt(self, chunk_id: ChunkId, offset: int = 0) -> None:
        path = self._chunk_path(chunk_id)
        data = bytearray(path.read_bytes())
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))

    def truncate(self, chunk_id: ChunkId, length: int) -> None:
        os.truncate(self._chunk_path(chunk_id), length)
