"""Rollout: the decisions that take a verified release to the serving slot and back.

What it owns:

* the per-release state machine, as a table (DESIGN §7.4)::

      fetched --assembled--> assembled --loaded--> loaded --checked--> checked --swapped--> active
         \\____________\\______________\\_____________\\___ failed(reason) --> failed
      active --superseded--> standby --reactivated--> active        (rollback target)
      active --rolled_back(reason)--> rolled-back
      standby --failed(reason)--> failed                             (could not be reloaded)

  Each transition names the next :class:`Step` the adapter must carry out; a
  (state, input) pair not in the table raises :class:`RolloutError`.
* per-model bookkeeping (:class:`ModelRollout`): the active release, the stack of
  previously active releases (rollback targets), the high-water version (rollback
  protection: a version at or below it is never activated except by explicit
  rollback), the persisted form of all that;
* the pure checks the adapter needs: I/O compatibility of two model interfaces
  (:func:`interface_problems`) and the health rule (:class:`HealthRule`).

Rules: sans-IO -- no clock, no disk, no onnxruntime; the inference adapter
(:mod:`mesh.runtime.inference`) performs the steps and reports each outcome here.

Non-goals: how steps are performed, scheduling, serving requests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from mesh.core.manifest import Dim, ModelInterface, TensorSpec
from mesh.errors import EdgemeshError, LocalProtocolError
from mesh.ids import ReleaseId


class RolloutError(LocalProtocolError):
    """A rollout input that the table does not allow in the current state, or an
    impossible request (e.g. rollback with nothing to roll back to)."""


class State(enum.Enum):
    FETCHED = "fetched"  # every chunk verified in the store
    ASSEMBLED = "assembled"  # model file(s) written and the whole-file sha256 re-checked
    LOADED = "loaded"  # an onnxruntime session exists, off the serving path
    CHECKED = "checked"  # I/O compatible, smoke inference and warm-up passed
    ACTIVE = "active"  # serving
    STANDBY = "standby"  # was active, superseded; on disk, a rollback target
    FAILED = "failed"  # a step failed; ``reason`` says which and why
    ROLLED_BACK = "rolled-back"  # was active, replaced by an older version


class Input(enum.Enum):
    ASSEMBLED = "assembled"
    LOADED = "loaded"
    CHECKED = "checked"
    SWAPPED = "swapped"
    FAILED = "failed"
    SUPERSEDED = "superseded"
    ROLLED_BACK = "rolled-back"
    REACTIVATED = "reactivated"


class Step(enum.Enum):
    """What the adapter does next for a release."""

    ASSEMBLE = "assemble"  # assemble from verified chunks, re-check the sha256
    LOAD = "load"  # build a session off the serving path
    CHECK = "check"  # I/O compatibility, smoke inference, warm-up
    SWAP = "swap"  # atomically make the new session the serving one
    NONE = "none"  # nothing more to do


_PENDING = (State.FETCHED, State.ASSEMBLED, State.LOADED, State.CHECKED)

#: (state, input) -> (next state, next step).  Anything else is an error.
TABLE: dict[tuple[State, Input], tuple[State, Step]] = {
    (State.FETCHED, Input.ASSEMBLED): (State.ASSEMBLED, Step.LOAD),
    (State.ASSEMBLED, Input.LOADED): (State.LOADED, Step.CHECK),
    (State.LOADED, Input.CHECKED): (State.CHECKED, Step.SWAP),
    (State.CHECKED, Input.SWAPPED): (State.ACTIVE, Step.NONE),
    **{(s, Input.FAILED): (State.FAILED, Step.NONE) for s in _PENDING},
    (State.ACTIVE, Input.SUPERSEDED): (State.STANDBY, Step.NONE),
    (State.ACTIVE, Input.ROLLED_BACK): (State.ROLLED_BACK, Step.NONE),
    (State.STANDBY, Input.REACTIVATED): (State.ACTIVE, Step.NONE),
    (State.STANDBY, Input.FAILED): (State.FAILED, Step.NONE),
}


def transition(state: State, event: Input) -> tuple[State, Step]:
    try:
        return TABLE[(state, event)]
    except KeyError:
        raise RolloutError(
            f"rollout: input {event.value!r} is not allowed in state {state.value!r}"
        ) from None


@dataclass(slots=True)
class ReleaseRollout:
    """One release's progress through the table."""

    release_id: ReleaseId
    version: int
    state: State = State.FETCHED
    reason: str = ""

    def handle(self, event: Input, reason: str = "") -> Step:
        self.state, step = transition(self.state, event)
        if event in (Input.FAILED, Input.ROLLED_BACK):
            self.reason = reason
        elif event in (Input.SWAPPED, Input.REACTIVATED):
            self.reason = ""
        return step

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "release_id": self.release_id.hex(),
            "state": self.state.value,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(slots=True)
class ModelRollout:
    """Every release of one model this node has considered, and which one serves."""

    model: str
    releases: dict[ReleaseId, ReleaseRollout] = field(default_factory=dict)
    active: ReleaseId | None = None
    #: previously active releases, most recent last (rollback pops from the end)
    previous: list[ReleaseId] = field(default_factory=list)
    #: highest version ever active: offers at or below it are ignored
    high_water: int = 0

    @property
    def active_version(self) -> int | None:
        return None if self.active is None else self.releases[self.active].version

    def in_progress(self) -> bool:
        return any(r.state in _PENDING for r in self.releases.values())

    def offer(self, release_id: ReleaseId, version: int) -> Step:
        """A verified release arrives: ``ASSEMBLE`` to start its rollout, ``NONE`` to
        ignore it (known already, or not newer than the high-water version)."""
        if release_id in self.releases or version <= self.high_water:
            return Step.NONE
        self.releases[release_id] = ReleaseRollout(release_id, version)
        return Step.ASSEMBLE

    def pending(self) -> list[ReleaseId]:
        """Releases waiting for their first step (e.g. the active one after a restart)."""
        return [r.release_id for r in self.releases.values() if r.state is State.FETCHED]

    def handle(self, release_id: ReleaseId, event: Input, reason: str = "") -> Step:
        rec = self._get(release_id)
        if event is Input.SWAPPED:
            transition(rec.state, event)  # validate before touching the others
            old = self.active
            if old is not None and old != release_id:
                self.releases[old].handle(Input.SUPERSEDED)
                if old in self.previous:
                    self.previous.remove(old)
                self.previous.append(old)
            self.active = release_id
            self.high_water = max(self.high_water, rec.version)
        return rec.handle(event, reason)

    def rollback_target(self) -> ReleaseId:
        """The release an explicit rollback reactivates (the most recent standby)."""
        for rid in reversed(self.previous):
            if self.releases[rid].state is State.STANDBY:
                return rid
        raise RolloutError(
            f"model {self.model!r} has no earlier version to roll back to "
            "(no other version of it has been active on this node)"
        )

    def reactivated(self, release_id: ReleaseId, reason: str) -> None:
        """``release_id`` (a standby) replaced the active release (rollback)."""
        rec = self._get(release_id)
        transition(rec.state, Input.REACTIVATED)
        if self.active is not None:
            self.releases[self.active].handle(Input.ROLLED_BACK, reason)
        rec.handle(Input.REACTIVATED)
        self.previous.remove(release_id)
        self.active = release_id

    def _get(self, release_id: ReleaseId) -> ReleaseRollout:
        try:
            return self.releases[release_id]
        except KeyError:
            raise RolloutError(
                f"{self.model}: release {release_id.short()} is not being rolled out"
            ) from None

    def status(self) -> dict[str, Any]:
        return {
            "active_version": self.active_version,
            "releases": [
                r.describe() for r in sorted(self.releases.values(), key=lambda r: r.version)
            ],
        }

    # -- persisted form (the adapter writes it to DATA_DIR/active.json) -----------

    def to_json(self) -> dict[str, Any]:
        def ref(rid: ReleaseId) -> dict[str, Any]:
            return {"release_id": rid.hex(), "version": self.releases[rid].version}

        return {
            "active": None if self.active is None else ref(self.active),
            "previous": [ref(r) for r in self.previous],
            "high_water": self.high_water,
        }

    @classmethod
    def from_json(cls, model: str, raw: object) -> ModelRollout:
        """Rebuild from :meth:`to_json`: the persisted active release as ``fetched``
        (see :meth:`pending`: the caller runs its pipeline again; it becomes active when
        it swaps in), previous ones as standby."""
        if not isinstance(raw, dict):
            raise RolloutError(f"persisted rollout of {model!r} is not an object")
        try:
            out = cls(model, high_water=_version(raw["high_water"], allow_zero=True))
            for item in raw["previous"]:
                rid, version = _ref(item)
                out.releases[rid] = ReleaseRollout(rid, version, State.STANDBY)
                out.previous.append(rid)
            if raw["active"] is not None:
                rid, version = _ref(raw["active"])
                out.releases[rid] = ReleaseRollout(rid, version)
                out.high_water = max(out.high_water, version)
        except (KeyError, TypeError) as e:
            raise RolloutError(f"persisted rollout of {model!r} is malformed: {e}") from None
        return out


def _version(value: object, *, allow_zero: bool = False) -> int:
    if type(value) is not int or value < (0 if allow_zero else 1):
        raise RolloutError(f"bad version {value!r} in persisted rollout")
    return value


def _ref(item: object) -> tuple[ReleaseId, int]:
    if not isinstance(item, dict):
        raise RolloutError("persisted release reference is not an object")
    try:
        return ReleaseId.from_hex(item["release_id"]), _version(item["version"])
    except (KeyError, EdgemeshError) as e:
        raise RolloutError(f"persisted release reference is malformed: {e}") from None


def offline_rollback(raw: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Rollback on the persisted form, for a node that is not running: the most recent
    previous release becomes the active one.  Returns (new persisted form, version)."""
    active = raw.get("active")
    previous = list(raw.get("previous") or [])
    if active is None:
        raise RolloutError("there is no active version to roll back from")
    if not previous:
        raise RolloutError(
            f"there is no earlier version to roll back to (v{active['version']} is the only "
            "one that was active)"
        )
    target = previous.pop()
    _ref(target)
    new = {
        "active": target,
        "previous": previous,
        "high_water": max(int(raw.get("high_water", 0)), int(active["version"])),
    }
    return new, int(target["version"])


# -- I/O compatibility ------------------------------------------------------------------


def _dim_text(d: Dim) -> str:
    return "?" if d is None else str(d)


def _shape_problem(
    old: tuple[Dim, ...] | None, new: tuple[Dim, ...] | None, *, is_input: bool
) -> str | None:
    if old is None or new is None:
        return None  # rank unknown on one side: nothing can be checked
    if len(old) != len(new):
        return f"rank {len(old)} -> {len(new)}"
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        a_fixed, b_fixed = type(a) is int, type(b) is int
        if a_fixed and b_fixed and a != b:
            return f"dimension {i} is {_dim_text(a)} -> {_dim_text(b)}"
        if is_input and not a_fixed and b_fixed:
            # callers could send any size here before; now only one is accepted
            return f"dimension {i} narrows from {_dim_text(a)} to {b}"
    return None


def interface_problems(old: ModelInterface, new: ModelInterface) -> list[str]:
    """Why ``new`` cannot replace ``old`` for the callers of ``old`` (empty: it can).

    Inputs: the same names (a new required input would break every caller), the same
    element types, the same rank, fixed dims equal, a symbolic or unknown dim stays
    symbolic or unknown (symbolic names may differ).  Outputs: every old output is
    still produced with the same element type, rank and fixed dims; new outputs are fine.
    """
    problems: list[str] = []

    def compare(olds: tuple[TensorSpec, ...], news: tuple[TensorSpec, ...], kind: str) -> None:
        by_name = {t.name: t for t in news}
        for o in olds:
            n = by_name.get(o.name)
            if n is None:
                problems.append(f"{kind} {o.name!r} is gone")
                continue
            if n.elem_type != o.elem_type:
                problems.append(f"{kind} {o.name!r} changes type {o.elem_type} -> {n.elem_type}")
            shape = _shape_problem(o.shape, n.shape, is_input=kind == "input")
            if shape:
                problems.append(f"{kind} {o.name!r} shape changes: {shape}")

    compare(old.inputs, new.inputs, "input")
    added = sorted({t.name for t in new.inputs} - {t.name for t in old.inputs})
    problems.extend(f"input {name!r} is new (callers do not send it)" for name in added)
    compare(old.outputs, new.outputs, "output")
    return problems


# -- health -----------------------------------------------------------------------------


@dataclass(slots=True)
class HealthRule:
    """A version is unhealthy after ``limit`` consecutive failed inferences."""

    limit: int
    consecutive_errors: int = 0

    def record(self, ok: bool) -> bool:
        """Count one inference; True when this one makes the version unhealthy."""
        if ok:
            self.consecutive_errors = 0
            return False
        self.consecutive_errors += 1
        return self.consecutive_errors == self.limit
