"""A hostile node for end-to-end tests: a real node process whose store hands out
corrupted chunk bytes (one byte flipped), so it serves bad data with a valid protocol.

``python -m tests.e2e.hostile_node DATA_DIR MESH`` (the data dir already holds a copy
of a published release); writes node.json like a real node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import trio

from mesh.core.node import NodeConfig
from mesh.datadir import DataDir
from mesh.ids import ChunkId
from mesh.store.base import BaseStore
from mesh.store.fs import FsStore

_honest_get = FsStore.get
_honest_get_into = FsStore.get_into


def _corrupt_get(self: BaseStore, chunk_id: ChunkId) -> bytes:
    data = bytearray(_honest_get(self, chunk_id))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def _corrupt_get_into(self: FsStore, chunk_id: ChunkId, buf: memoryview) -> None:
    # the chunk sender reads chunks with get_into
    _honest_get_into(self, chunk_id, buf)
    buf[len(buf) // 2] ^= 0xFF


async def main(data: Path, mesh: str) -> None:
    from mesh.runtime.node import NodeSettings, open_node

    FsStore.get = _corrupt_get  # type: ignore[method-assign]
    FsStore.get_into = _corrupt_get_into  # type: ignore[method-assign]
    dd = DataDir(data)
    settings = NodeSettings(
        dd, dd.load_trust(), NodeConfig(mesh=mesh), listen=["/ip4/127.0.0.1/tcp/0"], mdns=False
    )
    async with open_node(settings) as handle:
        dd.write_node_info(
            {"pid": os.getpid(), "peer_id": handle.peer_id, "addrs": handle.addrs, "api": ""}
        )
        print("ready", handle.addrs[0], flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), sys.argv[2])
