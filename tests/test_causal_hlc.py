"""HLC (Kulkarni et al. 2014): monotone under stalled or rewound physical time, causal
across nodes, and an encoding whose string order is the timestamp order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comity.causal import HLC, HLCTimestamp
from comity.runtime import VirtualClock


class FakeClock:
    """Physical time the test sets freely, backwards included (NTP steps, VM resume)."""

    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t


def test_follows_physical_time() -> None:
    clock = VirtualClock(1_700_000_000.0)
    hlc = HLC(clock)
    assert hlc.last == HLCTimestamp(0, 0)
    assert hlc.now() == HLCTimestamp(1_700_000_000_000, 0)
    assert hlc.now() == HLCTimestamp(1_700_000_000_000, 1)  # stalled: logical counts
    clock.advance(0.005)
    assert hlc.now() == HLCTimestamp(1_700_000_000_005, 0)
    assert hlc.last == HLCTimestamp(1_700_000_000_005, 0)


def test_backwards_physical_time() -> None:
    clock = FakeClock(100.0)
    hlc = HLC(clock)
    a = hlc.now()
    clock.t = 50.0
    b = hlc.now()
    assert b > a and b == HLCTimestamp(100_000, 1)


def test_receive_cases() -> None:
    clock = FakeClock(10.0)
    hlc = HLC(clock)
    assert hlc.update(HLCTimestamp(20_000, 7)) == HLCTimestamp(20_000, 8)  # remote ahead
    assert hlc.update(HLCTimestamp(20_000, 3)) == HLCTimestamp(20_000, 9)  # same wall: max + 1
    assert hlc.update(HLCTimestamp(5_000, 50)) == HLCTimestamp(20_000, 10)  # remote behind
    clock.t = 30.0
    assert hlc.update(HLCTimestamp(25_000, 4)) == HLCTimestamp(30_000, 0)  # physical ahead


def test_resume_from_last() -> None:
    hlc = HLC(FakeClock(1.0), last=HLCTimestamp(5_000, 2))
    assert hlc.now() == HLCTimestamp(5_000, 3)


def test_drift_bound() -> None:
    clock = VirtualClock(1_700_000_000.0)
    hlc = HLC(clock, max_drift_ms=1_000)
    before = hlc.now()
    assert hlc.update(HLCTimestamp(1_700_000_001_000, 0)) > before  # exactly at the bound
    last = hlc.last
    with pytest.raises(ValueError, match="max_drift_ms"):
        hlc.update(HLCTimestamp(1_700_000_001_001, 0))
    assert hlc.last == last  # refused, so unchanged
    clock.advance(0.001)
    assert hlc.update(HLCTimestamp(1_700_000_001_001, 0)) == HLCTimestamp(1_700_000_001_001, 1)
    with pytest.raises(ValueError):
        HLC(clock, max_drift_ms=-1)


# A step: move physical time by `dt` ms (any sign), then a local event or the receipt
# of a remote timestamp whose wall time is `offset` ms from physical time.
steps = st.lists(
    st.tuples(
        st.integers(-5_000, 5_000),
        st.none() | st.tuples(st.integers(-10_000, 10_000), st.integers(0, 1_000)),
    ),
    min_size=1,
    max_size=50,
)


@settings(max_examples=300)
@given(st.integers(0, 2_000_000_000_000), steps)
def test_strictly_increasing_and_causal(start_ms: int, script: list[tuple[int, tuple[int, int] | None]]) -> None:
    clock = FakeClock(start_ms / 1000)
    hlc = HLC(clock)
    prev = hlc.last
    for dt, remote in script:
        clock.t += dt / 1000
        pt = int(clock.t * 1000)
        if remote is None:
            ts = hlc.now()
        else:
            r = HLCTimestamp(max(0, pt + remote[0]), remote[1])
            ts = hlc.update(r)
            assert ts > r
        assert ts > prev
        assert ts.wall_ms >= pt  # never behind physical time...
        assert ts == hlc.last
        prev = ts


@settings(max_examples=300)
@given(
    st.integers(0, 10**12),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=40),
)
def test_wall_time_tracks_physical_time(start_ms: int, script: list[tuple[int, int, int]]) -> None:
    # Kulkarni et al., Theorem 2: l - pt is bounded by the clock skew.  Nodes sharing
    # one VirtualClock have no skew, so every timestamp's wall time is physical time.
    clock = VirtualClock(start_ms / 1000)
    nodes = [HLC(clock) for _ in range(3)]
    for advance_ms, sender, receiver in script:
        clock.advance(advance_ms / 1000)
        pt = int(clock.now() * 1000)
        sent = nodes[sender].now()
        got = nodes[receiver].update(sent)
        assert got > sent
        assert sent.wall_ms == pt and got.wall_ms == pt


timestamps = st.builds(HLCTimestamp, st.integers(0, 10**15 - 1), st.integers(0, 10**10 - 1))


@settings(max_examples=500)
@given(timestamps, timestamps)
def test_encoding_round_trips_and_preserves_order(a: HLCTimestamp, b: HLCTimestamp) -> None:
    ea, eb = a.encode(), b.encode()
    assert HLCTimestamp.decode(ea) == a
    assert len(ea) == len(eb)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@pytest.mark.parametrize(
    "bad", ["", "1.2", "0" * 26, "000000000000001-0000000001", "00000000000000a.0000000001", "0" * 15 + ".0000000001x"]
)
def test_decode_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        HLCTimestamp.decode(bad)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        HLCTimestamp(-1, 0).encode()
    with pytest.raises(ValueError):
        HLCTimestamp(10**15, 0).encode()
    with pytest.raises(ValueError):
        HLCTimestamp(0, 10**10).encode()
