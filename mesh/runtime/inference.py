"""Inference adapter: carries out the rollout steps and serves the active sessions.

What it owns: for each model, the serving slot (the active version's onnxruntime
session), the steps the rollout table (:mod:`mesh.core.rollout`) asks for --
assemble from verified chunks, re-hash the assembled file, build the session off the
serving path, check I/O compatibility, smoke inference and warm-up, swap -- and the
persisted active versions (``DATA_DIR/active.json``, via :mod:`mesh.runtime.activefile`).

Rules:
* Decisions are the core's: this module performs a step and reports its outcome.
* Slow work (disk, hashing, session builds, inference) runs in worker threads
  (``trio.to_thread``; runs through :func:`in_worker_thread`); the event loop only
  moves references -- except runs that take under ``INLINE_RUN_MAX``, or under
  ``IDLE_INLINE_RUN_MAX`` while nothing else wants the loop.  The swap is one
  assignment in the event loop, so a request uses the session it started on until it
  finishes, and every request sees exactly one version.
* Activation work runs in its own thread at a lower CPU priority
  (``BACKGROUND_NICE``): the serving path keeps its latency during a swap.
* The assembled file is hashed again right before it is loaded (streamed, so the
  GIL is free between blocks).  The session is built from the path, not from bytes in
  memory: onnxruntime holds the GIL while it copies a bytes argument (measured
  ~280 ms for 50 MB), which would stall the serving event loop.
* Model problems never raise out of :meth:`InferenceService.offer`; they end in the
  ``failed`` state with a reason that :meth:`InferenceService.status` reports.
* Smoke inputs: the first request a version served (kept per model, and saved to
  ``DATA_DIR/samples/NAME.npz`` for restarts) if it fits the new interface, else that
  file if an operator put one there, else zeros (symbolic dims = 1).

Non-goals: HTTP (:mod:`mesh.runtime.api`), fetching, choosing what to offer.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
import outcome
import trio

from mesh.core.manifest import Manifest, ModelInterface
from mesh.core.rollout import (
    HealthRule,
    Input,
    ModelRollout,
    RolloutError,
    Step,
    interface_problems,
)
from mesh.datadir import DataDir
from mesh.errors import ConfigError, EdgemeshError, IntegrityError, LocalProtocolError
from mesh.ids import ReleaseId
from mesh.runtime.activefile import active_file, read_active, write_active
from mesh.runtime.onnx import new_session
from mesh.store.fs import FsStore

T = TypeVar("T")
log = logging.getLogger(__name__)
#: Runs after the smoke inference before a version goes live: the first runs of a
#: session allocate arenas and pick kernels; three is enough for a CPU session.
WARMUP_RUNS = 3
#: Added to the nice value of the threads that assemble, hash, load and smoke-test a
#: new version, so that on a small device activation yields the CPU to serving.
BACKGROUND_NICE = 10


#: A run that usually takes less than this is done in the event loop: handing it to a
#: worker thread and back costs two thread wakeups, measured at 0.1-0.3 ms on a loaded
#: 2-core machine -- as much as the run.  Longer runs go to worker threads, so the loop
#: stays responsive; so does any request with more input than ``INLINE_INPUT_MAX`` (a
#: big batch can make a fast model slow).
INLINE_RUN_MAX = 0.0005
INLINE_INPUT_MAX = 64 * 1024
#: A run that usually takes up to this long is also done in the event loop when the
#: loop has nothing else to do at that moment (no other run in flight, no task
#: scheduled, no timer due during the run, no recent contention, see below): the
#: thread hand-off costs 0.1-0.25 ms of every request's latency on a loaded 2-core
#: machine (ADR 0004), and what the loop could do meanwhile is wait.  This bounds how
#: long other work that turns up during the run waits for the loop.
IDLE_INLINE_RUN_MAX = 0.005
#: A request from another caller (API connection) that reaches the service within this
#: long after a run in the event loop ended probably waited for that run; so does one
#: that finds another run in flight.  Either way callers overlap: for
#: ``CONTENTION_HOLD`` seconds every run then goes to a worker thread, so that
#: concurrent callers run in parallel instead of one after the other in the loop.
CONTENTION_WINDOW = 0.002
CONTENTION_HOLD = 1.0


class UnknownModelError(LocalProtocolError):
    """No such model, or not the version asked for, is active here (HTTP 404)."""


class BadInputError(LocalProtocolError):
    """A request's tensors do not fit the model (HTTP 400)."""


class InferenceFailedError(EdgemeshError):
    """onnxruntime failed on a valid request (HTTP 500); counts against health."""


def numpy_dtype(elem_type: str) -> np.dtype[Any] | None:
    """The numpy dtype of an ONNX element type name, None if numpy has none."""
    if elem_type in ("string", "bfloat16") or elem_type.startswith(("float8", "float4")):
        return None
    if elem_type in ("uint4", "int4", "uint2", "int2"):
        return None
    return np.dtype(elem_type)


def check_inputs(spec: ModelInterface, arrays: Mapping[str, np.ndarray[Any, Any]]) -> None:
    """Raise :class:`BadInputError` naming the first tensor that does not fit ``spec``."""
    want = {t.name: t for t in spec.inputs}
    for name in arrays:
        if name not in want:
            raise BadInputError(f"unknown input {name!r} (model inputs: {', '.join(want)})")
    for t in spec.inputs:
        arr = arrays.get(t.name)
        if arr is None:
            raise BadInputError(f"missing input {t.name!r} ({t.describe()})")
        dtype = numpy_dtype(t.elem_type)
        if dtype is None or arr.dtype != dtype:
            raise BadInputError(
                f"input {t.name!r} has type {arr.dtype}, the model expects {t.elem_type}"
            )
        if t.shape is None:
            continue
        if arr.ndim != len(t.shape) or any(
            type(d) is int and d != n for d, n in zip(t.shape, arr.shape, strict=True)
        ):
            got = ",".join(map(str, arr.shape))
            raise BadInputError(f"input {t.name!r} has shape [{got}], expected {t.describe()}")


def synthetic_inputs(spec: ModelInterface) -> dict[str, np.ndarray[Any, Any]]:
    out = {}
    for t in spec.inputs:
        dtype = numpy_dtype(t.elem_type)
        if dtype is None:
            raise BadInputError(f"input {t.name!r}: no smoke input for type {t.elem_type}")
        shape = () if t.shape is None else tuple(d if type(d) is int else 1 for d in t.shape)
        out[t.name] = np.zeros(shape, dtype)
    return out


@dataclass(eq=False)
class Served:
    """One loaded version: what requests hold on to while they run."""

    model: str
    version: int
    release_id: ReleaseId
    session: ort.InferenceSession
    interface: ModelInterface
    health: HealthRule
    output_names: list[str] = field(default_factory=list)
    sampled: bool = False
    #: moving average of recent run times (seconds), first from the warm-up runs
    run_time: float = math.inf

    def run(
        self, outputs: list[str] | None, feeds: Mapping[str, np.ndarray[Any, Any]]
    ) -> list[np.ndarray[Any, Any]]:
        t0 = time.perf_counter()
        result: list[np.ndarray[Any, Any]] = self.session.run(outputs, dict(feeds))
        dt = time.perf_counter() - t0
        self.run_time = dt if self.run_time == math.inf else 0.9 * self.run_time + 0.1 * dt
        return result

    def runs_inline(self, feeds: Mapping[str, np.ndarray[Any, Any]], *, idle: bool = False) -> bool:
        """Whether a run with ``feeds`` is short enough for the event loop: always, or
        (``idle``) when the loop has nothing else to do."""
        limit = IDLE_INLINE_RUN_MAX if idle else INLINE_RUN_MAX
        return self.run_time < limit and sum(a.nbytes for a in feeds.values()) <= INLINE_INPUT_MAX


class InferenceService:
    """Active versions of every model on this node, and the pipeline that changes them."""

    def __init__(
        self,
        data_dir: DataDir,
        store: FsStore,
        *,
        health_error_limit: int = 5,
        warmup_runs: int = WARMUP_RUNS,
        session_threads: int = 1,
        max_concurrent_runs: int = 4,
    ) -> None:
        if health_error_limit < 1:
            raise ConfigError("health_error_limit must be at least 1")
        self.data_dir = data_dir
        self.store = store
        self.health_error_limit = health_error_limit
        self.warmup_runs = warmup_runs
        self.session_threads = session_threads
        self._limiter = trio.CapacityLimiter(max_concurrent_runs)
        self._rollouts: dict[str, ModelRollout] = {}
        self._serving: dict[str, Served] = {}
        self._locks: dict[str, trio.Lock] = {}
        self._samples: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
        self._persist_lock = trio.Lock()
        self.swaps: dict[str, int] = {}
        self.started = False
        # the last run done in the event loop because the loop was idle: its caller and
        # when it ended (perf_counter); and until when callers count as overlapping
        self._idle_run_source: object = None
        self._idle_run_end = -math.inf
        self._contended_until = -math.inf

    @property
    def active_file(self) -> Path:
        return active_file(self.data_dir)

    def _samples_file(self, model: str) -> Path:
        return self.data_dir.root / "samples" / f"{model}.npz"

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Bring back the persisted active versions; failures show in :meth:`status`."""
        persisted = await trio.to_thread.run_sync(read_active, self.active_file)
        for model, raw in persisted.items():
            rollout = ModelRollout.from_json(model, raw)
            self._rollouts[model] = rollout
            for rid in rollout.pending():
                async with self._lock(model):
                    await self._pipeline(rollout, rid, Step.ASSEMBLE, restore=True)
        self.started = True

    async def aclose(self) -> None:
        self._serving.clear()
        self.started = False

    def _lock(self, model: str) -> trio.Lock:
        return self._locks.setdefault(model, trio.Lock())

    # -- rollout ----------------------------------------------------------------------

    async def offer(self, release_id: ReleaseId) -> None:
        """Roll out a release whose chunks are all verified in the store."""
        manifest = self.store.get_release(release_id).manifest
        model = manifest.model
        async with self._lock(model):
            rollout = self._rollouts.setdefault(model, ModelRollout(model))
            step = rollout.offer(release_id, manifest.version)
            await self._pipeline(rollout, release_id, step, restore=False)

    async def _pipeline(
        self, rollout: ModelRollout, rid: ReleaseId, step: Step, *, restore: bool
    ) -> None:
        manifest: Manifest | None = None
        session: ort.InferenceSession | None = None
        run_time = math.inf
        bg = trio.to_thread.run_sync
        while step is not Step.NONE:
            event, reason = _DONE[step], ""
            try:
                if step is Step.ASSEMBLE:
                    manifest = self.store.get_release(rid).manifest
                    await bg(_niced, self._assemble, manifest)
                elif step is Step.LOAD:
                    assert manifest is not None
                    session = await bg(_niced, self._load, manifest)
                elif step is Step.CHECK:
                    assert manifest is not None
                    assert session is not None
                    current = self._serving.get(rollout.model)
                    if current is not None and not restore and not manifest.breaking:
                        problems = interface_problems(current.interface, manifest.interface)
                        if problems:
                            raise RolloutError(
                                f"I/O incompatible with v{current.version}: "
                                + "; ".join(problems)
                                + " (publish with --breaking for an intentional change)"
                            )
                    run_time = await bg(_niced, self._smoke, manifest, session)
                else:
                    assert manifest is not None
                    assert session is not None
                    self._swap(manifest, session, run_time)
            except EdgemeshError as e:
                event, reason = Input.FAILED, f"{step.value}: {e}"
            step = rollout.handle(rid, event, reason)
            if event is Input.SWAPPED:
                await self._persist()

    def _swap(self, manifest: Manifest, session: ort.InferenceSession, run_time: float) -> None:
        self._serving[manifest.model] = Served(
            model=manifest.model,
            version=manifest.version,
            release_id=manifest.release_id,
            session=session,
            interface=manifest.interface,
            health=HealthRule(self.health_error_limit),
            output_names=[o.name for o in manifest.interface.outputs],
            run_time=run_time,
        )
        self.swaps[manifest.model] = self.swaps.get(manifest.model, 0) + 1

    def _assemble(self, manifest: Manifest) -> None:
        """Assemble (temp file, fsync, rename: the store), then re-hash what is on disk."""
        rid = manifest.release_id
        self.store.assemble(rid)
        for entry in manifest.files:
            path = self.store.assembled_path(rid, entry.path)
            try:
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").digest()
            except OSError as e:
                raise IntegrityError(f"cannot read assembled {entry.path}: {e.strerror}") from None
            if digest != entry.sha256:
                raise IntegrityError(
                    f"assembled {entry.path} does not match its sha256 (changed on disk "
                    "after assembly); refused"
                )

    def _load(self, manifest: Manifest) -> ort.InferenceSession:
        path = self.store.assembled_path(manifest.release_id, manifest.files[0].path)
        session = new_session(path, threads=self.session_threads)
        names = [i.name for i in session.get_inputs()]
        if names != [t.name for t in manifest.interface.inputs]:
            raise RolloutError(f"the loaded model's inputs {names} differ from its manifest")
        return session

    def _smoke(self, manifest: Manifest, session: ort.InferenceSession) -> float:
        """Smoke inference and warm-up; returns the last warm-up run's time (seconds)."""
        spec = manifest.interface
        feeds = None
        for candidate in (self._samples.get(manifest.model), self._saved_sample(manifest.model)):
            if candidate is None:
                continue
            try:
                check_inputs(spec, candidate)
            except BadInputError:
                continue
            feeds, origin = candidate, "a sample request"
            break
        if feeds is None:
            feeds, origin = synthetic_inputs(spec), "zero inputs"
        took = math.inf
        for i in range(1 + self.warmup_runs):
            t0 = time.perf_counter()
            try:
                outs = session.run(None, dict(feeds))
            except Exception as e:  # noqa: BLE001 -- onnxruntime raises many types
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                what = "smoke inference" if i == 0 else "warm-up"
                raise RolloutError(f"{what} with {origin} failed: {first}") from None
            if i == 0 and len(outs) != len(spec.outputs):
                raise RolloutError(f"smoke inference returned {len(outs)} outputs")
            took = time.perf_counter() - t0
        return took if self.warmup_runs else math.inf

    def _saved_sample(self, model: str) -> dict[str, np.ndarray[Any, Any]] | None:
        try:
            with np.load(self._samples_file(model), allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None

    # -- rollback ---------------------------------------------------------------------

    async def rollback(self, model: str, *, reason: str = "explicit rollback") -> int:
        """Reactivate the previous version of ``model``; returns its version."""
        rollout = self._rollouts.get(model)
        if rollout is None:
            raise RolloutError(f"model {model!r} has no versions on this node")
        async with self._lock(model):
            target = rollout.rollback_target()
            manifest = self.store.get_release(target).manifest
            try:
                bg = trio.to_thread.run_sync
                await bg(_niced, self._assemble, manifest)
                session = await bg(_niced, self._load, manifest)
                run_time = await bg(_niced, self._smoke, manifest, session)
            except EdgemeshError as e:
                rollout.handle(target, Input.FAILED, f"rollback: {e}")
                raise RolloutError(
                    f"cannot roll back {model} to v{manifest.version}: {e}"
                ) from None
            rollout.reactivated(target, reason)
            self._swap(manifest, session, run_time)
            await self._persist()
            return manifest.version

    async def _persist(self) -> None:
        async with self._persist_lock:
            snapshot = {m: r.to_json() for m, r in sorted(self._rollouts.items())}
            await trio.to_thread.run_sync(write_active, self.active_file, snapshot)

    # -- serving ----------------------------------------------------------------------

    def serving(self, model: str, version: int | None = None) -> Served:
        served = self._serving.get(model)
        if served is None:
            if model in self._rollouts:
                raise UnknownModelError(f"model {model!r} has no active version")
            raise UnknownModelError(f"unknown model {model!r}")
        if version is not None and version != served.version:
            raise UnknownModelError(
                f"model {model!r} version {version} is not active (active: {served.version})"
            )
        return served

    def models(self) -> list[str]:
        return sorted(self._serving)

    def serves(self, model: str) -> bool:
        """Whether ``model`` has an active version here."""
        return model in self._serving

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        *,
        version: int | None = None,
        outputs: list[str] | None = None,
    ) -> tuple[Served, dict[str, np.ndarray[Any, Any]]]:
        """Run one request on the active version; the result says which version ran it."""
        served, out, _ = await self.infer_then(
            model, inputs, _nothing, version=version, outputs=outputs
        )
        return served, out

    async def infer_then(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        then: Callable[[Served, dict[str, np.ndarray[Any, Any]]], T],
        *,
        version: int | None = None,
        outputs: list[str] | None = None,
        source: object = None,
    ) -> tuple[Served, dict[str, np.ndarray[Any, Any]], T]:
        """:meth:`infer`, and ``then(served, outputs)`` called right after a successful
        run in the thread that ran it (a worker thread, or the event loop for a fast
        model or an idle loop), so that the API can encode and send the response before
        the event loop is woken up: one thread wake-up fewer on every request's path.
        ``then`` must be thread-safe and should not raise (what it raises is raised
        here, after the run was counted as a success).  ``source`` identifies the
        caller (the API passes its connection), to tell overlapping callers apart."""
        served = self.serving(model, version)
        check_inputs(served.interface, inputs)
        names = served.output_names if outputs is None else outputs
        for n in names:
            if n not in served.output_names:
                raise BadInputError(f"unknown output {n!r} (outputs: {served.output_names})")
        job = functools.partial(_run_then, served, names, inputs, then)
        idle = not served.runs_inline(inputs) and self._loop_idle(served, inputs, source)
        try:
            if idle:
                try:
                    out, after = job()
                finally:
                    self._idle_run_source, self._idle_run_end = source, time.perf_counter()
            elif served.runs_inline(inputs):
                out, after = job()
            else:
                out, after = await in_worker_thread(self._limiter, job)
        except Exception as e:  # noqa: BLE001 -- onnxruntime raises many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            if served.health.record(False):
                await self._unhealthy(served)
            raise InferenceFailedError(f"{model} v{served.version}: {first}") from None
        served.health.record(True)
        if not served.sampled:
            served.sampled = True
            sample = dict(inputs)
            self._samples[model] = sample
            # saved off the request path: this request (the first on a new version,
            # right after a swap) does not wait for a thread hop and a file write
            trio.lowlevel.start_thread_soon(
                functools.partial(self._save_sample, model, sample), _log_failure
            )
        return served, out, after.unwrap()

    def _loop_idle(
        self, served: Served, inputs: Mapping[str, np.ndarray[Any, Any]], source: object
    ) -> bool:
        """Whether this (not fast) run may be done in the event loop: it usually takes
        at most ``IDLE_INLINE_RUN_MAX``, and nothing else wants the loop -- no run in a
        worker thread, no other task scheduled, no thread's callback queued, no timer
        due during the run, and no caller overlapping with another lately."""
        now = time.perf_counter()
        if self._limiter.borrowed_tokens or (
            source is not self._idle_run_source and now - self._idle_run_end < CONTENTION_WINDOW
        ):
            self._contended_until = now + CONTENTION_HOLD
            return False
        if now < self._contended_until or not served.runs_inline(inputs, idle=True):
            return False
        stats = trio.lowlevel.current_statistics()
        return (
            stats.tasks_runnable == 0
            and stats.run_sync_soon_queue_size == 0
            and stats.seconds_to_next_deadline > served.run_time
        )

    async def _unhealthy(self, served: Served) -> None:
        reason = f"health: {served.health.limit} consecutive inference errors on v{served.version}"
        if self._serving.get(served.model) is not served:
            return
        try:
            await self.rollback(served.model, reason=reason)
        except EdgemeshError as e:
            rollout = self._rollouts[served.model]
            rec = rollout.releases[served.release_id]
            rec.reason = f"{reason}; automatic rollback impossible: {e}"

    def _save_sample(self, model: str, arrays: dict[str, np.ndarray[Any, Any]]) -> None:
        path = self._samples_file(model)
        tmp = path.with_name(f".{model}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, allow_pickle=False, **arrays)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a sample is a convenience; serving goes on

    # -- status -----------------------------------------------------------------------

    def pinned(self) -> set[ReleaseId]:
        """Releases garbage collection must keep: every active and standby (rollback
        target) release, whatever their versions -- pass to ``store.gc(pinned=...)``."""
        return {
            rid
            for r in self._rollouts.values()
            for rid in ([r.active] if r.active is not None else []) + r.previous
        }

    def status(self) -> dict[str, dict[str, Any]]:
        return {m: r.status() for m, r in sorted(self._rollouts.items())}


async def in_worker_thread(limiter: trio.CapacityLimiter, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in one of trio's cached worker threads, like
    ``trio.to_thread.run_sync(fn, *args, limiter=limiter)`` but with less work per call
    on the serving path: no thread renaming (two ``prctl`` calls through ctypes per
    call), no context copy, no ``from_thread`` plumbing, no scheduler pass when the
    limiter has room.  Not cancellable once started (an inference cannot be abandoned
    half-way), like ``to_thread`` without ``abandon_on_cancel``."""
    borrower = object()
    try:
        limiter.acquire_on_behalf_of_nowait(borrower)
    except trio.WouldBlock:
        await limiter.acquire_on_behalf_of(borrower)
    try:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: outcome.Outcome[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # the loop is gone: nobody waits
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        trio.lowlevel.start_thread_soon(functools.partial(fn, *args), deliver)
        value: T = await trio.lowlevel.wait_task_rescheduled(_not_abortable)
        return value
    finally:
        limiter.release_on_behalf_of(borrower)


def _run_then(
    served: Served,
    names: list[str],
    inputs: Mapping[str, np.ndarray[Any, Any]],
    then: Callable[[Served, dict[str, np.ndarray[Any, Any]]], T],
) -> tuple[dict[str, np.ndarray[Any, Any]], outcome.Outcome[T]]:
    """The run (its errors propagate: inference failures), then ``then`` (its outcome
    is returned, not raised: whatever it does wrong is not the model's failure)."""
    out = dict(zip(names, served.run(names, inputs), strict=True))
    return out, outcome.capture(then, served, out)


def _nothing(served: Served, outputs: dict[str, np.ndarray[Any, Any]]) -> None:
    return None


def _log_failure(result: outcome.Outcome[Any]) -> None:
    if isinstance(result, outcome.Error):
        log.error("background work failed", exc_info=result.error)


def _not_abortable(_: Any) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def _niced(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a fresh thread whose nice value is ``BACKGROUND_NICE`` higher
    (on Linux the nice value is per thread; a fresh thread so no pooled worker that later
    serves requests is left slowed down)."""
    out: list[T] = []
    err: list[BaseException] = []

    def target() -> None:
        try:
            tid = threading.get_native_id()
            nice = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + BACKGROUND_NICE))
        except OSError:
            pass  # not permitted or not supported: run at normal priority
        try:
            out.append(fn(*args))
        except BaseException as e:  # noqa: BLE001 -- re-raised in the caller's thread
            err.append(e)

    thread = threading.Thread(target=target, name="edgemesh-activation", daemon=True)
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


_DONE = {
    Step.ASSEMBLE: Input.ASSEMBLED,
    Step.LOAD: Input.LOADED,
    Step.CHECK: Input.CHECKED,
    Step.SWAP: Input.SWAPPED,
}
