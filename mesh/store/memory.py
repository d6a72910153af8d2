"""The in-memory twin of the filesystem store, for unit tests and the simulator.

Same behaviour as :class:`~mesh.store.fs.FsStore` (the conformance suite checks it);
nothing survives the object.  ``corrupt`` and ``truncate`` exist so tests can damage
stored bytes the way a failing disk would.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from mesh.ids import ChunkId, ReleaseId
from mesh.store.base import BaseStore, Buffer


class MemoryStore(BaseStore):
    def __init__(self) -> None:
        super().__init__()
        self._chunks: dict[ChunkId, bytes] = {}
        self._release_bytes: dict[ReleaseId, bytes] = {}
        self._assembled: dict[ReleaseId, dict[str, bytes]] = {}

    def _chunk_read(self, chunk_id: ChunkId) -> bytes | None:
        return self._chunks.get(chunk_id)

    def _chunk_write(self, chunk_id: ChunkId, data: Buffer) -> bool:
        with self._lock:
            old = self._chunks.get(chunk_id)
            if old is not None and ChunkId.of(old) == chunk_id:
                return False
            # new, or replacing a damaged copy; a caller's buffer may be reused: copy
            self._chunks[chunk_id] = bytes(data)
            return True

    def _chunk_exists(self, chunk_id: ChunkId) -> bool:
        return chunk_id in self._chunks

    def _chunk_delete(self, chunk_id: ChunkId) -> int:
        with self._lock:
            data = self._chunks.pop(chunk_id, None)
        return 0 if data is None else len(data)

    def _chunk_list(self) -> Iterator[tuple[ChunkId, int]]:
        with self._lock:
            items = [(c, len(d)) for c, d in self._chunks.items()]
        return iter(items)

    def _release_write(self, release_id: ReleaseId, data: bytes) -> None:
        self._release_bytes[release_id] = data

    def _release_delete(self, release_id: ReleaseId) -> None:
        self._release_bytes.pop(release_id, None)

    def _assembled_write(
        self, release_id: ReleaseId, files: list[tuple[str, Iterator[bytes]]]
    ) -> None:
        out = {path: b"".join(blocks) for path, blocks in files}
        self._assembled[release_id] = out

    def _assembled_open(self, release_id: ReleaseId, path: str) -> BinaryIO | None:
        data = self._assembled.get(release_id, {}).get(path)
        return None if data is None else io.BytesIO(data)

    def _assembled_list(self) -> set[ReleaseId]:
        return set(self._assembled)

    def _assembled_delete(self, release_id: ReleaseId) -> None:
        self._assembled.pop(release_id, None)

    # -- fault injection for tests ---------------------------------------------------------

    def corrupt(self, chunk_id: ChunkId, offset: int = 0) -> None:
        data = bytearray(self._chunks[chunk_id])
        data[offset] ^= 0x01
        self._chunks[chunk_id] = bytes(data)

    def truncate(self, chunk_id: ChunkId, length: int) -> None:
        self._chunks[chunk_id] = self._chunks[chunk_id][:length]
