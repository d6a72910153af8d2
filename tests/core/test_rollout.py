"""The rollout table, per-model bookkeeping, I/O compatibility and the health rule.

Pure: no event loop, no disk, no onnxruntime.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.core.manifest import ModelInterface, TensorSpec
from mesh.core.rollout import (
    TABLE,
    HealthRule,
    Input,
    ModelRollout,
    ReleaseRollout,
    RolloutError,
    State,
    Step,
    interface_problems,
    offline_rollback,
    transition,
)
from mesh.ids import ReleaseId
from tests.helpers import FAST


def rid(n: int) -> ReleaseId:
    return ReleaseId.of(hashlib.sha256(str(n).encode()).digest())


HAPPY = [Input.ASSEMBLED, Input.LOADED, Input.CHECKED, Input.SWAPPED]


def activate(m: ModelRollout, n: int, version: int | None = None) -> None:
    assert m.offer(rid(n), version or n) is Step.ASSEMBLE
    steps = [m.handle(rid(n), e) for e in HAPPY]
    assert steps == [Step.LOAD, Step.CHECK, Step.SWAP, Step.NONE]


def test_happy_path_steps() -> None:
    r = ReleaseRollout(rid(1), 1)
    assert [r.handle(e) for e in HAPPY] == [Step.LOAD, Step.CHECK, Step.SWAP, Step.NONE]
    assert r.state is State.ACTIVE


@pytest.mark.parametrize("state", [State.FETCHED, State.ASSEMBLED, State.LOADED, State.CHECKED])
def test_every_pending_state_can_fail_with_a_reason(state: State) -> None:
    r = ReleaseRollout(rid(1), 1, state)
    assert r.handle(Input.FAILED, "smoke inference failed: boom") is Step.NONE
    assert r.state is State.FAILED
    assert r.describe()["reason"] == "smoke inference failed: boom"


def test_pairs_outside_the_table_are_errors() -> None:
    for state in State:
        for event in Input:
            if (state, event) in TABLE:
                assert transition(state, event)[0] in State
            else:
                with pytest.raises(RolloutError, match="not allowed"):
                    transition(state, event)


def test_terminal_states_accept_nothing() -> None:
    for state in (State.FAILED, State.ROLLED_BACK):
        assert not any(s is state for s, _ in TABLE)


@FAST
@given(st.lists(st.sampled_from(list(Input)), max_size=12))
def test_random_inputs_follow_the_table_or_raise(events: list[Input]) -> None:
    r = ReleaseRollout(rid(1), 1)
    for e in events:
        before = r.state
        if (before, e) in TABLE:
            r.handle(e, "why")
            assert r.state is TABLE[(before, e)][0]
        else:
            with pytest.raises(RolloutError):
                r.handle(e)
            assert r.state is before  # a refused input changes nothing


def test_offers_at_or_below_high_water_are_ignored() -> None:
    m = ModelRollout("vad")
    activate(m, 3)
    assert m.offer(rid(2), 2) is Step.NONE
    assert m.offer(rid(33), 3) is Step.NONE
    assert m.offer(rid(3), 3) is Step.NONE  # already known
    assert m.offer(rid(4), 4) is Step.ASSEMBLE
    assert m.offer(rid(4), 4) is Step.NONE  # in progress already


def test_swap_supersedes_and_rollback_reactivates() -> None:
    m = ModelRollout("vad")
    activate(m, 1)
    activate(m, 2)
    activate(m, 3)
    assert m.active_version == 3
    assert [m.releases[rid(n)].state for n in (1, 2)] == [State.STANDBY, State.STANDBY]
    target = m.rollback_target()
    assert target == rid(2)
    m.reactivated(target, "explicit rollback")
    assert m.active_version == 2
    assert m.releases[rid(3)].state is State.ROLLED_BACK
    assert m.releases[rid(3)].reason == "explicit rollback"
    # the rolled-back version is never offered back in
    assert m.offer(rid(3), 3) is Step.NONE
    assert m.high_water == 3
    m.reactivated(m.rollback_target(), "again")
    assert m.active_version == 1
    with pytest.raises(RolloutError, match="no earlier version"):
        m.rollback_target()
    activate(m, 4)
    assert m.active_version == 4
    assert m.previous == [rid(1)]


def test_failed_release_leaves_the_active_one() -> None:
    m = ModelRollout("vad")
    activate(m, 1)
    m.offer(rid(2), 2)
    m.handle(rid(2), Input.ASSEMBLED)
    m.handle(rid(2), Input.FAILED, "onnxruntime cannot load model.onnx")
    assert m.active_version == 1
    st_ = m.status()
    assert st_["active_version"] == 1
    assert st_["releases"][1] == {
        "version": 2,
        "release_id": rid(2).hex(),
        "state": "failed",
        "reason": "onnxruntime cannot load model.onnx",
    }


def test_rollback_with_nothing_before_is_an_error() -> None:
    m = ModelRollout("vad")
    with pytest.raises(RolloutError):
        m.rollback_target()
    activate(m, 1)
    with pytest.raises(RolloutError, match="no earlier version"):
        m.rollback_target()


def test_persisted_form_round_trips() -> None:
    m = ModelRollout("vad")
    for n in (1, 2, 3):
        activate(m, n)
    back = ModelRollout.from_json("vad", m.to_json())
    assert back.pending() == [rid(3)]
    assert back.active is None  # until its pipeline swaps it in again
    assert back.high_water == 3
    assert back.previous == [rid(1), rid(2)]
    for e in HAPPY:
        back.handle(rid(3), e)
    assert back.to_json() == m.to_json()


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"high_water": -1, "previous": [], "active": None},
        {"high_water": 1, "previous": [{"release_id": "zz", "version": 1}], "active": None},
    ],
)
def test_malformed_persisted_form_is_an_error(raw: object) -> None:
    with pytest.raises(RolloutError):
        ModelRollout.from_json("vad", raw)


def test_offline_rollback() -> None:
    m = ModelRollout("vad")
    for n in (1, 2):
        activate(m, n)
    new, version = offline_rollback(m.to_json())
    assert version == 1
    back = ModelRollout.from_json("vad", new)
    assert back.pending() == [rid(1)]
    assert back.high_water == 2  # v2 is not offered back in after the restart
    assert back.offer(rid(2), 2) is Step.NONE
    with pytest.raises(RolloutError, match="no earlier version"):
        offline_rollback(new)


@FAST
@given(st.lists(st.sampled_from(["offer", "ok", "fail", "rollback"]), max_size=40))
def test_active_version_only_goes_back_by_rollback(ops: list[str]) -> None:
    m = ModelRollout("vad")
    next_version = 1
    for op in ops:
        before = m.active_version or 0
        if op == "rollback":
            try:
                m.reactivated(m.rollback_target(), "test")
            except RolloutError:
                continue
            assert (m.active_version or 0) < before
            continue
        if op == "offer":
            m.offer(rid(next_version), next_version)
            next_version += 1
            continue
        pending = [
            r
            for r in m.releases.values()
            if r.state not in (State.ACTIVE, State.STANDBY, State.FAILED, State.ROLLED_BACK)
        ]
        for r in pending:
            if op == "ok":
                steps = [m.handle(r.release_id, e) for e in HAPPY[HAPPY_INDEX[r.state] :]]
                assert steps[-1] is Step.NONE
            else:
                m.handle(r.release_id, Input.FAILED, "bad")
        assert (m.active_version or 0) >= before
        assert sum(r.state is State.ACTIVE for r in m.releases.values()) <= 1


HAPPY_INDEX = {State.FETCHED: 0, State.ASSEMBLED: 1, State.LOADED: 2, State.CHECKED: 3}


# -- I/O compatibility ------------------------------------------------------------------


def iface(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> ModelInterface:
    return ModelInterface(8, (("", 17),), tuple(inputs), tuple(outputs))


X = TensorSpec("x", "float32", ("batch", 4))
Y = TensorSpec("y", "float32", ("batch", 2))
BASE = iface([X], [Y])


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (iface([X], [Y]), None),
        (iface([TensorSpec("x", "float32", ("N", 4))], [Y]), None),  # renamed symbol
        (iface([TensorSpec("x", "float32", (None, 4))], [Y]), None),
        (iface([X], [Y, TensorSpec("z", "int64", ())]), None),  # extra output is fine
        (iface([TensorSpec("x", "float32", None)], [Y]), None),  # rank unknown
        (iface([TensorSpec("x2", "float32", ("batch", 4))], [Y]), "input 'x' is gone"),
        (iface([X, TensorSpec("s", "int64", ())], [Y]), "input 's' is new"),
        (iface([TensorSpec("x", "float16", ("batch", 4))], [Y]), "float32 -> float16"),
        (iface([TensorSpec("x", "float32", ("batch", 5))], [Y]), "dimension 1 is 4 -> 5"),
        (iface([TensorSpec("x", "float32", (1, 4))], [Y]), "narrows from batch to 1"),
        (iface([TensorSpec("x", "float32", ("batch", 4, 1))], [Y]), "rank 2 -> 3"),
        (iface([X], [TensorSpec("z", "float32", ("batch", 2))]), "output 'y' is gone"),
        (iface([X], [TensorSpec("y", "float32", ("batch", 3))]), "output 'y' shape"),
    ],
)
def test_interface_problems(new: ModelInterface, problem: str | None) -> None:
    found = interface_problems(BASE, new)
    if problem is None:
        assert found == []
    else:
        assert any(problem in p for p in found), found


def test_identical_interfaces_are_compatible() -> None:
    assert interface_problems(BASE, BASE) == []


# -- health -----------------------------------------------------------------------------


def test_health_rule_trips_once_after_consecutive_errors() -> None:
    h = HealthRule(limit=3)
    assert [h.record(ok) for ok in (False, False, True, False, False)] == [False] * 5
    assert h.record(False) is True
    assert h.record(False) is False  # reported once
