"""A stand-in node for tests until ``edgemesh join`` exists: the inference service and
its API over a data dir, recorded in ``node.json`` like a real node.

``python -m tests.runtime.serve_node DATA_DIR [--offer-all]`` restores the persisted
active versions, optionally offers every complete release in the store (oldest first),
serves the API on a free loopback port, writes node.json and prints ``ready URL``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

from mesh.datadir import DataDir
from mesh.runtime.api import serve_api
from mesh.runtime.inference import InferenceService


async def main(data: Path, offer_all: bool) -> None:
    dd = DataDir(data)
    store = dd.open_store()
    service = InferenceService(dd, store)
    await service.start()
    if offer_all:
        for info in store.releases():
            if info.complete:
                await service.offer(info.release_id)
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(serve_api, service)
        url = f"http://{host}:{port}"
        dd.write_node_info({"pid": os.getpid(), "peer_id": "", "api": url})
        print(f"ready {url}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("data_dir", type=Path)
    p.add_argument("--offer-all", action="store_true")
    a = p.parse_args()
    try:
        trio.run(main, a.data_dir, a.offer_all)
    except KeyboardInterrupt:
        sys.exit(0)
