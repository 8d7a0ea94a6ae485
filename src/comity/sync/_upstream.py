"""A replica's authority: its upstream, reached over a link, and what happens when it cannot be.

A replica runs reads, writes with contexts, CRDT updates and notes itself, online or not.
What only the authority may decide (create, sequences, leases and their tokens, comity's
coordinated keys, a bounded counter's rights beyond this replica's share) is forwarded to
the upstream, which is itself a replica or the authority: the transaction runs there, as
the same agent and session with the same request id (so a retry returns the recorded
outcome), then the keys it touched come back at once and one batch of the upstream's
news is pulled.  An upstream that cannot be reached within a short timeout makes it fail
fast: :class:`~comity.errors.Unavailable`, saying when the upstream was last reached.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from ..errors import ComityError, Invalid, StaleContext, Unavailable
from ..runtime import Transport
from ..store import Store, Update
from ..store._txn import Caller, Guard, Op, event_json, named_writers
from ._exchange import apply, vector
from ._link import Link, connect
from ._wire import encode_steps, error_in

__all__ = ["Upstream", "mark_reached", "last_reached", "unreachable", "FORWARD_TIMEOUT_S"]

FORWARD_TIMEOUT_S = 5.0
AUTH_SETTING = "upstream_auth"
REACHED_SETTING = "last_reached"


def _timeout() -> float:
    raw = os.environ.get("COMITY_UPSTREAM_TIMEOUT")
    try:
        return float(raw) if raw else FORWARD_TIMEOUT_S
    except ValueError:
        raise Invalid("COMITY_UPSTREAM_TIMEOUT", f"must be a number of seconds, got {raw!r}") from None


def mark_reached(store: Store) -> None:
    with store.backend.transaction(write=True) as tx:
        tx.set_setting(REACHED_SETTING, repr(store.clock.now()))


def last_reached(store: Store) -> float | None:
    with store.backend.transaction(write=False) as tx:
        raw = tx.setting(REACHED_SETTING)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def unreachable(store: Store, reason: str) -> Unavailable:
    """The error of a replica cut off from its upstream, saying when it was last reached."""
    when = last_reached(store)
    if when is None:
        seen = "it has never been reached from here"
    else:
        ago = max(0.0, store.clock.now() - when)
        stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        seen = f"it was last reached {stamp} ({_ago(ago)} ago)"
    return Unavailable(
        f"the upstream {store.upstream} cannot be reached ({reason}); {seen}. This replica reads, writes and"
        " merges on its own; what only the authority decides (claims, leases, create, sequences, reservations)"
        " waits for it, except what was escrowed here beforehand (sequence blocks, counter rights)",
        upstream=store.upstream,
        last_reached=when,
    )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class Upstream:
    """The :class:`~comity.store._api.Authority` of a replica: its upstream over a link."""

    def __init__(self, store: Store, *, transport: Transport | None = None, timeout: float | None = None) -> None:
        self.store = store
        self.transport = transport
        self.timeout = timeout
        self._link: Link | None = None

    def link(self, timeout: float | None = None) -> Link:
        """A link to the upstream (opened once; a server link per request)."""
        if self._link is None:
            store = self.store
            where = store.upstream
            if where is None:
                raise Invalid("store", "this store has no upstream")
            if self.transport is not None:
                self._link = Link(self.transport, store.replica_id, where)
            else:
                with store.backend.transaction(write=False) as tx:
                    auth = tx.setting(AUTH_SETTING) or None
                limit = timeout if timeout is not None else (self.timeout if self.timeout is not None else _timeout())
                try:
                    self._link = connect(where, src=store.replica_id, auth=auth, timeout=limit)
                except Unavailable as e:
                    raise unreachable(store, str(e.details.get("reason", e.message))) from None
        return self._link

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
            self._link = None

    def forward(
        self, caller: Caller, request_id: str, record: bool, guards: list[Guard], ops: list[Op], system: bool,
        digest: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        store = self.store
        link = self.link()
        ops = [self._escrow(o) for o in ops]
        message = {
            "type": "txn", "store": store.store_id, "agent": caller.agent, "session": caller.session,
            "request_id": request_id, "record": record, "system": system, "digest": digest,
            "guards": encode_steps(guards), "ops": encode_steps(ops),
        }  # fmt: skip
        try:
            answer = link.request(message)
        except Unavailable as e:
            raise unreachable(store, str(e.details.get("reason", e.message))) from None
        if answer.get("batch") is not None:
            apply(store, answer["batch"])  # the keys it touched, as the authority has them now
        self._catch_up(link)
        if answer["ok"] is not True:
            err = error_in(answer.get("error"), str(store.upstream))
            if isinstance(err, Unavailable) and link.peer is not None:
                # A database opened here (PostgreSQL) that its connections cannot reach: the
                # upstream is cut off, as a server that does not answer is.
                raise unreachable(store, err.message) from None
            if isinstance(err, StaleContext) and err.news and all(isinstance(n, dict) for n in err.news):
                err = self._refusal_here(err)
            raise err
        return self._here(answer), bool(answer.get("replayed"))

    def _escrow(self, o: Op) -> Op:
        # "escrow N" on a replica: the authority transfers N of its rights to this replica.
        if isinstance(o, Update) and o.op == "escrow":
            return Update(o.key, "transfer", {"to": self.store.replica_id, "n": o.arg if o.arg is not None else 1}, o.type)
        return o

    def _catch_up(self, link: Link) -> None:
        """Pull one batch of the upstream's news (best effort: the answer is already here)."""
        store = self.store
        try:
            with store.backend.transaction(write=False) as tx:
                have = vector(tx, store.replica_id)
            apply(store, link.call({"type": "pull", "store": store.store_id, "have": have})["batch"])
        except ComityError:
            return
        mark_reached(store)

    def _refusal_here(self, err: StaleContext) -> StaleContext:
        """The upstream's refusal in this replica's terms: each event its news names as this log
        holds it (found by its dot's replica and its origin position, which name an event
        everywhere), or, not pulled here yet, without a position (its ``dot`` and
        ``origin_pos`` say where it was written); the message names the same."""
        news: list[dict[str, Any]] = []
        with self.store.backend.transaction(write=False) as tx:
            for n in err.news:
                dot, where = n.get("dot"), n.get("origin_pos", n.get("pos"))
                if not (isinstance(dot, list) and dot and isinstance(dot[0], str) and isinstance(where, int)):
                    news.append({k: v for k, v in n.items() if k != "pos"})
                    continue
                found = tx.events_from(dot[0], where - 1, 1)
                if found and found[0].origin == where:
                    news.append(event_json(found[0]))
                else:
                    news.append({**{k: v for k, v in n.items() if k != "pos"}, "origin_pos": where})
        message = err.message.replace(named_writers(err.news), named_writers(news), 1)
        details = {k: v for k, v in err.details.items() if k not in ("key", "news", "rejected")}
        return StaleContext(message, key=err.key, news=news, rejected=err.rejected, next=err.next, **details)

    def _here(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The upstream's outcome in this replica's terms: contexts sealed with this log's head
        (a read here has seen what came back), positions of events this log now holds."""
        store = self.store
        outcome = dict(answer["outcome"])
        origin = str(answer.get("replica", ""))
        with store.backend.transaction(write=False) as tx:
            head = tx.head()
            results = []
            for r in outcome.get("results", []):
                r = dict(r)
                if isinstance(r.get("key"), str) and isinstance(r.get("context"), str):
                    try:
                        ctx = store.codec.open(r["context"], r["key"])
                        r["context"] = store.codec.seal(r["key"], ctx.seen, head)
                    except ComityError:
                        pass
                if isinstance(r.get("pos"), int) and origin:
                    found = tx.events_from(origin, r["pos"] - 1, 1)
                    if found and found[0].origin == r["pos"]:
                        r["pos"] = found[0].pos
                results.append(r)
        outcome["results"] = results
        outcome["pos"] = head
        outcome["appended"] = 0
        return outcome

