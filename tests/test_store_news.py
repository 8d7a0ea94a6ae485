"""News, per session, on both engines: exactly once, in order, never moved by a failed call.

The rules (docs/news.md): a keyed answer (a read or a write) shows the news of the
session's keys; ``news()`` shows every other event, less what keyed answers showed; a
call that fails moves nothing; a named session is kept in the store without a durable
write per read, and resumes after a restart repeating some news, never skipping any.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comity.errors import Invalid, StaleContext, Unavailable
from comity.runtime import VirtualClock
from comity.store import Put, Store, Tx
from comity.store import _api


# ------------------------------------------------------------------ a faulty engine


class Faulty:
    """A real backend whose next transaction fails at its commit: ``"before"`` (rolled back,
    as when the connection dies before COMMIT) or ``"after"`` (committed, but the answer is
    lost, as when it dies after).  It also counts write transactions."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.meta = inner.meta
        self.fail: str | None = None
        self.writes = 0
        self.reads = 0

    def transaction(self, *, write: bool) -> Any:
        return _FaultyTransaction(self, write)

    def close(self) -> None:
        self.inner.close()


class _FaultyTransaction:
    def __init__(self, backend: Faulty, write: bool) -> None:
        self.backend, self.write = backend, write

    def __enter__(self) -> Tx:
        self.backend.writes += self.write
        self.backend.reads += not self.write
        self.inner = self.backend.inner.transaction(write=self.write)
        return self.inner.__enter__()  # type: ignore[no-any-return]

    def __exit__(self, et: Any, e: Any, tb: Any) -> Any:
        mode, self.backend.fail = self.backend.fail, None
        if et is None and mode == "before":
            self.inner.__exit__(RuntimeError, RuntimeError("connection lost"), None)
            raise Unavailable("could not commit (injected); nothing was written")
        out = self.inner.__exit__(et, e, tb)
        if et is None and mode == "after":
            raise Unavailable("could not commit (injected): the answer was lost")
        return out


@pytest.fixture
def faulty(store: Store) -> Iterator[tuple[Store, Faulty]]:
    backend = Faulty(store.backend)
    s = Store(backend, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    yield s, backend


def positions(events: list[dict[str, Any]]) -> list[int]:
    return [e["pos"] for e in events]


def others(store: Store, session: str) -> list[int]:
    """Every event in the log written by another session than ``session``."""
    log = store.session().log(limit=10_000)
    return [e["pos"] for e in log if e["session"] != session]


# -------------------------------------------------------------- keyed and news()


def test_a_keyed_answer_does_not_swallow_other_keys_news(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    other = bob.create("other", 1)
    mine = bob.create("k", 1)
    v = alice.get("k")
    assert positions(v.news) == [mine.pos]  # only its key...
    assert positions(alice.news().events) == [other.pos]  # ...and news() has the rest, once
    assert alice.news().events == [] and alice.get("k").news == []


def test_news_does_not_repeat_what_a_keyed_answer_showed(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    a = bob.create("a", 1)
    k = bob.create("k", 1)
    b = bob.create("b", 1)
    assert positions(alice.get("k").news) == [k.pos]
    n = alice.news()
    assert positions(n.events) == [a.pos, b.pos] and not n.truncated
    assert n.position == b.pos == alice.position


def test_news_capped_below_what_keyed_answers_showed_still_delivers_each_once(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    written = []
    for i in range(6):
        written.append(bob.put(f"x{i}", i).pos)
        written.append(bob.put("k", i, keep_both=True).pos)
    keyed = positions(alice.get("k").news)
    assert keyed == written[1::2]
    seen: list[int] = []
    while True:
        n = alice.news(limit=2)
        assert len(n.events) <= 2
        seen += positions(n.events)
        if not n.truncated:
            break
    assert seen == written[0::2]
    assert store.news_limit == _api.DEFAULT_NEWS_LIMIT  # a per-call limit touches nothing shared


def test_a_session_that_only_reads_its_keys_keeps_up_with_the_head(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    for i in range(3):
        w = bob.put("k", i, keep_both=True)
        assert positions(alice.get("k").news) == [w.pos]
        assert alice.position == w.pos  # nothing else happened: the position keeps up


def test_a_write_shows_news_of_its_keys_and_leaves_the_rest_to_news(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    other = bob.create("other", 1)
    theirs = bob.put("k", 1, keep_both=True)
    w = alice.put("k", 2, keep_both=True)
    assert positions(w.news) == [theirs.pos]
    assert positions(alice.news().events) == [other.pos]
    # and a write right after what the session saw moves it without asking the log
    again = alice.put("k", 3, keep_both=True)
    assert again.news == [] and alice.position == again.pos


def _program() -> st.SearchStrategy[list[tuple[str, int, int]]]:
    verbs = st.sampled_from(["write", "write", "write", "txn", "get", "get_many", "put", "put", "news", "catch_up", "follow", "forget"])
    return st.lists(st.tuples(verbs, st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=60)


def _run_mixed(store: Store, program: list[tuple[str, int, int]], observer: Any) -> list[list[int]]:
    """Two writers and ``observer``; returns the positions of each of its answers' news."""
    writers = [store.session("w1"), store.session("w2")]
    answers: list[list[int]] = []
    for verb, k, n in program:
        key = f"k{k}"
        if verb == "write":
            writers[n % 2].put(key, n, keep_both=True)
        elif verb == "txn":
            writers[n % 2].txn(ops=[Put(f"k{(k + j) % 5}", j, keep_both=True) for j in range(1 + n % 3)])
        elif verb == "get":
            answers.append(positions(observer.get(key).news))
        elif verb == "get_many":
            answers.append(positions(observer.get_many([key, f"k{(k + 1) % 5}"])[0].news))
        elif verb == "put":
            answers.append(positions(observer.put(key, n, keep_both=True).news))
        elif verb == "catch_up":
            answers.append(positions(observer.catch_up()[0]))
        elif verb == "follow":  # a key followed without an answer (as a face adds its inbox)
            observer.interest.add(key)
        elif verb == "forget":  # a key no longer followed: its news is left to news()
            observer.interest.discard(key)
        else:
            answers.append(positions(observer.news(limit=1 + n).events))
    while True:  # the rest, as an agent that keeps calling news() would get it
        got = observer.news(limit=3)
        answers.append(positions(got.events))
        if not got.truncated:
            break
    return answers


def test_a_session_behind_on_news_writes_its_own_keys_without_reading_the_log(store: Store) -> None:
    """Once another session has written a key it does not follow, a session's position stays
    behind until news() shows that event; its keys run ahead.  While nobody else writes, its
    writes of those keys ask the log nothing (they follow its last answer directly), and a
    write by another of one of its keys is the next answer's news, once."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    start = alice.position
    for i in range(3):
        alice.put(f"k{i}", 0)
    elsewhere = bob.put("elsewhere", 1)
    assert alice.put("k0", 1, keep_both=True).news == []  # reads past "elsewhere": shown ahead
    assert alice.position == start + 3
    answers: list[list[int]] = []
    before = dict(counting.counts)
    for i in range(30):
        w = alice.put(f"k{i % 3}", i, keep_both=True)
        answers.append(positions(w.news))
    assert counting.counts == before, "no read of the log while nobody else writes"
    assert answers == [[]] * 30
    theirs = bob.put("k1", "theirs", keep_both=True)
    assert positions(alice.put("k2", 9, keep_both=True).news) == [theirs.pos]
    assert alice.put("k2", 10, keep_both=True).news == []
    assert positions(alice.get("k1").news) == []  # shown once, by the write
    assert positions(alice.news().events) == [elsewhere.pos]
    assert alice.news().events == []


def test_a_session_shown_everything_writes_without_reading_the_log(store: Store) -> None:
    """A session shown every event up to its last answer: its writes, while nobody else
    writes, directly follow what it had seen, and ask the log nothing."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    theirs = bob.put("k", 1, keep_both=True)
    assert positions(alice.put("k", 2, keep_both=True).news) == [theirs.pos]
    before = dict(counting.counts)
    for i in range(3):
        assert alice.put(f"k{i}", i).news == []
    assert counting.counts == before, "nobody wrote between: nothing to read"
    again = bob.put("k", 3, keep_both=True)
    assert positions(alice.put("k", 4, keep_both=True).news) == [again.pos]
    assert alice.news().events == []


def test_a_key_followed_in_place_of_another_is_not_taken_as_shown(store: Store) -> None:
    """The keys a session follows can change without an answer (a face adds an inbox; a key
    is dropped).  A write right after its last answer shows its keys up to that write only
    while they are the keys that answer showed: one swapped for another of the same number
    still has its news delivered."""
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("a", 0)
    old = bob.put("b", 1)  # not followed by alice: news() would show it
    alice.put("a", 1, keep_both=True)  # "a" is shown ahead of alice's position
    alice.interest.discard("a")
    alice.interest.add("b")  # as many keys as before, not the same
    w = alice.put("b", 2, keep_both=True)
    assert positions(w.news) == [old.pos]
    assert alice.news().events == []
    alice.interest = {"a", "b"}  # replaced whole: taken as changed too
    again = bob.put("a", "theirs", keep_both=True)
    assert positions(alice.put("b", 3, keep_both=True).news) == [again.pos]


def _in_turn(*changes: Callable[[], object]) -> None:
    for change in changes:
        change()


_SWAPS: dict[str, Callable[[set[str]], None]] = {
    "add, then remove": lambda keys: _in_turn(lambda: keys.add("b"), lambda: keys.remove("a")),
    "add, then difference_update": lambda keys: _in_turn(lambda: keys.add("b"), lambda: keys.difference_update(["a"])),
    "add, then intersection_update": lambda keys: _in_turn(lambda: keys.add("b"), lambda: keys.intersection_update(["b"])),
    "add, then symmetric_difference_update": lambda keys: _in_turn(
        lambda: keys.add("b"), lambda: keys.symmetric_difference_update(["a"])
    ),
    "pop, then add": lambda keys: _in_turn(keys.pop, lambda: keys.add("b")),
    "clear, then add": lambda keys: _in_turn(keys.clear, lambda: keys.add("b")),
    "-=, then |=": lambda keys: _in_turn(lambda: keys.__isub__({"a"}), lambda: keys.__ior__({"b"})),
}


@pytest.mark.parametrize("swap", sorted(_SWAPS))
def test_a_key_swapped_for_another_in_two_changes_is_not_taken_as_shown(store: Store, swap: str) -> None:
    """However the followed keys are changed in place, two changes (one key in, one out) are
    two changes: the keys end as many as the last answer showed, not the same, and a write
    right after it still has the new key's news delivered."""
    alice, bob = store.session("alice"), store.session("bob")
    alice.put("a", 0)
    old = bob.put("b", 1)  # not followed by alice: news() would show it
    alice.put("a", 1, keep_both=True)  # "a" is shown ahead of alice's position
    _SWAPS[swap](alice.interest)
    assert alice.interest == {"b"}
    w = alice.put("b", 2, keep_both=True)
    assert positions(w.news) == [old.pos]
    assert alice.news().events == []


class _Watermarked(Faulty):
    """A real backend whose write transactions see the head no higher than ``cap``, as a
    PostgreSQL writer does while other writers' positions below its own are in flight."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.cap: int | None = None

    def transaction(self, *, write: bool) -> Any:
        backend = self

        class _T:
            def __enter__(self) -> Any:
                self.inner = backend.inner.transaction(write=write)
                tx = self.inner.__enter__()
                cap = backend.cap
                if not write or cap is None:
                    return tx

                class _Tx:
                    def head(self) -> int:
                        return min(int(tx.head()), cap)

                    def __getattr__(self, name: str) -> Any:
                        return getattr(tx, name)

                return _Tx()

            def __exit__(self, *exc: Any) -> Any:
                return self.inner.__exit__(*exc)

        return _T()


@pytest.mark.parametrize("in_flight", ["theirs", "theirs and its own"])
def test_a_write_whose_watermark_is_below_anothers_event_leaves_that_event_news(store: Store, in_flight: str) -> None:
    """A writer whose head is a watermark (PostgreSQL) shows its keys only up to it.  Past it,
    it may take as shown only positions that are all its own: here another session's write
    of one of its keys lies between the watermark and the write, and is the next answer's news.
    When only its own events lie past the watermark, the write shows its keys up to itself:
    the next write, with nobody writing between, reads nothing of the log."""
    counting = _Counting(store.backend)
    backend = _Watermarked(counting)
    s = Store(backend, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    bob.put("elsewhere", 1)  # alice's position stays behind this
    mine = alice.put("k", 1, keep_both=True)
    theirs = bob.put("k", "theirs", keep_both=True)
    backend.cap = (theirs.pos if in_flight == "theirs" else mine.pos) - 1  # still in flight as alice writes
    w = alice.put("k", 2, keep_both=True)
    backend.cap = None
    assert w.news == []
    assert positions(alice.put("k", 3, keep_both=True).news) == [theirs.pos]
    last = bob.put("elsewhere", 2, keep_both=True)
    backend.cap = last.pos  # only its own event past the watermark
    assert alice.put("k", 4, keep_both=True).news == []
    backend.cap = None
    before = dict(counting.counts)
    assert alice.put("k", 5, keep_both=True).news == []
    assert counting.counts == before, "shown up to its own write: nothing to read"
    again = bob.put("k", "again", keep_both=True)
    assert positions(alice.put("k", 6, keep_both=True).news) == [again.pos]
    assert len(alice.news().events) == 2  # the two writes elsewhere


def test_a_write_past_the_watermark_with_nothing_else_unshown_moves_the_position_to_itself(store: Store) -> None:
    """A watermarked writer (PostgreSQL) whose answer shows everything up to the watermark,
    with only its own events past it: its position is its own write, not the watermark."""
    backend = _Watermarked(store.backend)
    s = Store(backend, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    theirs = bob.put("k", "theirs", keep_both=True)
    backend.cap = theirs.pos  # alice's own write is past the watermark
    w = alice.put("k", 1, keep_both=True)
    backend.cap = None
    assert positions(w.news) == [theirs.pos]
    assert alice.position == w.pos
    assert alice.news().events == []


def _x_shown_then_dropped(alice: Any, bob: Any) -> tuple[Any, Any]:
    """alice writes "k", bob writes "elsewhere" (alice's position stays behind it) and "x";
    alice reads "x" (shown), then no longer follows it.  Returns bob's two writes."""
    alice.put("k", 0)
    elsewhere = bob.put("elsewhere", 1)  # alice's position stays behind this
    x = bob.put("x", 1)
    assert positions(alice.get("x").news) == [x.pos]
    alice.interest.discard("x")
    return elsewhere, x


def test_a_key_no_longer_followed_keeps_its_point_through_a_write_past_the_watermark(store: Store) -> None:
    """A key dropped from the followed keys keeps how far it was shown when a watermarked
    write shows the others up to itself: followed again, its events are not shown twice."""
    backend = _Watermarked(store.backend)
    s = Store(backend, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    elsewhere, x = _x_shown_then_dropped(alice, bob)
    backend.cap = x.pos  # only alice's own write past the watermark
    w = alice.put("k", 1, keep_both=True)
    backend.cap = None
    assert w.news == []
    assert alice.get("x").news == []  # shown once, by the read before
    assert positions(alice.news().events) == [elsewhere.pos]


def test_a_key_no_longer_followed_keeps_its_point_across_later_answers(store: Store) -> None:
    """A dropped key's point survives the answers after the one that dropped it, not just
    that one: followed again, its events already shown are not shown again."""
    alice, bob = store.session("alice"), store.session("bob")
    elsewhere, x = _x_shown_then_dropped(alice, bob)
    assert alice.put("k", 1, keep_both=True).news == []
    assert alice.put("k", 2, keep_both=True).news == []  # nobody wrote between: asks the log nothing
    other = bob.put("other", 1)
    assert alice.put("k", 3, keep_both=True).news == []  # shows "k" past "x"'s point
    assert alice.get("x").news == []
    assert positions(alice.news().events) == [elsewhere.pos, other.pos]


def test_an_answer_after_the_keys_changed_with_nothing_new_lets_the_next_write_read_nothing(store: Store) -> None:
    """A keyed answer at the same point as the last (nobody wrote since) still notes the keys
    now followed: a write right after it asks the log nothing."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    bob.put("elsewhere", 1)  # alice's position stays behind this
    assert alice.put("k", 1, keep_both=True).news == []
    alice.interest.add("y")
    assert alice.get("k").news == []  # the same point as the write's answer
    before = dict(counting.counts)
    assert alice.put("k", 2, keep_both=True).news == []
    assert counting.counts == before, "nobody wrote between: nothing to read"


def test_a_read_of_the_followed_keys_with_nothing_new_asks_the_log_nothing(store: Store) -> None:
    """Every key followed shown up to the head already, the keys unchanged since: a read
    answers without reading the log, with no news and nothing capped."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    bob.put("elsewhere", 1)  # alice's position stays behind this
    assert alice.put("k", 1, keep_both=True).news == []
    before = dict(counting.counts)
    got = alice.get("k")
    assert (got.news, got.news_truncated) == ([], False)
    assert counting.counts == before, "nothing new: nothing to read"
    theirs = bob.put("k", 2, keep_both=True)
    assert positions(alice.get("k").news) == [theirs.pos]


def test_a_read_whose_keys_are_all_shown_to_the_head_asks_the_log_nothing(store: Store) -> None:
    """The keys changed since the last answer (one dropped), the rest shown up to the head:
    the read starts at the head, and reads nothing of the log."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    alice.put("x", 0)
    bob.put("elsewhere", 1)  # alice's position stays behind this
    assert alice.put("k", 1, keep_both=True).news == []  # "k" and "x" shown up to here
    alice.interest.discard("x")
    before = dict(counting.counts)
    assert alice.get("k").news == []
    assert counting.counts == before, "shown up to the head: nothing to read"


def test_a_session_following_no_key_caught_up_again_with_nothing_new_asks_the_log_nothing(store: Store) -> None:
    """A session that has read and written nothing follows no key: caught up once, it has
    been shown its keys (none) up to the head, and caught up again with nothing new between,
    it answers without reading the log."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    bob.put("elsewhere", 1)  # alice's position stays behind this
    assert alice.catch_up() == ([], False)
    before = dict(counting.counts)
    assert alice.catch_up() == ([], False)
    assert counting.counts == before, "nothing new: nothing to read"
    assert positions(alice.news().events) == [1]


def test_news_read_in_part_leaves_a_write_of_the_followed_keys_reading_nothing(store: Store) -> None:
    """news() capped before the end moves the position and keeps the followed keys' point:
    a write right after, with nobody writing between, still asks the log nothing."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    alice.put("k", 0)
    e1, e2 = bob.put("e", 1), bob.put("e", 2, keep_both=True)
    assert alice.put("k", 1, keep_both=True).news == []  # "k" shown ahead of the two
    assert positions(alice.news(limit=1).events) == [e1.pos]
    before = dict(counting.counts)
    assert alice.put("k", 2, keep_both=True).news == []
    assert counting.counts == before, "nobody wrote between: nothing to read"
    assert positions(alice.news().events) == [e2.pos]


def test_the_keys_a_session_follows_count_every_change_and_nothing_else() -> None:
    """What lets a write skip comparing sets: the followed keys count their changes."""
    keys = _api._Interest({"a"})
    seen = keys.changes
    counts = {seen}  # a session's last answer may have noted any of them: none comes back

    def changed() -> bool:
        nonlocal seen
        out, seen = keys.changes != seen, keys.changes
        if out:
            assert seen not in counts, "a change gives a count never seen before"
            counts.add(seen)
        return out

    keys.add("a"), keys.update(["a"]), keys.discard("z"), keys.difference_update(["z"]), keys.intersection_update(["a", "b"])
    keys |= {"a"}
    keys -= {"z"}
    keys &= {"a"}
    assert not changed() and keys == {"a"}
    popped: list[str] = []
    for change in (
        lambda: keys.add("b"), lambda: keys.discard("b"), lambda: keys.update(["b", "c"]), lambda: keys.remove("c"),
        lambda: keys.difference_update(["b"]), lambda: keys.update(["b"]), lambda: keys.intersection_update(["a"]),
        lambda: keys.symmetric_difference_update(["b"]), lambda: popped.append(keys.pop()), lambda: keys.clear(),
    ):
        change()
        assert changed()
    assert popped[0] in {"a", "b"}, "pop() gives the key it took out"
    keys |= {"x"}
    assert changed()
    keys -= {"x"}
    assert changed()
    keys |= {"x", "y"}
    keys &= {"x"}
    assert changed() and keys == {"x"}
    keys ^= {"x"}
    assert changed() and not keys


def _check_exactly_once(store: Store, observer_id: str, start: int, answers: list[list[int]]) -> None:
    delivered = [p for a in answers for p in a]
    expected = [p for p in others(store, observer_id) if p > start]
    assert sorted(delivered) == expected, "every other session's event, exactly once"
    for a in answers:
        assert a == sorted(a), "each answer in log order"
    by_key: dict[str, list[int]] = {}
    keys = {e["pos"]: e["key"] for e in store.session().log(after=start, limit=10_000)}
    for p in delivered:
        by_key.setdefault(keys[p], []).append(p)
    for ps in by_key.values():
        assert ps == sorted(ps), "each key's events in log order"


def _drain_news(session: Any, answers: list[list[int]]) -> None:
    """news() until it is not capped, each answer's positions kept."""
    while True:
        got = session.news()
        answers.append(positions(got.events))
        if not got.truncated:
            break


@pytest.mark.parametrize(
    ("scan", "key_rows"),
    [(_api._SCAN, _api._KEY_ROWS), (3, _api._KEY_ROWS), (_api._SCAN, 0)],
    ids=["near-head", "far-behind", "by-key"],
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=_program(), limit=st.sampled_from([1, 2, 50]))
def test_keyed_answers_and_news_deliver_every_event_exactly_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, scan: int, key_rows: int, program: list[tuple[str, int, int]], limit: int
) -> None:
    """The mixed-keys workload as a law: whatever the interleaving of others' writes with
    the observer's reads, writes and news(), and whatever the caps.  ``by-key``: a key
    lookup costs nothing, so keyed answers read the log only from where their keys were
    last shown and ask by key for every key shown up to an earlier point."""
    monkeypatch.setattr(_api, "_SCAN", scan)
    monkeypatch.setattr(_api, "_KEY_ROWS", key_rows)
    monkeypatch.setattr(store, "news_limit", limit)
    observer = store.session("observer")
    start = observer.position
    answers = _run_mixed(store, program, observer)
    _check_exactly_once(store, observer.id, start, answers)


class _CountingTx:
    """A transaction that counts its reads of the log: in order, and the keys asked by key."""

    def __init__(self, inner: Any, counts: dict[str, int]) -> None:
        self._inner, self._counts = inner, counts

    def events(self, after: int, **kw: Any) -> Any:
        if kw.get("keys") is None:
            self._counts["in order"] += 1
        else:
            self._counts["by key"] += len(kw["keys"])
        return self._inner.events(after, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Counting(Faulty):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.counts = {"by key": 0, "in order": 0}

    def transaction(self, *, write: bool) -> Any:
        backend = self

        class _T:
            def __enter__(self) -> Any:
                self.inner = backend.inner.transaction(write=write)
                return _CountingTx(self.inner.__enter__(), backend.counts)

            def __exit__(self, *exc: Any) -> Any:
                return self.inner.__exit__(*exc)

        return _T()


def test_a_keyed_answer_reads_no_more_of_the_log_as_the_session_follows_more_keys(store: Store) -> None:
    """An agent that only reads and writes its own keys while others write elsewhere keeps
    its position (news() has not shown their events), so its keys run ahead of it.  Its
    answers read the log from where its keys were last shown and ask by key only for the
    keys new to it; they once asked by key for every key it had ever followed, so each
    claim of a board's agent cost more than the one before.  Nothing is skipped either."""
    counting = _Counting(store.backend)
    s = Store(counting, clock=store.clock, rng=store.rng)  # type: ignore[arg-type]
    alice, bob = s.session("alice"), store.session("bob")
    start = alice.position
    cost: list[dict[str, int]] = []
    answers: list[list[int]] = []
    for i in range(120):
        bob.put(f"b{i}", i)
        bob.put(f"c{i}", i)
        bob.put(f"a{i}", i)  # news to alice's read below
        before = dict(counting.counts)
        answers.append(positions(alice.get(f"a{i}").news))  # a key new to alice
        answers.append(positions(alice.put(f"a{i}", -i, keep_both=True).news))
        cost.append({k: counting.counts[k] - before[k] for k in before})
    assert alice.position == start  # bob's other keys are still news to news()
    assert all(c == cost[-1] for c in cost[60:]), "the same reads of the log at the 61st key as at the 120th"
    assert cost[-1]["by key"] <= 1 and cost[-1]["in order"] <= 2
    _drain_news(alice, answers)
    _check_exactly_once(store, alice.id, start, answers)


def test_a_key_followed_after_its_event_was_passed_is_asked_for_by_key(store: Store) -> None:
    """A session whose keys run ahead of its position begins to follow a key whose event
    lies between the two (bob wrote x, then much elsewhere).  The answer reads the log from
    where the other keys were shown and asks for x by key: the keys followed since the last
    answer are remembered one by one, not found by comparing every key followed."""
    alice, bob = store.session("alice"), store.session("bob")
    start = alice.position
    answers = [positions(alice.put("a", 0).news)]
    x = bob.put("x", 1)
    for i in range(_api._KEY_ROWS * 3):  # elsewhere: alice's position stays behind them
        bob.put(f"elsewhere{i}", i)
    answers.append(positions(alice.put("a", 1, keep_both=True).news))
    assert answers[-1] == [] and alice.position < x.pos
    answers.append(positions(alice.get("x").news))
    assert answers[-1] == [x.pos], "x's write is news to the answer that begins to follow x"
    answers.append(positions(alice.news(limit=1000).events))
    _check_exactly_once(store, alice.id, start, answers)


@pytest.mark.parametrize("step", ["put", "get_many"])
def test_a_session_following_many_keys_does_not_copy_them_to_follow_one_more(store: Store, step: str) -> None:
    """An agent that writes a new key (or reads two, as a claim does) at every step while
    others write: each answer begins to follow more keys.  The keys it was shown together
    are not copied for it (they once were, and a write, or a board's claim, cost more with
    every key followed: 1.6 ms a claim and completion at 12,000 tasks done, against 0.5
    now), and nothing is skipped."""
    alice, bob = store.session("alice"), store.session("bob")
    start = alice.position
    answers: list[list[int]] = []
    ctx = None
    copies: list[frozenset[str]] = []  # each copy of the keys kept whole, held so no id is reused
    for i in range(1200):
        ctx = bob.put("elsewhere", i, context=ctx).context
        if step == "put":
            answers.append(positions(alice.put(f"a{i}", i).news))
        else:
            bob.put(f"b{i}", i)  # news to alice's read
            answers.append(positions([e for v in alice.get_many([f"a{i}", f"b{i}"]) for e in v.news]))
        base = alice._shown.together.base
        if i >= 1000 and not (copies and copies[-1] is base):
            copies.append(base)
    assert len(alice._shown.together) == 1200 * (1 if step == "put" else 2)
    added = 200 * (1 if step == "put" else 2)
    assert len(copies) <= added // 64 + 1, "keys followed past 1,000: copied whole once every 64 keys at most"
    _drain_news(alice, answers)
    _check_exactly_once(store, alice.id, start, answers)


def test_the_keys_added_one_by_one_are_remembered_until_anything_else_changes() -> None:
    keys = _api._Interest({"a"})
    c0 = keys.changes
    assert keys.added_since(c0) == []
    keys.add("b"), keys.add("a"), keys.add("c")
    assert keys.added_since(c0) == ["b", "c"] and keys.added_since(c0 + 1) == ["c"]
    assert keys.added_since(keys.changes + 1) is None, "a count not reached yet"
    keys.update(["d", "e", "a"])  # a read of several keys: each new one remembered
    assert keys.added_since(c0) == ["b", "c", "d", "e"]
    for change in (lambda: keys.discard("c"), lambda: keys.difference_update(["d"]),
                   lambda: keys.intersection_update(["a", "b", "e"]), lambda: keys.symmetric_difference_update(["z"]),
                   lambda: keys.clear()):  # fmt: skip
        before = keys.changes
        keys.add(f"q{before}")
        change()
        assert keys.added_since(before) is None, "another change: the additions before it are not known to be all"
        keys.add(f"r{before}")
        assert keys.added_since(keys.changes - 1) == [f"r{before}"]
    c = keys.changes
    for i in range(_api._ADDED_KEPT + 10):
        keys.add(f"k{i}")
    assert keys.added_since(c) is None, "too long ago: forgotten"
    assert keys.added_since(keys.changes - 3) == [f"k{i}" for i in range(_api._ADDED_KEPT + 7, _api._ADDED_KEPT + 10)]


@settings(max_examples=200, deadline=None)
@given(start=st.frozensets(st.text(max_size=3), max_size=300), steps=st.lists(st.lists(st.text(max_size=4), max_size=80), max_size=30))
def test_keys_grown_without_copying_are_the_union(start: frozenset[str], steps: list[list[str]]) -> None:
    keys, want = _api._Keys(start), set(start)
    for step in steps:
        new = [k for k in dict.fromkeys(step) if k not in want]
        keys = keys.plus(new)
        want.update(new)
        assert len(keys) == len(want) and set(keys) == want
        never = "!" * 5  # longer than any key drawn
        assert keys.common(want | {never}) == want and keys.missing(want | {never}) == {never}
        assert all(k in keys for k in want) and not any(k + "!" in keys for k in want if k + "!" not in want)
        assert not keys.base & keys.extra


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=_program())
def test_the_agent_facade_delivers_every_event_exactly_once(store: Store, program: list[tuple[str, int, int]]) -> None:
    """Through the facade every face uses: news waits in the session until an answer
    hands it out, whatever the verbs collected inside."""
    from comity.work import Agent

    agent = Agent(store.session("observer"))
    start = agent.session.position

    class Face:
        interest = agent.session.interest  # the keys the agent's session follows

        def get(self, key: str) -> Any:
            return _Answer(agent.read(key)["news"])

        def get_many(self, keys: list[str]) -> list[Any]:
            return [_Answer(agent.read(keys[0])["news"])]

        def put(self, key: str, value: Any, keep_both: bool = False) -> Any:
            return _Answer(agent.write(key, value, keep_both=keep_both)["news"])

        def catch_up(self) -> tuple[list[dict[str, Any]], bool]:
            return agent.log(limit=1)["news"], False

        def news(self, limit: int = 50) -> Any:
            a = agent.news(limit=limit)
            return _Answer(a["news"], bool(a.get("news_truncated")))

    answers = _run_mixed(store, program, Face())
    _check_exactly_once(store, agent.session.id, start, answers)


class _Answer:
    def __init__(self, news: list[dict[str, Any]], truncated: bool = False) -> None:
        self.news = self.events = news
        self.truncated = truncated


def test_an_agent_answer_runs_no_transaction_beyond_its_verbs(faulty: tuple[Store, Faulty]) -> None:
    """A verb that ran a transaction answers with the news that transaction collected: the
    facade reads the store no more (it used to catch up after every verb, a read
    transaction more per answer on every face).  A verb that ran none still catches up."""
    from comity.work import Agent

    store, backend = faulty
    agent = Agent(store.session("alice"))
    bob = store.session("bob")
    agent.read("k")
    agent.write("mine", 0)
    w = bob.put("k", 1)
    before = (backend.reads, backend.writes)
    assert positions(agent.read("k")["news"]) == [w.pos]
    assert (backend.reads, backend.writes) == (before[0] + 1, before[1])
    w2 = bob.put("k", 2, keep_both=True)
    before = (backend.reads, backend.writes)
    assert positions(agent.write("mine", 1)["news"]) == [w2.pos]
    assert (backend.reads, backend.writes) == (before[0], before[1] + 1)
    w3 = bob.put("k", 3, keep_both=True)
    before = (backend.reads, backend.writes)
    assert positions(agent.whoami()["news"]) == [w3.pos]  # no transaction of its own: catches up
    assert (backend.reads, backend.writes) == (before[0] + 1, before[1])
    assert agent.whoami()["news"] == [] and agent.read("k")["news"] == []  # each event once


def test_an_answer_after_a_heartbeat_still_carries_what_came_after_it(store: Store) -> None:
    """A background heartbeat collects news for the next answer; that answer, of a verb that
    runs no transaction of its own, still catches up past the heartbeat, and shows each
    event once."""
    from comity.work import Agent

    agent = Agent(store.session("alice"))
    bob = store.session("bob")
    agent.read("k")
    seen_by_heartbeat = bob.put("k", 1).pos
    agent.heartbeat()
    after_it = bob.put("k", 2, keep_both=True).pos
    assert positions(agent.whoami()["news"]) == [seen_by_heartbeat, after_it]
    assert agent.whoami()["news"] == []


def test_a_held_backlog_too_large_to_keep_is_collected_again_not_skipped(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_api, "_UNDELIVERED_MAX", 5)
    alice, bob = store.session("alice"), store.session("bob")
    alice.holds_news = True
    alice.get("k")
    written = [bob.put("k", i, keep_both=True).pos for i in range(4)]
    for _ in range(3):
        alice.get("k")  # collects, holds, never hands out: the backlog overflows
    written += [bob.put("k", 9, keep_both=True).pos]
    got: list[int] = []
    for _ in range(5):
        alice.catch_up()
        news, truncated = alice.take_news()
        got += positions(news)
    assert got == written


# -------------------------------------------------------------- failed calls


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_read_whose_transaction_fails_moves_nothing(faulty: tuple[Store, Faulty], when: str) -> None:
    store, backend = faulty
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    at = alice.position
    w = bob.put("k", 1)
    o = bob.put("other", 1)
    backend.fail = when
    with pytest.raises(Unavailable):
        alice.get("k")
    assert alice.position == at
    assert positions(alice.get("k").news) == [w.pos]
    backend.fail = when
    with pytest.raises(Unavailable):
        alice.news()
    assert positions(alice.news().events) == [o.pos]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_write_whose_commit_fails_moves_nothing(faulty: tuple[Store, Faulty], when: str) -> None:
    """The PostgreSQL bug: the position moved inside the transaction, before its commit
    was confirmed; the next writer took the position and the session never saw it."""
    store, backend = faulty
    alice, bob = store.session("alice"), store.session("bob")
    alice.get("k")
    theirs = bob.put("k", 1)
    other = bob.put("other", 1)
    at = alice.position
    backend.fail = when
    with pytest.raises(Unavailable):
        alice.put("k", 2, keep_both=True, request_id="r-1")
    assert alice.position == at
    later = bob.put("k", 3, keep_both=True)  # takes the next position if the write never committed
    retry = alice.put("k", 2, keep_both=True, request_id="r-1")
    assert retry.replayed == (when == "after")
    assert positions(retry.news) == [theirs.pos, later.pos]
    assert positions(alice.news().events) == [other.pos]


def test_a_failed_agent_verb_hands_its_news_to_the_next_answer(faulty: tuple[Store, Faulty]) -> None:
    from comity.work import Agent

    store, backend = faulty
    agent = Agent(store.session("alice"))
    bob = store.session("bob")
    agent.read("k")
    w = bob.put("k", 1)
    backend.fail = "before"
    with pytest.raises(Unavailable):
        agent.read("k")
    assert positions(agent.read("k")["news"]) == [w.pos]


def test_a_refused_write_moves_nothing_and_its_news_stays_news(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    old = alice.get("k").context
    w = bob.put("k", 1)
    at = alice.position
    with pytest.raises(StaleContext) as e:
        alice.put("k", 2, context=old)
    assert positions(e.value.news) == [w.pos]
    assert alice.position == at
    assert positions(alice.get("k").news) == [w.pos]


def test_a_refused_write_is_in_the_log_but_news_to_nobody(store: Store) -> None:
    """bob's refused write changed nothing: bob heard it from the refusal, and it says
    nothing to alice about any key.  It stays in the log (the audit trail, the dashboard)."""
    alice, bob, carol = store.session("alice"), store.session("bob"), store.session("carol")
    w = alice.put("k", 1)
    old = bob.get("k")
    w2 = alice.put("k", 2, context=alice.get("k").context)
    alice.news()
    carol.get("@refused")  # even a session that reads the key it is noted on
    with pytest.raises(StaleContext):
        bob.put("k", 3, context=old.context)
    after = alice.put("other", 1)
    assert alice.news().events == [] and carol.news().events != []
    assert [e["op"] for e in carol.log("@refused")] == [_api.REFUSED_OP]
    assert [e["key"] for e in store.session("dave").log(after=w2.pos)] == [_api.REFUSED_KEY, "other"]
    # Nothing is skipped: the position moved past the refusal, up to the next real event.
    assert alice.position == after.pos and positions(carol.news().events) == []
    assert w.pos < w2.pos


# --------------------------------------------------------------- named sessions


def test_reads_of_a_named_session_write_nothing_until_the_save_interval(faulty: tuple[Store, Faulty]) -> None:
    store, backend = faulty
    clock = store.clock
    assert isinstance(clock, VirtualClock)
    bob = store.session("bob")
    s = store.session("alice", name="alice-1")
    bob.put("k", 0)
    backend.writes = 0
    for i in range(20):
        s.get("k")
        s.news()
    assert backend.writes == 0  # no durable write per read
    bob.put("k", 1, keep_both=True)
    s.get("k")
    clock.advance(store.session_save_interval)
    backend.writes = 0
    s.get("k")
    assert backend.writes == 1  # at most one save per interval
    s.get("k")
    s.news()
    assert backend.writes == 1


def test_writes_of_a_named_session_save_it_at_most_once_per_interval(store: Store, clock: VirtualClock) -> None:
    bob = store.session("bob")
    s = store.session("alice", name="writer")

    def kept() -> tuple[float, int]:
        with store.backend.transaction(write=False) as tx:
            row = tx.load_session("writer")
        assert row is not None
        return row.saved, row.position

    first = kept()
    for i in range(5):
        bob.put("k", i, keep_both=True)
        s.put("k", i, keep_both=True)
    assert kept() == first  # news moved the session each time; nothing was saved
    clock.advance(store.session_save_interval)
    bob.put("k", 9, keep_both=True)
    at = s.position
    s.put("k", 9, keep_both=True)
    assert kept() == (clock.now(), at)  # saved with this write, as of the answer before it


def test_a_restart_resumes_a_named_session_repeating_some_news_and_skipping_none(
    make_store: Callable[..., Store],
) -> None:
    first = make_store()
    bob = first.session("bob")
    s = first.session("alice", name="alice-1")
    s.get("k")
    a = bob.put("k", 1).pos
    b = bob.put("other", 1).pos
    shown = positions(s.get("k").news) + positions(s.news().events)
    assert shown == [a, b]
    store_clock = first.clock
    assert isinstance(store_clock, VirtualClock)
    store_clock.advance(first.session_save_interval)
    mine = s.put("mine", 1)  # a save is due: it rides on this write, the session as of its last answer
    c = bob.put("k", 2, context=bob.get("k").context).pos
    shown += positions(s.get("k").news)
    # the server dies here (no close, no save); another one opens the same store
    second = make_store()
    resumed = second.session("alice", name="alice-1")
    assert "k" in resumed.interest
    again = positions(resumed.get("k").news) + positions(resumed.news().events)
    assert set(shown) | set(again) == {a, b, c}  # nothing skipped...
    assert again == [c]  # ...and only the answer after the last save repeats
    assert mine.pos not in again


def test_closing_a_store_keeps_its_named_sessions(make_store: Callable[..., Store]) -> None:
    first = make_store()
    bob = first.session("bob")
    s = first.session("alice", name="alice-1")
    w = bob.put("k", 1).pos
    assert positions(s.news().events) == [w]
    first.close()
    assert make_store().session("alice", name="alice-1").news().events == []


def test_a_new_named_session_is_kept_from_its_first_position(make_store: Callable[..., Store]) -> None:
    first = make_store()
    first.session("alice", name="fresh")
    w = first.session("bob").put("k", 1).pos
    # a restart before the session answered anything still starts it where it began
    assert positions(make_store().session("alice", name="fresh").news().events) == [w]


def test_a_named_session_belongs_to_one_agent(store: Store) -> None:
    store.session("alice", name="s").close()
    with pytest.raises(Invalid) as e:
        store.session("bob", name="s")
    assert e.value.field == "session" and "alice" in e.value.message
    store.session(None, name="s")  # reads need no agent


def test_idle_named_sessions_are_forgotten_after_the_retention(make_store: Callable[..., Store], clock: VirtualClock) -> None:
    store = make_store()
    store.session_retention = 3600.0
    store.session("alice", name="idle").close()
    store.session("alice", name="busy").close()
    clock.advance(3000)
    busy = store.session("alice", name="busy")
    store.session("bob").put("k", 1)
    busy.get("k")
    busy.close()  # saved: busy is 0 s idle, idle is 3000 s idle
    clock.advance(1000)
    store2 = make_store()
    store2.session_retention = 3600.0
    store2.session("alice", name="other").close()  # a save cleans up: idle is 4000 s idle
    with store2.backend.transaction(write=False) as tx:
        assert tx.load_session("idle") is None
        assert tx.load_session("busy") is not None


def test_a_named_session_used_every_day_with_nothing_new_is_kept_and_an_unused_one_forgotten(
    faulty: tuple[Store, Faulty],
) -> None:
    """Retention forgets sessions nobody uses, not sessions nobody writes to: a session resumed
    and closed every day (a CLI agent with nothing new), or one held open and read every day
    (a server's), is kept for 40 days of a 30-day retention; one left alone 31 days is
    forgotten.  Being used costs a save about once a day, not one per resume or read."""
    store, backend = faulty
    clock = store.clock
    assert isinstance(clock, VirtualClock)
    day = 24 * 3600.0
    assert store.session_retention == 30 * day  # the default
    store.session("alice", name="daily").close()
    held = store.session("carol", name="held")
    held.get("k")
    store.session("dave", name="idle").close()
    idle_since = clock.now()

    def saved(name: str) -> float | None:
        with store.backend.transaction(write=False) as tx:
            row = tx.load_session(name)
        return None if row is None else row.saved

    for d in range(1, 41):
        clock.advance(day)
        backend.writes = 0
        store.session("alice", name="daily").close()  # nothing new: no news, no key read
        held.get("k")  # nothing new either
        daily_writes = backend.writes
        clock.advance(600)
        backend.writes = 0
        store.session("alice", name="daily").close()  # again within the day
        held.get("k")
        later_writes = backend.writes
        store.session("erin", name=f"day-{d}").close()  # a save elsewhere, which forgets idle sessions
        assert saved("daily") is not None and saved("held") is not None, d
        assert (saved("idle") is None) == (clock.now() - idle_since > store.session_retention), d
        assert saved("daily") == saved("held") == clock.now() - 600  # saved again by the day's first use
        assert (daily_writes, later_writes) == (2, 0)  # once each a day; within the day, no write at all
    bob = store.session("bob")
    w = bob.put("k", 1)
    assert positions(store.session("alice", name="daily").news().events) == [w.pos]  # still where it was
    assert positions(held.news().events) == [w.pos]
    assert store.session("dave", name="idle").news().events == []  # forgotten: it starts at the head


def test_sessions_used_from_threads_deliver_each_event_once(store: Store) -> None:
    """A threaded server may answer two requests of one session at once."""
    s = store.session("alice")
    bob = store.session("bob")
    written = [p for i in range(40) for p in [bob.put(f"k{i % 4}", i, keep_both=True).pos]]
    got: list[list[int]] = [[], []]
    barrier = threading.Barrier(2)

    def reader(i: int) -> None:
        barrier.wait()
        for _ in range(30):
            got[i] += positions(s.news(limit=3).events)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got[0] + got[1]) == written
    assert store.news_limit == _api.DEFAULT_NEWS_LIMIT


def test_a_per_call_news_limit_never_writes_the_stores_shared_limit(store: Store) -> None:
    """Session.news(limit=…) and the agent's news verb pass their limit down: they never set
    ``store.news_limit`` even for the length of a call, which a threaded server shares
    between every session (two concurrent calls could leave it changed for everyone)."""
    from comity.work import Agent

    assigned: list[int] = []

    class Watched(type(store)):  # type: ignore[misc]
        @property
        def news_limit(self) -> int:
            return self.__dict__["news_limit"]

        @news_limit.setter
        def news_limit(self, value: int) -> None:
            assigned.append(value)
            self.__dict__["news_limit"] = value

    store.__class__ = Watched
    alice, bob, carol = store.session("alice"), store.session("bob"), Agent(store.session("carol"))
    for i in range(5):
        bob.put(f"x{i}", i)
    assert len(alice.news(limit=2).events) == 2
    assert len(carol.news(limit=3)["news"]) == 3
    assert assigned == [] and store.news_limit == _api.DEFAULT_NEWS_LIMIT


def test_closing_a_store_writes_only_the_named_sessions_with_something_to_keep(faulty: tuple[Store, Faulty]) -> None:
    """Store.close saves its named sessions as of their last answer: one that has been shown
    something since its last save is written; one with nothing new opens no write transaction."""
    store, backend = faulty
    quiet = store.session("alice", name="quiet")
    moved = store.session("bob", name="moved")
    quiet.save()
    moved.save()
    w = store.session("carol").put("k", 1)
    moved.news()  # shown carol's put: its position moved since its save
    backend.writes = 0
    quiet.save()  # nothing new since its last save
    assert backend.writes == 0
    with backend.transaction(write=False) as tx:
        assert tx.load_session("moved").position < w.pos  # type: ignore[union-attr]
    store.close()
    assert backend.writes == 1  # moved's save, and nothing for quiet
