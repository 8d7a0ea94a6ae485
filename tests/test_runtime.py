"""The seams: virtual time, seeded randomness, simulated transport."""

from __future__ import annotations

import pytest

from comity.runtime import (
    Clock,
    InProcessTransport,
    Rng,
    SeededRng,
    SimulatedTransport,
    SystemClock,
    SystemRng,
    Transport,
    Unreachable,
    VirtualClock,
)


def test_virtual_clock_moves_only_when_told() -> None:
    c = VirtualClock(100.0)
    assert c.now() == 100.0 and c.monotonic() == 100.0
    assert c.advance(2.5) == 102.5
    c.set(200.0)
    assert c.now() == 200.0
    with pytest.raises(ValueError):
        c.advance(-1)
    with pytest.raises(ValueError):
        c.set(10.0)


def test_implementations_satisfy_the_protocols() -> None:
    assert isinstance(SystemClock(), Clock) and isinstance(VirtualClock(), Clock)
    assert isinstance(SystemRng(), Rng) and isinstance(SeededRng(1), Rng)
    clock = VirtualClock()
    assert isinstance(InProcessTransport(), Transport)
    assert isinstance(SimulatedTransport(clock, SeededRng(1)), Transport)


def test_seeded_rng_is_reproducible_and_forks_independently() -> None:
    a, b = SeededRng(42), SeededRng(42)
    assert [a.new_id("x") for _ in range(5)] == [b.new_id("x") for _ in range(5)]
    assert a.token_bytes(8) == b.token_bytes(8)
    assert SeededRng(1).new_id() != SeededRng(2).new_id()
    assert SeededRng(7).fork("net").random() == SeededRng(7).fork("net").random()
    assert SeededRng(7).fork("net").random() != SeededRng(7).fork("disk").random()
    ids = {SystemRng().new_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 32 for i in ids)


def test_in_process_transport_delivers_and_refuses_unknown() -> None:
    t = InProcessTransport()
    t.register("store", lambda m: {"echo": m})
    assert t.request("c", "store", 1) == {"echo": 1}
    with pytest.raises(Unreachable):
        t.request("c", "nowhere", 1)


def _run(seed: int) -> tuple[list[tuple[float, str, str, str]], list[int]]:
    clock = VirtualClock(0.0)
    t = SimulatedTransport(clock, SeededRng(seed), loss=0.2, duplicate=0.3)
    got: list[int] = []
    t.register("b", got.append)
    t.register("a", lambda m: None)
    for i in range(50):
        t.send("a", "b", i)
    t.run_until(10.0)
    return t.trace, got


def test_simulated_transport_is_deterministic_per_seed() -> None:
    assert _run(5) == _run(5)
    assert _run(5) != _run(6)


def test_simulated_transport_loses_duplicates_and_reorders() -> None:
    trace, got = _run(11)
    assert len(set(got)) < 50, "some messages are lost at loss=0.2"
    assert len(got) > len(set(got)), "some messages are duplicated at duplicate=0.3"
    assert got != sorted(got), "random delays reorder messages"


def test_simulated_partition_blocks_both_ways_until_heal() -> None:
    clock = VirtualClock(0.0)
    t = SimulatedTransport(clock, SeededRng(1))
    got: list[str] = []
    t.register("a", got.append)
    t.register("b", got.append)
    t.partition("a", "b")
    with pytest.raises(Unreachable):
        t.request("a", "b", "x")
    t.send("b", "a", "lost")
    t.run_until(1.0)
    assert got == []
    t.heal()
    assert t.request("a", "b", "ok") is None
    t.send("b", "a", "late")
    t.run_until(2.0)
    assert got == ["ok", "late"]
    assert clock.now() == 2.0
