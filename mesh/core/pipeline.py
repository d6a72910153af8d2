"""Per-peer pipeline depth from a measured rate (libtorrent's "request queue time").

What it owns: :class:`BusyRate`, the rate at which bytes move to or from one peer
*while that peer has work outstanding*, and :func:`extra_depth`, how many requests
(or super-seed reveals) beyond the configured fixed limits keep about
``pipeline_time`` seconds of that rate in flight.

Why: with one or two requests in flight, a peer sits idle for a round trip plus
the sender's read and the requester's processing after every chunk.  On a slow
link that gap is small next to a chunk's transfer time; on a fast one (two
processes on loopback move a 1 MiB chunk in about 4 ms) it is most of the time.
A fixed deeper pipeline helps the fast link but floods a swarm of slow ones (more
concurrent downloads split every downlink and delay each chunk), so the depth
follows the measured rate: ``rate * pipeline_time / chunk_size`` extra requests.
At 100 Mbit/s with 1 MiB chunks and the default 60 ms that is 0.72, i.e. none (and
stays below 1 with the rate over-stated by up to 1/4, see below): the simulated LAN
scenarios run exactly as without it.

Rules:
* The rate only counts *busy* time (from the first outstanding request or upload
  to the last one ending), so idle periods do not lower it.
* A rate is reported per window of at least ``window`` seconds of busy time and
  ``MIN_TRANSFERS`` transfers, each window on its own (the link may change).  Bytes
  can only be credited to a window after they moved, and transfers that run side by
  side and end together are averaged over the time they took: with ``k`` transfers
  at once, a window over-states the rate by at most ``(k - 1) / MIN_TRANSFERS``.

The same idea for the request total (:func:`cover_depth`): a request waits a while
before its data starts to flow (the request crosses the requester's uplink and the
holder's downlink, the holder reads the chunk, the first bytes cross its uplink and
our downlink; on links with deep queues that is ~100 ms against ~0.6 s of transfer
on a shaped 50 Mbit/s LAN).  A request slot is idle for that wait after every chunk,
so ``max_requests`` transfers in flight give fewer than ``max_requests`` flowing:
by Little's law ``max_requests * wait / transfer`` more requests keep that many
flowing.  Where the wait is negligible (the simulator's LANs, fast unqueued links)
it rounds to none.

Non-goals: congestion control, fairness between peers (the scheduler's and the
upload queue's business).
"""

from __future__ import annotations

#: Transfers a rate window spans at least (see the module rules).
MIN_TRANSFERS = 4


class BusyRate:
    """Bytes per second of busy time, reported per window (see the module rules)."""

    __slots__ = ("active", "busy", "bytes", "count", "since", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self.bytes = 0
        self.count = 0
        self.busy = 0.0  # busy seconds in this window, not including the open interval
        self.since = 0.0  # start of the open busy interval
        self.active = False

    def start(self, now: float) -> None:
        """Work for this peer became outstanding (if none was)."""
        if not self.active:
            self.active = True
            self.since = now

    def stop(self, now: float) -> None:
        """No work for this peer is outstanding any more."""
        if self.active:
            self.busy += now - self.since
            self.active = False

    def add(self, size: int, now: float) -> float | None:
        """Count a transfer of ``size`` bytes that ended; the window's rate once it is
        full (then a new window starts), else None."""
        self.bytes += size
        self.count += 1
        busy = self.busy + (now - self.since if self.active else 0.0)
        if self.count < MIN_TRANSFERS or busy < self.window or busy <= 0.0:
            return None
        rate = self.bytes / busy
        self.bytes = self.count = 0
        self.busy = 0.0
        if self.active:
            self.since = now
        return rate


def extra_depth(rate: float, chunk_size: int, pipeline_time: float, cap: int) -> int:
    """Requests beyond the fixed limit that keep ``pipeline_time`` of ``rate`` in flight."""
    if chunk_size <= 0 or rate <= 0.0 or pipeline_time <= 0.0 or cap <= 0:
        return 0
    return min(cap, int(rate * pipeline_time / chunk_size))


def cover_depth(slots: int, wait: float, transfer: float, cap: int) -> int:
    """Requests beyond ``slots`` that keep ``slots`` transfers flowing when each
    request first waits ``wait`` seconds and then transfers for ``transfer``
    (rounded to the nearest whole request, at most ``cap``)."""
    if slots <= 0 or wait <= 0.0 or transfer <= 0.0 or cap <= 0:
        return 0
    return min(cap, int(slots * wait / transfer + 0.5))
