"""The store's edges, written for the mutants the conformance suite let through
(docs/mutation.md): sequences as the store issues them, each fencing refusal's words and
details, the shape of a read, listings, request digests, field names in multi-op errors,
and when named sessions and recorded outcomes are saved and forgotten."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import comity
from comity.errors import Fenced, Invalid, LeaseExpired
from comity.runtime import VirtualClock
from comity.store import Acquire, Create, Holds, Next, Put, Release, Renew, Store


def _acquire(s: comity.Session, resource: str = "r", ttl: float = 10.0, steal: bool = False) -> int:
    return int(s.txn(ops=[Acquire(resource, ttl, steal)]).results[0]["token"])


# ------------------------------------------------------------------ sequences


def test_next_issues_one_two_three_as_logged_events(store: Store) -> None:
    s = store.session("alice")
    got = [s.txn(ops=[Next("jobs")]).results[0] for _ in range(3)]
    assert [(r["sequence"], r["value"]) for r in got] == [("jobs", 1), ("jobs", 2), ("jobs", 3)]
    log = s.log("@seq/jobs")
    assert [(e["op"], e["value"], e["pos"]) for e in log] == [("next", n, r["pos"]) for n, r in zip((1, 2, 3), got)]
    assert s.get("@seq/jobs").values == [3]
    assert s.txn(ops=[Next("other")]).results[0]["value"] == 1  # each sequence its own


# --------------------------------------------------------------------- fencing


def test_each_fencing_refusal_says_why_with_its_details(store: Store, clock: VirtualClock) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    with pytest.raises(Fenced) as e:
        alice.txn(guards=[Holds("r", 1)])
    assert e.value.message == "no lease on 'r' was ever granted with token 1"
    assert (e.value.details["resource"], e.value.details["token"]) == ("r", 1)

    t1 = _acquire(alice)
    t2 = _acquire(bob, steal=True)
    with pytest.raises(Fenced) as e:
        alice.txn(guards=[Holds("r", t1)])
    assert e.value.message == f"token {t1} for 'r' was superseded by token {t2} (held by bob); stop: another agent took over"
    assert e.value.details == {"resource": "r", "token": t1, "current": t2, "holder": "bob"}

    with pytest.raises(Fenced) as e:
        alice.txn(guards=[Holds("r", t2)])
    assert e.value.message == f"the lease on 'r' with token {t2} is held by bob, not alice"
    assert e.value.details == {"resource": "r", "token": t2, "holder": "bob"}

    bob.txn(ops=[Release("r", t2)])
    with pytest.raises(Fenced) as e:
        bob.txn(guards=[Holds("r", t2)])
    assert e.value.message == f"the lease on 'r' with token {t2} was released"
    assert e.value.details == {"resource": "r", "token": t2}
    with pytest.raises(Fenced) as e:
        alice.txn(guards=[Holds("r", t1)])
    assert "(held by nobody)" in e.value.message

    t3 = _acquire(alice, ttl=10)
    clock.advance(12.5)
    with pytest.raises(LeaseExpired) as x:
        alice.txn(guards=[Holds("r", t3)])
    assert x.value.message.startswith(f"the lease on 'r' with token {t3} expired 2.5s ago")
    assert x.value.details["resource"] == "r" and x.value.details["token"] == t3


def test_a_bad_token_is_invalid_naming_what_a_token_is(store: Store) -> None:
    s = store.session("alice")
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Renew("r", 0, 10)])
    assert (e.value.field, e.value.message) == ("token", "token: must be a positive integer fencing token from an acquire, got 0")


def test_errors_in_a_transaction_of_several_ops_name_the_op(store: Store) -> None:
    s = store.session("alice")
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Put("ok", 1), Put("", 2)])
    assert e.value.field == "ops[1].key"
    assert e.value.message == "ops[1].key: must not be empty; use a path-like name such as 'files/db/0267.sql'"
    with pytest.raises(Invalid) as e:
        s.txn(ops=[Put("ok", 1), Renew("r", -1, 5)])
    assert e.value.field == "ops[1].token"
    assert e.value.message == "ops[1].token: must be a positive integer fencing token from an acquire, got -1"


# ------------------------------------------------------------------- reads


def test_a_read_as_json(store: Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    bob.get("k")
    alice.put("k", 1)
    v = bob.get("k")
    assert v.to_json() == {"key": "k", "values": [1], "context": v.context, "news": v.news}
    assert len(v.news) == 1 and "type" not in v.to_json() and "news_truncated" not in v.to_json()
    alice.update("c", "inc", 1, type="gcounter")
    assert bob.get("c").to_json()["type"] == "gcounter"


def test_listings_leave_out_tombstones_and_comitys_own_keys_unless_asked(store: Store) -> None:
    s = store.session("alice")
    s.put("k/a", 1)
    w = s.put("k/b", 1)
    s.delete("k/b", context=w.context)
    s.txn(ops=[Next("n")])
    assert s.keys("k/") == ["k/a"] and s.keys() == ["k/a"]
    assert s.keys("k/", deleted=True) == ["k/a", "k/b"]
    assert s.keys("@seq/") == ["@seq/n"]
    with store.backend.transaction(write=False) as tx:
        assert tx.keys("k/", 10) == ["k/a"]  # live only by default
        assert tx.keys("", 10, live_only=False) == ["k/a", "k/b"]
    with pytest.raises(Invalid) as e:
        s.keys(1)  # type: ignore[arg-type]
    assert (e.value.field, e.value.message) == ("prefix", "prefix: must be a string")


# ----------------------------------------------------------------- request ids


def test_a_retry_is_recognised_whatever_the_order_of_an_objects_keys(store: Store) -> None:
    s = store.session("alice")
    first = s.put("k", {"a": 1, "b": 2}, request_id="q-1")
    again = s.put("k", {"b": 2, "a": 1}, request_id="q-1")
    assert again.replayed and again.pos == first.pos


def test_a_request_id_reused_for_other_guards_is_invalid(store: Store) -> None:
    s = store.session("alice")
    t = _acquire(s)
    s.txn(guards=[Holds("r", t)], ops=[Put("k", 1)], request_id="q-2")
    with pytest.raises(Invalid) as e:
        s.txn(guards=[Holds("r", t + 1)], ops=[Put("k", 1)], request_id="q-2")
    assert e.value.field == "request_id"
    with pytest.raises(Invalid):
        s.txn(ops=[Create("k", 1)], request_id="q-2")  # another kind of op with the same fields
    assert s.txn(guards=[Holds("r", t)], ops=[Put("k", 1)], request_id="q-2").replayed


def test_outcomes_are_pruned_at_most_once_a_minute(make_store: Callable[..., Store], clock: VirtualClock) -> None:
    store = make_store(request_retention=100.0)
    s = store.session("alice")
    s.put("k", 1, request_id="old")
    clock.advance(150)
    s.put("k2", 1, request_id="new")  # prunes: "old" is 150 s old
    with store.backend.transaction(write=False) as tx:
        assert tx.recorded("old") is None and tx.recorded("new") is not None
    clock.advance(101)
    s.put("k3", 1, request_id="newer")  # 101 s after the last prune: prunes again
    with store.backend.transaction(write=False) as tx:
        assert tx.recorded("new") is None
    clock.advance(150)
    s.put("k4", 1, request_id="a")
    clock.advance(30)
    s.put("k5", 1, request_id="b")  # within a minute of the last prune: no pruning
    with store.backend.transaction(write=False) as tx:
        assert tx.recorded("newer") is None and tx.recorded("a") is not None


# -------------------------------------------------------------- named sessions


class _Counting:
    def __init__(self, store: Store) -> None:
        self.saves = 0
        inner = store.backend.transaction

        def transaction(*, write: bool) -> Any:
            cm = inner(write=write)
            counter = self

            class T:
                def __enter__(self) -> Any:
                    tx = cm.__enter__()

                    class P:
                        def __getattr__(self, name: str) -> Any:
                            return getattr(tx, name)

                        def save_session(self, row: Any) -> None:
                            counter.saves += 1
                            tx.save_session(row)

                    return P()

                def __exit__(self, *exc: Any) -> Any:
                    return cm.__exit__(*exc)

            return T()

        store.backend.transaction = transaction  # type: ignore[method-assign]


def test_a_named_session_with_nothing_new_is_not_saved_again(store: Store, clock: VirtualClock) -> None:
    counting = _Counting(store)
    s = store.session("alice", name="quiet")
    assert counting.saves == 1  # created
    s.save()
    clock.advance(store.session_save_interval * 3)
    s.news()  # nothing new: what was shown did not move
    s.close()
    assert counting.saves == 1
    s2 = store.session("alice", name="quiet")
    s2.get("k")  # a new key of interest: kept at the next save
    s2.close()
    assert counting.saves == 2
    with store.backend.transaction(write=False) as tx:
        row = tx.load_session("quiet")
    assert row is not None and (row.name, row.agent) == ("quiet", "alice")
    with store.session(None, name="reader") as r:
        r.get("k")
    with store.backend.transaction(write=False) as tx:
        row = tx.load_session("reader")
    assert row is not None and row.agent == "" and row.interest == ["k"]


def test_idle_sessions_are_forgotten_at_most_once_an_hour_per_handle(make_store: Callable[..., Store], clock: VirtualClock) -> None:
    store = make_store()
    store.session_retention = 100.0
    store.session("alice", name="a").close()  # saves; forgets (nothing yet)
    clock.advance(200)
    store.session("alice", name="b").close()  # an hour has not passed: "a" is kept
    with store.backend.transaction(write=False) as tx:
        assert tx.load_session("a") is not None
    clock.advance(3600)
    store.session("alice", name="c").close()  # forgets "a" and "b"
    with store.backend.transaction(write=False) as tx:
        assert tx.load_session("a") is None and tx.load_session("b") is None and tx.load_session("c") is not None


# -------------------------------------------------------------------- contexts


def test_a_context_that_is_not_a_string_is_invalid_as_the_context(store: Store) -> None:
    """The layers above (tasks, changes, replication) open contexts without naming the
    field: it is the context.  A context that is no string (an unhashable list or object
    too) is refused as such, not as a crash."""
    s = store.session("alice")
    ctx = s.get("k").context
    assert store.codec.open(ctx, "k").key == "k"
    for bad, kind in ((42, "int"), ([ctx], "list"), ({"c": ctx}, "dict")):
        with pytest.raises(Invalid) as e:
            store.codec.open(bad, "k")
        assert (e.value.field, e.value.message) == ("context", f"context: must be a context string from a read, got {kind}")
        with pytest.raises(Invalid) as e:
            s.put("k", 1, context=bad)  # type: ignore[arg-type]
        assert e.value.field == "context"


def test_a_context_of_another_store_names_both_stores(make_store: Callable[..., Store]) -> None:
    here, there = make_store("here.db"), make_store("there.db")
    ctx = there.session("bob").get("k").context
    with pytest.raises(Invalid) as e:
        here.session("alice").put("k", 1, context=ctx)
    assert e.value.message == (
        f"context: belongs to another store ({there.store_id}), not this one ({here.store_id});"
        " read the key again and pass the context it returns"
    )


def test_json_typed_by_a_person_is_parsed_or_refused_saying_how_to_quote_it() -> None:
    from comity.store._codec import parse_json

    assert parse_json('{"a": [1, "x"]}', "value") == {"a": [1, "x"]}
    assert parse_json('"hello"', "value") == "hello"
    with pytest.raises(Invalid) as e:
        parse_json("hello", "value")
    assert e.value.field == "value"
    assert e.value.message.startswith("value: is not valid JSON (Expecting value: line 1 column 1 (char 0));")
    assert e.value.message.endswith(
        "quote strings twice, e.g. '\"hello\"', or pass numbers, objects and lists as JSON"
    )
    with pytest.raises(Invalid) as e:
        parse_json(None, "arg")  # type: ignore[arg-type]
    assert e.value.field == "arg" and "is not valid JSON" in e.value.message
    with pytest.raises(Invalid) as e:
        parse_json("[" * 100_000 + "]" * 100_000, "value")
    assert (e.value.field, e.value.message) == ("value", "value: is nested too deeply; flatten it")


def test_each_refusal_of_a_context_says_what_is_wrong_with_it(store: Store) -> None:
    import base64

    from comity.store._codec import CONTEXT_MAX_CHARS

    fix = "; read the key again and pass the context it returns"
    s = store.session("alice")
    ctx = s.get("k").context
    body, mac = ctx.split(".")

    def refusal(token: object) -> str:
        with pytest.raises(Invalid) as e:
            store.codec.open(token, "k")
        assert e.value.field == "context"
        return e.value.message

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    # a seal that does not match, on a context of this store: altered (not "another store")
    altered = body + "." + ("A" if mac[0] != "A" else "B") + mac[1:]
    assert refusal(altered) == "context: was altered: its seal does not match" + fix
    assert refusal(ctx + ".x") == "context: is not a comity context (garbled or truncated)" + fix
    assert refusal("a." + mac) == "context: is not a comity context (garbled or truncated)" + fix
    # the length is checked first: at the cap a token is still read, past it it is not
    assert refusal("a" * CONTEXT_MAX_CHARS) == "context: is not a comity context (garbled or truncated)" + fix
    assert refusal("a" * (CONTEXT_MAX_CHARS + 1)) == (
        f"context: is {CONTEXT_MAX_CHARS + 1} characters; a context is at most {CONTEXT_MAX_CHARS}" + fix
    )
    # a forged payload naming a long store id: named, cut at 40 characters
    forged = b64(b'["s' + b"a" * 63 + b'","k",{},1]') + "." + mac
    assert refusal(forged) == f"context: belongs to another store (s{'a' * 39}), not this one ({store.store_id})" + fix


def test_a_context_opened_by_another_handle_keeps_its_key_and_read_position(make_store: Callable[..., Store]) -> None:
    """A context is verified, not looked up, where it was not sealed (another process, a
    restart): what it says (the key, the position of the read) survives the round trip."""
    first = make_store("s.db")
    s = first.session("alice")
    s.put("other", 0)
    v = s.get("k")
    head = s.head()
    second = make_store("s.db")  # the same store file, a handle that never sealed it
    opened = second.codec.open(v.context, "k")
    assert (opened.key, opened.pos) == ("k", head)
    w = second.session("bob").put("k", 1, context=v.context)
    assert second.session().log("k")[-1]["seen"] == head == w.pos - 1
    with pytest.raises(Invalid) as e:
        second.codec.open(v.context, "other")
    assert e.value.message == (
        "context: is the context of key 'k', not of 'other'; read the key again and pass the context it returns"
    )


def test_a_sealed_context_that_does_not_decode_is_refused_not_a_crash(store: Store) -> None:
    """Never in practice (only this store's secret seals a context), but a sealed payload that
    is not a context is refused as one that is garbled."""
    import base64

    def sealed(payload: bytes) -> str:
        def b64(b: bytes) -> str:
            return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

        return b64(payload) + "." + b64(store.codec._mac(payload))

    for payload in (b"not json", b'["s1","k"]', b'["s1","k",{},"x"]'):
        with pytest.raises(Invalid) as e:
            store.codec.open(sealed(payload), "k")
        assert (e.value.field, e.value.message) == (
            "context", "context: is not a comity context (garbled or truncated); read the key again and pass the context it returns"
        )


def test_contexts_are_url_safe_text_that_opens_anywhere_and_the_cache_of_sealed_ones_is_bounded(
    make_store: Callable[..., Store],
) -> None:
    """A context goes through command lines, URLs and JSON: unpadded URL-safe base64, two
    parts.  Every one opens in a handle that did not seal it (no character lost at either
    end), and the cache of contexts a handle sealed keeps the latest 4,096."""
    import re

    first, second = make_store("s.db"), make_store("s.db")
    s = first.session("alice")
    tokens = [(k, s.get(k).context) for k in (f"k/{i}" for i in range(300))]
    for key, token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]{16}", token), token
        assert second.codec.open(token, key).key == key
    codec = first.codec
    seen = s.get("k/0").context
    extra = [codec.seal(f"x/{i}", codec.open(seen, "k/0").seen, i) for i in range(codec._CACHE)]
    assert len(codec._sealed) == codec._CACHE == 4096
    assert tokens[0][1] not in codec._sealed and extra[-1] in codec._sealed  # the oldest went first
    assert codec.open(tokens[0][1], "k/0").key == "k/0"  # and still opens, verified


# ------------------------------------------------------------------ keys and values


def test_each_refusal_of_a_key_names_its_field_and_says_why() -> None:
    from comity.store._codec import check_key

    def refusal(key: object, field: str = "key", **kw: bool) -> tuple[str, str]:
        with pytest.raises(Invalid) as e:
            check_key(key, field, **kw)
        return e.value.field, e.value.message

    assert check_key("files/a.txt") == "files/a.txt"
    assert check_key("@seq/x", system=True) == "@seq/x"  # comity's own layers may name '@' keys
    assert refusal("@seq/x") == ("key", (
        "key: '@seq/x': keys starting with '@' are comity's own (tasks, sequences); use the task, seq or reserve commands"
    ))
    assert refusal(7, "name") == ("name", "name: must be a string, got int")
    assert refusal(None, system=True) == ("key", "key: must be a string, got NoneType")
    # after the '@', the rest is checked as any key, under the caller's field name
    assert refusal("@", "resource", system=True) == (
        "resource", "resource: must not be empty; use a path-like name such as 'files/db/0267.sql'"
    )
    assert refusal("@a b", "name", system=True)[0] == "name"
    assert refusal("@@x", system=True)[1].startswith("key: '@x': keys starting with '@'")
    long_at = "@" + "x" * 100  # a long key is quoted cut at 80 characters
    assert refusal(long_at)[1].startswith(f"key: {long_at[:80]!r}: keys starting with '@'")
    assert refusal("x" * 513) == ("key", "key: is 513 characters; keys are at most 512")
    assert check_key("x" * 512) == "x" * 512
    bad = "a b" + "x" * 100
    assert refusal(bad) == ("key", (
        f"key: {bad[:80]!r} has characters keys may not use; use letters, digits and"
        " _ . - / : + = @ , ~ (no spaces, no leading '/', no empty path segment)"
    ))


def test_each_refusal_of_a_value_says_why(store: Store) -> None:
    from comity.store._codec import dump_value

    assert dump_value({"b": 1, "a": "é"}, 100) == '{"b":1,"a":"é"}'
    with pytest.raises(Invalid) as e:
        dump_value({1, 2}, 100)
    assert e.value.message == "value: must be JSON (strings, numbers, booleans, null, lists, objects): Object of type set is not JSON serializable"
    with pytest.raises(Invalid) as e:
        dump_value(float("nan"), 100, "arg")
    assert e.value.message.startswith("arg: must be JSON (strings, numbers, booleans, null, lists, objects): Out of range float")
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(Invalid) as e:
        dump_value(deep, 1 << 30)
    assert e.value.message == "value: is nested too deeply to store; flatten it"
    assert dump_value("é" * 4, 10) == '"éééé"'  # 10 bytes: at the cap
    with pytest.raises(Invalid) as e:
        dump_value("é" * 5, 10)  # 12 bytes of JSON, 7 characters: the cap is in bytes
    assert e.value.message == (
        "value: is 12 bytes of JSON; the cap is 10 bytes (store a path or a digest instead, or raise max_value_bytes)"
    )
