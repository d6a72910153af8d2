"""Fixtures for the inference runtime: a data dir with a writable store, publishing
generated models into it, and a running service + API on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
import trio

from mesh.core.manifest import MIN_CHUNK_SIZE, MIN_CREATED
from mesh.datadir import DataDir
from mesh.ids import ReleaseId
from mesh.modelgen import write_example_model
from mesh.publish import publish
from mesh.runtime.api import serve_api
from mesh.runtime.inference import InferenceService
from mesh.runtime.v2client import V2Client
from mesh.store.fs import FsStore
from tests.helpers import key


@dataclass
class Node:
    data_dir: DataDir
    store: FsStore
    models_dir: Path

    def publish_file(
        self, path: Path, model: str, version: int, *, breaking: bool = False
    ) -> ReleaseId:
        res = publish(
            self.store,
            path,
            mesh="lab",
            model=model,
            version=version,
            signer=key(),
            created=MIN_CREATED + version,
            chunk_size=MIN_CHUNK_SIZE,
            breaking=breaking,
        )
        return res.release.manifest.release_id

    def publish_mlp(
        self, model: str, version: int, *, size: int = 64 * 1024, seed: int | None = None
    ) -> ReleaseId:
        path = self.models_dir / f"{model}-v{version}.onnx"
        write_example_model(path, size_bytes=size, seed=version if seed is None else seed)
        return self.publish_file(path, model, version)

    def publish_onnx(
        self, proto: onnx.ModelProto, model: str, version: int, *, breaking: bool = False
    ) -> ReleaseId:
        path = self.models_dir / f"{model}-v{version}.onnx"
        onnx.save(proto, str(path))
        return self.publish_file(path, model, version, breaking=breaking)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    dd = DataDir(tmp_path / "data")
    store = dd.open_store()
    models = tmp_path / "models"
    models.mkdir()
    try:
        yield Node(dd, store, models)
    finally:
        store.close()


@dataclass
class Running:
    service: InferenceService
    host: str
    port: int

    def client(self) -> V2Client:
        return V2Client(self.host, self.port)


@pytest.fixture
async def running(node: Node, nursery: trio.Nursery) -> AsyncIterator[Running]:
    service = InferenceService(node.data_dir, node.store, health_error_limit=3, warmup_runs=1)
    await service.start()
    host, port = await nursery.start(serve_api, service)
    yield Running(service, host, port)
    await service.aclose()
