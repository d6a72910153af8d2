"""``wait_relayed``: activation waits while the node still passes a release on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing

from mesh.ids import ReleaseId
from mesh.runtime.node import RELAY_HOLD_MAX, RELAY_QUIET, wait_relayed

RID = ReleaseId(b"\x01" * 32)


@dataclass
class _Peer:
    peer: str


@dataclass
class _Stats:
    peers: tuple[_Peer, ...]
    bytes_uploaded: int


@dataclass
class _Core:
    """What ``wait_relayed`` reads of the core: statistics() and complete_peers()."""

    peers: list[str]
    complete: set[str] = field(default_factory=set)
    uploaded: int = 0

    def statistics(self) -> _Stats:
        return _Stats(tuple(_Peer(p) for p in self.peers), self.uploaded)

    def complete_peers(self, rid: ReleaseId) -> tuple[str, ...]:
        assert rid == RID
        return tuple(self.complete)


@dataclass
class _Driver:
    core: _Core


def _driver(core: _Core) -> Any:
    return cast(Any, _Driver(core))


async def test_no_wait_when_every_peer_has_the_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = _Core(["a", "b"], complete={"a", "b"}, uploaded=5)
    assert await wait_relayed(_driver(core), RID) == 0.0


async def test_waits_while_uploading_to_peers_that_lack_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    core = _Core(["a", "b"], complete={"a"})

    async def uploads() -> None:
        for _ in range(20):  # a chunk every 0.2 s for 4 s, then b has it all
            await trio.sleep(0.2)
            core.uploaded += 1 << 20
        core.complete.add("b")

    async with trio.open_nursery() as n:
        n.start_soon(uploads)
        held = await wait_relayed(_driver(core), RID)
    assert 4.0 <= held < 4.0 + RELAY_QUIET


async def test_stops_waiting_when_uploads_stop(autojump_clock: trio.testing.MockClock) -> None:
    core = _Core(["a", "b"], uploaded=7)  # nobody has it, but nobody fetches from us
    held = await wait_relayed(_driver(core), RID)
    assert RELAY_QUIET <= held < RELAY_QUIET + 0.2


async def test_never_waits_longer_than_the_limit(autojump_clock: trio.testing.MockClock) -> None:
    core = _Core(["a"])

    async def uploads() -> None:
        while True:
            await trio.sleep(0.1)
            core.uploaded += 1

    async with trio.open_nursery() as n:
        n.start_soon(uploads)
        held = await wait_relayed(_driver(core), RID)
        n.cancel_scope.cancel()
    assert RELAY_HOLD_MAX <= held < RELAY_HOLD_MAX + 0.2
