"""``mesh.core.pipeline``: the busy-time rate meter and the extra depth it gives."""

from __future__ import annotations

import pytest

from mesh.core.pipeline import MIN_TRANSFERS, BusyRate, cover_depth, extra_depth

MIB = 1 << 20


def test_rate_counts_only_busy_time() -> None:
    r = BusyRate(window=0.04)
    r.start(0.0)
    assert r.add(MIB, 0.01) is None  # 10 ms, one transfer: not a full window yet
    r.stop(0.01)
    r.start(5.0)  # idle for seconds: not counted
    assert r.add(MIB, 5.01) is None
    assert r.add(MIB, 5.02) is None
    assert r.add(MIB, 5.03) == pytest.approx(4 * MIB / 0.04)


def test_a_window_needs_busy_time_and_transfers() -> None:
    r = BusyRate(window=0.04)
    r.start(0.0)
    assert [r.add(MIB, t) for t in (0.001, 0.002, 0.003, 0.004)] == [None] * 4  # 4 ms
    assert r.add(MIB, 0.04) == pytest.approx(5 * MIB / 0.04)
    assert r.add(MIB, 0.08) is None  # a new window


@pytest.mark.parametrize("k", [2, 3, 4])
def test_transfers_that_end_together_are_averaged_over_the_time_they_took(k: int) -> None:
    """k chunks sent at once over a link of 1 MiB per 80 ms all end together, k x 80 ms
    later: the near-zero intervals after the first must not make the link look much
    faster than it is (at most (k - 1) / MIN_TRANSFERS)."""
    r = BusyRate(window=0.04)
    r.start(0.0)
    t = 0.0
    rates = []
    for _ in range(12):
        t += k * 0.08
        for j in range(k):
            rate = r.add(MIB, t + j * 1e-7)
            if rate is not None:
                rates.append(rate)
    assert rates
    assert max(rates) <= MIB / 0.08 * (1 + (k - 1) / MIN_TRANSFERS) * 1.001
    assert max(rates) < 2 * MIB / 0.08


def test_the_rate_follows_a_slower_link() -> None:
    r = BusyRate(window=0.04)
    r.start(0.0)
    t = 0.0
    for _ in range(20):  # 1 MiB per 4 ms
        t += 0.004
        r.add(MIB, t)
    rates = []
    for _ in range(8):  # then 1 MiB per 80 ms
        t += 0.08
        rate = r.add(MIB, t)
        if rate is not None:
            rates.append(rate)
    assert rates[-1] == pytest.approx(MIB / 0.08)


def test_extra_depth() -> None:
    assert extra_depth(12.5e6, MIB, 0.04, 8) == 0  # 100 Mbit/s: 0.48 of a chunk
    assert extra_depth(1.25 * 12.5e6, MIB, 0.06, 8) == 0  # the default, over-stated by 1/4
    assert extra_depth(100e6, MIB, 0.04, 8) == 3
    assert extra_depth(260e6, MIB, 0.04, 8) == 8  # capped
    assert extra_depth(260e6, MIB, 0.0, 8) == 0  # off
    assert extra_depth(260e6, 0, 0.04, 8) == 0
    assert extra_depth(0.0, MIB, 0.04, 8) == 0
    assert extra_depth(260e6, MIB, 0.04, 0) == 0


def test_cover_depth() -> None:
    assert cover_depth(4, 0.1, 0.6, 4) == 1  # a shaped 50 Mbit/s LAN: 0.67 -> 1
    assert cover_depth(4, 0.0005, 0.6, 4) == 0  # an unqueued LAN
    assert cover_depth(4, 0.06, 0.6, 4) == 0  # 0.4 rounds down
    assert cover_depth(4, 0.3, 0.6, 4) == 2
    assert cover_depth(4, 3.0, 0.6, 4) == 4  # capped
    assert cover_depth(4, 0.3, 0.6, 0) == 0  # off
    assert cover_depth(0, 0.3, 0.6, 4) == 0
    assert cover_depth(4, 0.3, 0.0, 4) == 0  # nothing measured
    assert cover_depth(4, -0.1, 0.6, 4) == 0
