"""The simulator's flow-level network model.

What it owns: bulk transfers (chunk data) as *flows* over shared resources -- each
node's uplink and downlink, and each site's WAN uplink and downlink -- and the
arithmetic of when each flow finishes.

Model: a resource of capacity C carrying n flows offers each C/n; a flow moves at the
smallest offer along its path (sender uplink, [sender site WAN up, receiver site WAN
down,] receiver downlink).  When a flow starts or ends, only flows sharing a resource
with it change rate (no global recomputation), which keeps a 1,000-node run cheap.
Bandwidth a flow cannot use because it is limited elsewhere is not redistributed
(equal share, not max-min fairness): a conservative approximation of TCP sharing,
documented in ``docs/simulator.md``.

Non-goals: packets, TCP dynamics, queueing delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.ids import ReleaseId


@dataclass(eq=False, slots=True)
class Resource:
    name: str
    capacity: float  # bytes per second
    flows: set[Flow] = field(default_factory=set)


@dataclass(eq=False, slots=True)
class Flow:
    """One transfer.  Hashes by a creation counter, so sets of flows iterate in the
    same order in every run (identity hashes would not)."""

    src: int
    dst: int
    size: float
    resources: tuple[Resource, ...]
    payload: tuple[ReleaseId, int, int]  # (release, chunk index, payload length)
    remaining: float = 0.0
    rate: float = 0.0
    updated: float = 0.0
    finish: float = 0.0
    version: int = 0
    started: float = 0.0
    done: bool = False
    fid: int = 0  # assigned by FlowNetwork.new_id()

    def __hash__(self) -> int:
        return self.fid


class FlowNetwork:
    """Flows over resources; the engine schedules ``finish`` times it reports."""

    def __init__(self) -> None:
        self.changed: list[Flow] = []  # flows whose finish time moved (engine reschedules)
        self._next_id = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _rate(self, f: Flow) -> float:
        return min(r.capacity / len(r.flows) for r in f.resources)

    def _retime(self, flows: set[Flow], now: float) -> None:
        for f in flows:
            if f.done:
                continue
            f.remaining -= f.rate * (now - f.updated)
            f.updated = now
            rate = self._rate(f)
            if rate != f.rate or f.version == 0:
                f.rate = rate
                f.finish = now + max(f.remaining, 0.0) / rate
                f.version += 1
                self.changed.append(f)

    def start(self, flow: Flow, now: float) -> None:
        flow.remaining = flow.size
        flow.updated = now
        flow.started = now
        affected: set[Flow] = set()
        for r in flow.resources:
            r.flows.add(flow)
            affected |= r.flows
        self._retime(affected, now)

    def stop(self, flow: Flow, now: float) -> float:
        """Remove a finished or aborted flow; returns the bytes it moved."""
        if flow.done:
            return 0.0
        flow.remaining -= flow.rate * (now - flow.updated)
        flow.updated = now
        flow.done = True
        affected: set[Flow] = set()
        for r in flow.resources:
            r.flows.discard(flow)
            affected |= r.flows
        self._retime(affected, now)
        return max(0.0, flow.size - max(flow.remaining, 0.0))
