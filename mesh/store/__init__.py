"""The chunk store: content-addressed chunks, signed releases and assembled models.

``ChunkStore`` (in :mod:`mesh.store.base`) is the port; :class:`MemoryStore` is its
in-memory twin for unit tests and the simulator, :class:`FsStore` the real thing.
One conformance suite (``tests/store/test_conformance.py``) runs against both.
"""

from mesh.store.base import (
    BadChunk,
    ChunkStore,
    GcReport,
    ReleaseInfo,
    ReleaseReport,
    StoreStatistics,
)
from mesh.store.fs import FsStore
from mesh.store.memory import MemoryStore

__all__ = [
    "BadChunk",
    "ChunkStore",
    "FsStore",
    "GcReport",
    "MemoryStore",
    "ReleaseInfo",
    "ReleaseReport",
    "StoreStatistics",
]
