"""The inference service: rollout steps on real files and real onnxruntime sessions."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import trio
from onnx import TensorProto

from mesh.core.rollout import RolloutError
from mesh.runtime import inference
from mesh.runtime.activefile import pinned_releases, rollback_persisted
from mesh.runtime.inference import (
    BadInputError,
    InferenceFailedError,
    InferenceService,
    UnknownModelError,
    in_worker_thread,
)
from tests.runtime import models
from tests.runtime.conftest import Node

X = {"x": np.ones((2, 4), np.float32)}


def service(node: Node, **kw: int) -> InferenceService:
    return InferenceService(node.data_dir, node.store, warmup_runs=1, **kw)


def states(svc: InferenceService, model: str) -> dict[int, str]:
    return {r["version"]: r["state"] for r in svc.status()[model]["releases"]}


def reason(svc: InferenceService, model: str, version: int) -> str:
    for r in svc.status()[model]["releases"]:
        if r["version"] == version:
            return str(r.get("reason", ""))
    raise AssertionError(f"no v{version}")


async def answer(svc: InferenceService, model: str = "m") -> tuple[int, float]:
    served, out = await svc.infer(model, X)
    return served.version, float(out["y"][0, 0])


async def test_offer_activates_and_status_says_so(node: Node) -> None:
    svc = service(node)
    await svc.start()
    rid = node.publish_onnx(models.scale(1.0), "m", 1)
    await svc.offer(rid)
    assert svc.status() == {
        "m": {
            "active_version": 1,
            "releases": [{"version": 1, "release_id": rid.hex(), "state": "active"}],
        }
    }
    assert await answer(svc) == (1, 1.0)
    assert node.store.is_assembled(rid)
    active = json.loads((node.data_dir.root / "active.json").read_text())
    assert active["models"]["m"]["active"] == {"release_id": rid.hex(), "version": 1}


async def test_newer_versions_swap_older_ones_are_ignored(node: Node) -> None:
    svc = service(node)
    await svc.start()
    r1 = node.publish_onnx(models.scale(1.0), "m", 1)
    r2 = node.publish_onnx(models.scale(2.0), "m", 2)
    await svc.offer(r2)
    await svc.offer(r1)  # lower than the active one: rollback protection
    assert states(svc, "m") == {2: "active"}
    assert await answer(svc) == (2, 2.0)
    r3 = node.publish_onnx(models.scale(3.0), "m", 3)
    await svc.offer(r3)
    assert states(svc, "m") == {2: "standby", 3: "active"}
    assert svc.swaps["m"] == 2


async def test_several_models_concurrently(node: Node) -> None:
    svc = service(node)
    await svc.start()
    rids = [node.publish_onnx(models.scale(float(i)), f"m{i}", 1) for i in range(3)]
    async with trio.open_nursery() as n:
        for rid in rids:
            n.start_soon(svc.offer, rid)
    for i in range(3):
        assert await answer(svc, f"m{i}") == (1, float(i))


@pytest.mark.parametrize(
    ("bad", "step", "why"),
    [
        (models.unloadable(), "load", "onnxruntime cannot load"),
        (models.fails_to_run(), "check", "smoke inference with a sample request failed"),
        (models.scale(2.0, width=5), "check", "input 'x' shape changes: dimension 1 is 4 -> 5"),
        (
            models.scale(2.0, elem=TensorProto.DOUBLE),
            "check",
            "input 'x' changes type float32 -> float64",
        ),
    ],
)
async def test_a_bad_release_is_not_activated_and_the_old_one_keeps_serving(
    node: Node, bad: onnx.ModelProto, step: str, why: str
) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    assert await answer(svc) == (1, 1.0)  # also records the sample request
    await svc.offer(node.publish_onnx(bad, "m", 2))
    assert states(svc, "m") == {1: "active", 2: "failed"}
    assert reason(svc, "m", 2).startswith(f"{step}: ")
    assert why in reason(svc, "m", 2)
    assert await answer(svc) == (1, 1.0)
    assert (
        json.loads((node.data_dir.root / "active.json").read_text())["models"]["m"]["active"][
            "version"
        ]
        == 1
    )


async def test_an_intentional_interface_change_is_activated(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    await svc.offer(node.publish_onnx(models.scale(2.0, width=5), "m", 2, breaking=True))
    assert states(svc, "m") == {1: "standby", 2: "active"}
    served, _ = await svc.infer("m", {"x": np.ones((1, 5), np.float32)})
    assert served.version == 2


async def test_first_version_that_fails_with_zeros_says_how_to_fix(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.fails_to_run(), "m", 1))
    assert "smoke inference with zero inputs failed" in reason(svc, "m", 1)
    with pytest.raises(UnknownModelError, match="has no active version"):
        svc.serving("m")


async def test_assembled_file_corrupted_before_loading_is_refused(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    r2 = node.publish_onnx(models.scale(2.0), "m", 2)
    node.store.assemble(r2)
    path = next(node.store.assembled_dir(r2).iterdir())
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    await svc.offer(r2)
    assert states(svc, "m") == {1: "active", 2: "failed"}
    assert "does not match its sha256" in reason(svc, "m", 2)
    assert await answer(svc) == (1, 1.0)


async def test_bad_requests_raise_clear_errors(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    with pytest.raises(UnknownModelError, match="unknown model 'nope'"):
        await svc.infer("nope", X)
    with pytest.raises(UnknownModelError, match="version 7 is not active"):
        await svc.infer("m", X, version=7)
    with pytest.raises(BadInputError, match="unknown input 'z'"):
        await svc.infer("m", {"x": X["x"], "z": X["x"]})
    with pytest.raises(BadInputError, match="missing input 'x'"):
        await svc.infer("m", {})
    with pytest.raises(BadInputError, match="type float64, the model expects float32"):
        await svc.infer("m", {"x": np.ones((2, 4))})
    with pytest.raises(BadInputError, match=r"shape \[2,5\]"):
        await svc.infer("m", {"x": np.ones((2, 5), np.float32)})
    with pytest.raises(BadInputError, match="unknown output 'q'"):
        await svc.infer("m", X, outputs=["q"])


async def test_explicit_rollback_and_rollback_protection(node: Node) -> None:
    svc = service(node)
    await svc.start()
    rids = [node.publish_onnx(models.scale(float(v)), "m", v) for v in (1, 2, 3)]
    with pytest.raises(RolloutError, match="no versions"):
        await svc.rollback("m")
    for rid in rids:
        await svc.offer(rid)
    assert await svc.rollback("m") == 2
    assert await answer(svc) == (2, 2.0)
    assert states(svc, "m") == {1: "standby", 2: "active", 3: "rolled-back"}
    await svc.offer(rids[2])  # a rolled-back version does not come back by itself
    assert await answer(svc) == (2, 2.0)
    assert await svc.rollback("m") == 1
    with pytest.raises(RolloutError, match="no earlier version"):
        await svc.rollback("m")
    await svc.offer(node.publish_onnx(models.scale(4.0), "m", 4))
    assert await answer(svc) == (4, 4.0)


async def test_consecutive_inference_errors_roll_back_automatically(node: Node) -> None:
    svc = service(node, health_error_limit=3)
    await svc.start()
    await svc.offer(node.publish_onnx(models.gather(offset=1), "g", 1))
    await svc.offer(node.publish_onnx(models.gather(offset=2), "g", 2))
    good: dict[str, np.ndarray[Any, Any]] = {
        "x": np.zeros((1, 4), np.float32),
        "idx": np.array([0], np.int64),
    }
    bad: dict[str, np.ndarray[Any, Any]] = {
        "x": np.zeros((1, 4), np.float32),
        "idx": np.array([99], np.int64),
    }
    served, out = await svc.infer("g", good)
    assert (served.version, float(out["y"][0, 0])) == (2, 2.0)
    for _ in range(2):
        with pytest.raises(InferenceFailedError, match="g v2"):
            await svc.infer("g", bad)
    served, _ = await svc.infer("g", good)  # a success resets the count
    assert served.version == 2
    for _ in range(3):
        with pytest.raises(InferenceFailedError):
            await svc.infer("g", bad)
    served, out = await svc.infer("g", good)
    assert (served.version, float(out["y"][0, 0])) == (1, 1.0)
    assert states(svc, "g") == {1: "active", 2: "rolled-back"}
    assert reason(svc, "g", 2) == "health: 3 consecutive inference errors on v2"


async def test_active_version_survives_a_restart(node: Node) -> None:
    svc = service(node)
    await svc.start()
    for v in (1, 2):
        await svc.offer(node.publish_onnx(models.scale(float(v)), "m", v))
    await svc.aclose()
    again = service(node)
    await again.start()
    assert await answer(again) == (2, 2.0)
    assert states(again, "m") == {1: "standby", 2: "active"}
    assert await again.rollback("m") == 1  # the previous version is still known


async def test_a_model_that_fails_to_restore_is_reported(node: Node) -> None:
    svc = service(node)
    await svc.start()
    rid = node.publish_onnx(models.scale(1.0), "m", 1)
    await svc.offer(rid)
    await svc.aclose()
    path = next(node.store.assembled_dir(rid).iterdir())
    path.write_bytes(b"garbage")
    again = service(node)
    await again.start()  # does not raise
    assert states(again, "m") == {1: "failed"}
    assert "sha256" in reason(again, "m", 1)


async def test_rollback_while_not_running_is_used_by_the_next_start(node: Node) -> None:
    svc = service(node)
    await svc.start()
    for v in (1, 2):
        await svc.offer(node.publish_onnx(models.scale(float(v)), "m", v))
    await svc.aclose()
    assert rollback_persisted(node.data_dir, "m") == 1
    with pytest.raises(RolloutError, match="no earlier version"):
        rollback_persisted(node.data_dir, "m")
    with pytest.raises(RolloutError, match="no active version recorded"):
        rollback_persisted(node.data_dir, "other")
    again = service(node)
    await again.start()
    assert await answer(again) == (1, 1.0)
    await again.offer(node.store.find_release("m", 2).manifest.release_id)
    assert await answer(again) == (1, 1.0)  # v2 was rolled back: not re-activated


@pytest.mark.slow
def test_active_version_survives_kill_9(node: Node, tmp_path: Path) -> None:
    for v in (1, 2):
        node.publish_onnx(models.scale(float(v)), "m", v)
    node.store.close()
    env = dict(os.environ, PYTHONWARNINGS="error")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.runtime.serve_node", str(node.data_dir.root), "--offer-all"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready ")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    node.store = node.data_dir.open_store()

    async def restart() -> None:
        again = service(node)
        await again.start()
        assert await answer(again) == (2, 2.0)

    trio.run(restart)


class _HeldSession:
    """Wraps a session: ``run`` waits until released (to hold a request in flight)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, outputs: Any, feeds: Any) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return self.session.run(outputs, feeds)


async def test_in_flight_request_finishes_on_the_version_it_started_on(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    v1 = svc.serving("m")
    held = _HeldSession(v1.session)
    v1.session = held
    v1.run_time = math.inf  # as a slow model: runs in a worker thread
    results: list[tuple[int, float]] = []

    async def slow_request() -> None:
        results.append(await answer(svc))

    async with trio.open_nursery() as n:
        n.start_soon(slow_request)
        await trio.to_thread.run_sync(held.entered.wait, 30)
        await svc.offer(node.publish_onnx(models.scale(2.0), "m", 2))  # swap meanwhile
        assert await answer(svc) == (2, 2.0)  # new requests go to v2 at once
        assert results == []
        held.release.set()
    assert results == [(1, 1.0)]  # the held request finished on v1


async def test_pinned_releases_are_the_active_and_rollback_targets(node: Node) -> None:
    svc = service(node)
    await svc.start()
    rids = [node.publish_onnx(models.scale(float(v)), "m", v) for v in (1, 2, 3)]
    bad = node.publish_onnx(models.unloadable(), "m", 4)
    for rid in [*rids, bad]:
        await svc.offer(rid)
    assert svc.pinned() == set(rids)
    node.store.gc(keep=2, pinned=svc.pinned())  # keep=2 alone would drop v1 and v2
    assert {i.version for i in node.store.releases("m")} == {1, 2, 3, 4}
    await svc.aclose()
    assert pinned_releases(node.data_dir) == set(rids)


async def test_in_worker_thread_returns_raises_and_respects_the_limiter() -> None:
    limiter = trio.CapacityLimiter(2)
    here = threading.get_ident()
    assert await in_worker_thread(limiter, threading.get_ident) != here
    with pytest.raises(ZeroDivisionError):
        await in_worker_thread(limiter, lambda: 1 // 0)
    assert limiter.borrowed_tokens == 0  # released after an error too

    lock = threading.Lock()
    running, peak = 0, 0
    gate = threading.Event()

    def job() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        assert gate.wait(30)
        with lock:
            running -= 1

    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(in_worker_thread, limiter, job)
        with trio.fail_after(30):
            while running < 2 or limiter.statistics().tasks_waiting < 3:
                await trio.sleep(0.001)
        gate.set()
    assert peak == 2
    assert limiter.borrowed_tokens == 0


async def test_a_run_in_a_worker_thread_is_not_abandoned_on_cancel() -> None:
    limiter = trio.CapacityLimiter(1)
    started, release = threading.Event(), threading.Event()
    finished: list[bool] = []

    def job() -> None:
        started.set()
        assert release.wait(30)
        finished.append(True)

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:
            n.start_soon(in_worker_thread, limiter, job)
            await trio.to_thread.run_sync(started.wait, 30)
            scope.cancel()
            release.set()
    assert finished == [True]  # the cancelled caller waited for the run to end
    assert limiter.borrowed_tokens == 0


async def test_the_first_request_is_saved_as_the_sample_off_the_request_path(node: Node) -> None:
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    sample = node.data_dir.root / "samples" / "m.npz"
    assert not sample.exists()
    assert await answer(svc) == (1, 1.0)
    with trio.fail_after(30):
        while not sample.exists():  # written by a worker thread, not awaited by the request
            await trio.sleep(0.01)
    with np.load(sample) as z:
        np.testing.assert_array_equal(z["x"], X["x"])
    assert not list(sample.parent.glob(".*tmp*"))


def test_activation_threads_get_the_background_nice_and_leave_the_caller_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = nice()
    monkeypatch.setattr(inference, "BACKGROUND_NICE", 3)
    assert inference._niced(nice) == min(19, before + 3)
    monkeypatch.setattr(inference, "BACKGROUND_NICE", 0)
    assert inference._niced(nice) == before
    assert nice() == before  # per thread: the caller's priority is untouched
    with pytest.raises(ZeroDivisionError):
        inference._niced(lambda: 1 // 0)


def _thread(served: Any, outputs: Any) -> int:
    return threading.get_ident()


async def test_a_not_so_fast_model_runs_in_the_event_loop_while_nothing_else_wants_it(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every request counts as overlapping the loop's last run when it comes from
    # another caller, however slowly this machine runs the test; no hold afterwards
    monkeypatch.setattr(inference, "CONTENTION_WINDOW", 3600.0)
    monkeypatch.setattr(inference, "CONTENTION_HOLD", 0.0)
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    served = svc.serving("m")
    loop = threading.get_ident()

    async def where(source: str, run_time: float) -> int:
        served.run_time = run_time  # (each run updates the moving average)
        _, out, tid = await svc.infer_then("m", X, _thread, source=source)
        assert float(out["y"][0, 0]) == 1.0
        return tid

    # neither fast (< INLINE_RUN_MAX) nor slow: in the loop, which has nothing else to do
    assert await where("a", 0.002) == loop
    assert await where("a", 0.002) == loop  # one caller after another run of its own
    assert await where("a", inference.IDLE_INLINE_RUN_MAX * 2) != loop  # too slow
    assert await where("a", 0.002) == loop
    assert await where("b", 0.002) != loop  # another caller right after: overlap
    assert await where("a", 0.002) == loop  # (no hold here: back in the loop)


async def test_a_request_while_a_run_is_in_a_worker_thread_goes_to_a_worker_too(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inference, "CONTENTION_HOLD", 3600.0)
    svc = service(node)
    await svc.start()
    await svc.offer(node.publish_onnx(models.scale(1.0), "m", 1))
    await svc.offer(node.publish_onnx(models.scale(2.0), "n", 1))
    held_served, other = svc.serving("m"), svc.serving("n")
    held = _HeldSession(held_served.session)
    held_served.session = held
    held_served.run_time = math.inf  # a slow model: a worker thread
    loop = threading.get_ident()
    async with trio.open_nursery() as n:
        n.start_soon(answer, svc)
        await trio.to_thread.run_sync(held.entered.wait, 30)
        other.run_time = 0.002
        assert (await svc.infer_then("n", X, _thread, source="b"))[2] != loop
        held.release.set()
    other.run_time = 0.002  # the overlap is held against the loop for CONTENTION_HOLD
    assert (await svc.infer_then("n", X, _thread, source="b"))[2] != loop
