"""The driver's dial rule for peers found by mDNS (ADR 0005, "One session per peer
pair"): the larger peer id waits ``DIAL_GRACE`` for the smaller one to dial -- but
only for a peer it found while its own mDNS record was out.  A peer found earlier
(we just started; our registration still probes) cannot have found us yet, so we
dial it at once: a seed started among running devices reaches all of them now, not
half of them 1-1.5 s later.  Once our record has been out ``MDNS_SEEN_AFTER``,
every peer has seen it: a redial (after a disconnect) waits again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import trio
import trio.testing

from mesh.runtime.driver import DIAL_GRACE, MDNS_SEEN_AFTER, Driver


@dataclass
class _Core:
    """What the driver uses of the core here: its id, and events in, no actions out."""

    node_id: str
    events: list[Any] = field(default_factory=list)

    def handle(self, event: Any, *, now: float) -> None:
        self.events.append(event)

    def poll_actions(self) -> list[Any]:
        return []

    def next_deadline(self) -> float | None:
        return None


@dataclass
class _Transport:
    links: set[str] = field(default_factory=set)
    dialled: list[tuple[str, float]] = field(default_factory=list)

    def peers(self) -> list[str]:
        return sorted(self.links)

    async def dial(self, peer: str, addrs: list[str]) -> bool:
        self.dialled.append((peer, trio.current_time()))
        self.links.add(peer)
        return True


def _driver(nursery: trio.Nursery, me: str) -> tuple[Driver, _Transport]:
    d = Driver(cast(Any, _Core(me)), cast(Any, None), nursery)
    t = _Transport()
    d.transport = cast(Any, t)
    return d, t


ADDRS = ["/ip4/10.0.0.2/tcp/4101"]


def _found_while_visible(nursery: trio.Nursery, me: str) -> tuple[Driver, _Transport]:
    """A driver whose mDNS record is out, then finds peer ``p`` by mDNS."""
    d, t = _driver(nursery, me)
    d.mdns_registered()
    d.found("p", ADDRS)
    return d, t


def _dialled_after_grace(t: _Transport, start: float = 0.0) -> bool:
    [(peer, at)] = t.dialled
    return peer == "p" and DIAL_GRACE <= at - start < DIAL_GRACE + 0.1


async def test_a_peer_found_before_our_record_is_out_is_dialled_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        d, t = _driver(n, "z")  # the larger id
        d.found("p", ADDRS)  # found by mDNS before our registration finished
        d.mdns_registered()  # (what happens later does not change that)
        await d._dial("p")
    assert t.dialled == [("p", 0.0)]


async def test_the_larger_id_waits_for_a_peer_found_while_visible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        d, t = _found_while_visible(n, "z")
        await d._dial("p")  # nobody dials us: after the grace, we do
    assert _dialled_after_grace(t)


async def test_the_larger_id_does_not_dial_when_the_smaller_did(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        d, t = _found_while_visible(n, "z")

        async def they_dial() -> None:
            await trio.sleep(0.3)
            t.links.add("p")

        n.start_soon(they_dial)
        await d._dial("p")
    assert t.dialled == []


async def test_the_smaller_id_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as n:
        d, t = _found_while_visible(n, "a")
        await d._dial("p")
    assert t.dialled == [("p", 0.0)]


async def test_a_redial_once_everybody_sees_us_waits_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        d, t = _driver(n, "z")
        d.found("p", ADDRS)  # before our record was out
        d.mdns_registered()
        await trio.sleep(MDNS_SEEN_AFTER)  # ... the session ran and broke; now redial
        start = trio.current_time()
        await d._dial("p")
    assert _dialled_after_grace(t, start)


async def test_a_static_peer_later_found_by_mdns_gets_the_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as n:
        d, t = _driver(n, "z")
        d.mdns_registered()
        d.found("p", ADDRS, static=True)
        d.found("p", ADDRS)  # the same peer, now also by mDNS: it can see us too
        await d._dial("p")
    [(_, at)] = t.dialled
    assert at >= DIAL_GRACE
