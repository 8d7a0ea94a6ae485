"""What one agent session can do: the verbs of the table (:mod:`comity.work.verbs`), each
answering one JSON object.

Every face is this class over a transport: the HTTP API and the MCP server call it by
name (:meth:`Agent.call`), the remote client mirrors it, the CLI maps its commands onto
it.  Every answer carries ``news`` (what others changed, since this session last looked,
in what it touched) and ``stale`` (the keys and tasks whose remembered context that news
has put out of date), because agent hosts drop notifications (docs/design.md).

An :class:`Agent` is one *session*: it remembers the context of each key and task it
last read or wrote, so ``write`` and ``task_claim`` are checked against what this
session saw without the agent copying tokens around.  Two sessions of one agent never
share what they remember; losing it is safe (a write is then refused as stale, and the
agent re-reads).  docs/faces.md says what a session is on every face.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..coord import agents as agent_statuses
from ..coord import heartbeat as send_heartbeat
from ..coord import next_number, reservations, reserve, reserve_block
from ..coord import release as release_reservations
from ..errors import Invalid
from ..store import Create, Delete, Put, Session, Update, Written
from ._change_verbs import ChangeVerbs
from ._migration_verbs import MigrationVerbs
from .changes import Changes, inbox_key
from .checks import Runner
from .decisions import DECISIONS_KEY, decisions
from .numbers import Worktrees
from .tasks import Board, Request, parse_task_id, task_key
from .verbs import LEASE_TTL_S, RESERVATION_TTL_S, VERB, bind, request_digest
from .why import why as causal_history

__all__ = ["Agent"]

_REMEMBERED_MAX = 10_000  # contexts one session remembers; the oldest is forgotten first (safe: a re-read)


def _keyring() -> Any:
    from ._keys import Keyring  # cryptography loads only where a key is used

    return Keyring()


class Agent(ChangeVerbs, MigrationVerbs):
    """One agent session's verbs over one store session (the change verbs: :mod:`._change_verbs`;
    numbered files: :mod:`._migration_verbs`)."""

    def __init__(
        self,
        session: Session,
        *,
        runner: Runner | None = None,
        signing: bool = True,
        worktrees: Worktrees | None = None,
        about: dict[str, Any] | None = None,
    ) -> None:
        """``runner`` re-executes checks (default: a clean git worktree of the repository
        here); ``signing`` lets ``attest`` sign with this user's private key (a server,
        which holds no agent's key, passes False and checks the envelopes it is sent);
        ``worktrees`` finds the caller's git worktree for ``migration_new`` (a face that runs
        beside the caller's files passes ``comity.repo.worktree.Worktrees``; without it
        those verbs are refused); ``about`` adds to ``whoami`` how the face chose the agent
        and the store."""
        self.session = session
        self.worktrees = worktrees
        self.about = dict(about or {})
        # News the verbs collect (the board reads and writes inside them) waits in the
        # session until an answer hands it out: only that counts as delivering it.
        session.holds_news = True
        self.board = Board(session)
        self.changes = Changes(session, runner=runner, keyring=_keyring() if signing else None)
        if session.agent is not None:
            session.interest.add(inbox_key(session.agent))  # news about its changes, in every session of it
        # key -> (the context this session last saw, the log position that context covers)
        self._contexts: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._stale: set[str] = set()

    # ------------------------------------------------------------ memory
    @property
    def contexts(self) -> dict[str, str]:
        """The context this session remembers of each key (and ``@task/…`` of each task)."""
        return {k: c for k, (c, _) in self._contexts.items()}

    def remembered(self, key: str) -> str | None:
        hit = self._contexts.get(key)
        return None if hit is None else hit[0]

    def _remember(self, key: str, context: str | None) -> None:
        if context is None:
            return
        try:
            covers = self.session.store.codec.open(context, key).pos
        except Invalid:
            return  # not a context of this key: nothing to remember
        self._contexts[key] = (context, covers)
        self._contexts.move_to_end(key)
        self._stale.discard(key)
        if len(self._contexts) > _REMEMBERED_MAX:
            gone, _ = self._contexts.popitem(last=False)
            self._stale.discard(gone)

    def _task_context(self, task: dict[str, Any]) -> None:
        self._remember(task_key(task["id"]), task.get("context"))

    def _request(self, verb: str, request_id: str | None, **given: Any) -> Request | None:
        """The request a call with ``request_id`` is: "the same request" is the same verb with the
        same arguments as the caller gave them (before this session filled in a context it
        remembers, so that a retry after the write moved that context is still the same)."""
        if request_id is None:
            return None
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            raise Invalid("request_id", "must be a string of 1 to 128 characters")
        return Request(request_id, request_digest(self.session.agent, verb, given))

    def _written(self, op: Put | Create | Delete, request: Request | None) -> Written:
        r = self.session.txn(ops=[op], request_id=None if request is None else request.id, digest=None if request is None else request.digest)
        res = r.results[0]
        return Written(res["key"], res["op"], res["values"], res["context"], res["pos"], r.news, r.news_truncated, r.replayed)

    # ------------------------------------------------------------ answers
    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        # Whatever the verb did inside (the task board reads and writes on the agent's
        # behalf), the news it collected waits in the session: deliver all of it, once.
        # A verb that ran a transaction answers as of its last one (no second read of the
        # store); one that ran none catches up first.
        news, truncated = self.session.deliver()
        for n in news:
            hit = self._contexts.get(n.get("key", ""))
            if hit is not None and n.get("pos", 0) > hit[1]:
                self._stale.add(n["key"])  # an event this session's context of the key did not see
        out = {k: v for k, v in body.items() if k not in ("news", "news_truncated")}
        out["news"] = news
        out["stale"] = sorted(self._stale)
        if truncated:
            out["news_truncated"] = True
        return out

    # ------------------------------------------------------------ identity
    def info(self) -> dict[str, Any]:
        return self._answer(self.session.store.info())

    def whoami(self) -> dict[str, Any]:
        s = self.session
        return self._answer(
            {
                "agent": s.agent,
                "session": s.id,
                "store": s.store.location,
                "store_id": s.store.store_id,
                "replica": s.store.replica_id,
                "position": s.position,
                **self.about,
            }
        )

    # --------------------------------------------------------------- keys
    def read(self, key: str) -> dict[str, Any]:
        v = self.session.get(key)
        self._remember(key, v.context)
        body = {"key": v.key, "values": v.values, "context": v.context}
        if v.type is not None:
            body["type"] = v.type
        return self._answer(body)

    def write(
        self,
        key: str,
        value: Any,
        context: str | None = None,
        keep_both: bool = False,
        task: str | None = None,
        token: int | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        req = self._request("write", request_id, key=key, value=value, context=context, keep_both=keep_both, task=task, token=token)
        ctx = context if context is not None else self.remembered(key)
        if task is None and token is None:
            w = self._written(Put(key, value, ctx, bool(keep_both)), req)
        else:
            if task is None or token is None:
                raise Invalid("token" if token is None else "task", "a write under a task's lease needs both task and token (your claim's)")
            w = self.board.write(key, value, task=task, token=token, context=ctx, keep_both=bool(keep_both), request=req)
        self._remember(key, w.context)
        return self._answer(w.to_json())

    def create(self, key: str, value: Any, request_id: str | None = None) -> dict[str, Any]:
        w = self._written(Create(key, value), self._request("create", request_id, key=key, value=value))
        self._remember(key, w.context)
        return self._answer(w.to_json())

    def delete(self, key: str, context: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        req = self._request("delete", request_id, key=key, context=context)
        ctx = context if context is not None else self.remembered(key)
        w = self._written(Delete(key, ctx), req)
        self._remember(key, w.context)
        return self._answer(w.to_json())

    def update(self, key: str, op: str, arg: Any = None, type: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        req = self._request("update", request_id, key=key, op=op, arg=arg, type=type)
        r = self.session.txn(ops=[Update(key, op, arg, type)], request_id=None if req is None else req.id, digest=None if req is None else req.digest)
        res = dict(r.results[0])
        self._remember(key, res["context"])
        if r.replayed:
            res["replayed"] = True
        return self._answer(res)

    def news(self, limit: int = 50) -> dict[str, Any]:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise Invalid("limit", f"must be an integer in [1, 1000], got {limit!r}")
        n = self.session.news(limit=limit)
        suspects = [
            {"op": "suspected", "agent": a.agent, "phi": round(a.phi, 2), "holds": [h["resource"] for h in a.holds]}
            for a in agent_statuses(self.session)
            if a.suspected
        ]
        return self._answer({"position": n.position, "suspected": suspects})

    def log(self, key: str | None = None, after: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._answer({"events": self.session.log(key, after=after, limit=limit)})

    def keys(self, prefix: str = "", limit: int = 200, deleted: bool = False) -> dict[str, Any]:
        return self._answer({"keys": self.session.keys(prefix, limit=limit, deleted=bool(deleted))})

    # -------------------------------------------------------------- tasks
    def task_add(
        self,
        title: str,
        body: str = "",
        deps: list[str] | None = None,
        labels: list[str] | None = None,
        assignee: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        req = self._request("task_add", request_id, title=title, body=body, deps=deps, labels=labels, assignee=assignee)
        t = self.board.add(title, body=body, deps=_list(deps, "deps"), labels=_list(labels, "labels"), assignee=assignee, request=req)
        self._task_context(t)
        return self._answer(t)

    def task_list(self, state: str | None = None) -> dict[str, Any]:
        return self._answer({"tasks": self.board.tasks(status=state)})

    def task_ready(self) -> dict[str, Any]:
        tasks = self.board.ready()
        for t in tasks:
            self._task_context(t)
        return self._answer({"tasks": tasks})

    def task_show(self, id: str) -> dict[str, Any]:
        t = self.board.show(id)
        self._task_context(t)
        return self._answer(t)

    def task_assign(self, id: str, agent: str | None, request_id: str | None = None) -> dict[str, Any]:
        t = self.board.assign(id, agent, request=self._request("task_assign", request_id, id=id, agent=agent))
        self._task_context(t)
        return self._answer(t)

    def task_claim(
        self, id: str, context: str | None = None, ttl: float = LEASE_TTL_S, steal: bool = False, request_id: str | None = None
    ) -> dict[str, Any]:
        req = self._request("task_claim", request_id, id=id, context=context, ttl=ttl, steal=steal)
        tid = parse_task_id(id)
        ctx = context if context is not None else self.remembered(task_key(tid))
        c = self.board.claim(tid, context=ctx, ttl=ttl, steal=bool(steal), request=req)
        self._task_context(c.task)
        return self._answer(c.to_json())

    def task_claim_next(self, ttl: float = LEASE_TTL_S, request_id: str | None = None) -> dict[str, Any]:
        c = self.board.claim_next(ttl=ttl, request=self._request("task_claim_next", request_id, ttl=ttl))
        self._task_context(c.task)
        return self._answer(c.to_json())

    def task_renew(self, id: str, token: int, ttl: float | None = None, request_id: str | None = None) -> dict[str, Any]:
        req = self._request("task_renew", request_id, id=id, token=token, ttl=ttl)
        return self._answer(self.board.renew(id, token, ttl=ttl, request=req))

    def task_checkpoint(self, id: str, token: int, note: str, request_id: str | None = None) -> dict[str, Any]:
        t = self.board.checkpoint(id, token, note, request=self._request("task_checkpoint", request_id, id=id, token=token, note=note))
        self._task_context(t)
        return self._answer(t)

    def task_complete(self, id: str, token: int, result: str = "", request_id: str | None = None) -> dict[str, Any]:
        t = self.board.done(id, token, result=result, request=self._request("task_complete", request_id, id=id, token=token, result=result))
        self._task_context(t)
        return self._answer(t)

    def task_release(self, id: str, token: int, request_id: str | None = None) -> dict[str, Any]:
        t = self.board.release(id, token, request=self._request("task_release", request_id, id=id, token=token))
        self._task_context(t)
        return self._answer(t)

    def task_fail(self, id: str, token: int, reason: str = "", request_id: str | None = None) -> dict[str, Any]:
        t = self.board.fail(id, token, reason=reason, request=self._request("task_fail", request_id, id=id, token=token, reason=reason))
        self._task_context(t)
        return self._answer(t)

    # ------------------------------------------------------- coordination
    def seq_next(self, name: str, request_id: str | None = None) -> dict[str, Any]:
        if self.session.agent is None:
            raise Invalid("agent", "taking a number needs an agent name")
        req = self._request("seq_next", request_id, name=name)
        value = next_number(self.session, name, request_id=None if req is None else req.id, digest=None if req is None else req.digest)
        return self._answer({"sequence": name, "value": value})

    def seq_reserve(self, name: str, count: int, request_id: str | None = None) -> dict[str, Any]:
        if self.session.agent is None:
            raise Invalid("agent", "taking numbers needs an agent name")
        req = self._request("seq_reserve", request_id, name=name, count=count)
        return self._answer(reserve_block(self.session, name, count, request=None if req is None else (req.id, req.digest)))

    def reserve_paths(self, paths: list[str], ttl: float = RESERVATION_TTL_S, shared: bool = False, request_id: str | None = None) -> dict[str, Any]:
        req = self._request("reserve_paths", request_id, paths=paths, ttl=ttl, shared=shared)
        got = reserve(self.session, _list(paths, "paths"), ttl=ttl, shared=bool(shared), request=None if req is None else (req.id, req.digest))
        # Decisions on these paths come with the grant; ones recorded later come as news.
        self.session.interest.add(DECISIONS_KEY)
        ds = [d for d in decisions(self.session) if any(d.covers(r.pattern) for r in got)]
        brief = [{"id": d.id, "agent": d.agent, "paths": d.paths, "text": d.text, "commit": d.commit} for d in ds]
        return self._answer({"reservations": [r.to_json() for r in got], "decisions": brief})

    def release_paths(self, paths: list[str], request_id: str | None = None) -> dict[str, Any]:
        req = self._request("release_paths", request_id, paths=paths)
        gone = release_reservations(self.session, _list(paths, "paths"), request=None if req is None else (req.id, req.digest))
        return self._answer({"released": gone})

    def reservations(self) -> dict[str, Any]:
        return self._answer({"reservations": [r.to_json() for r in reservations(self.session)]})

    def agents(self, ttl: float = LEASE_TTL_S) -> dict[str, Any]:
        return self._answer({"agents": [a.to_json() for a in agent_statuses(self.session, ttl=ttl)]})

    def why(self, target: str) -> dict[str, Any]:
        return self._answer(causal_history(self.session, target))

    def heartbeat(self) -> dict[str, Any]:
        """A host's sign of life.  Answers without news: a background heartbeat has no one to
        show it to, so what it saw waits in the session for the agent's next answer."""
        pos = send_heartbeat(self.session)
        self.session.set_aside()  # the next answer is still as fresh as its own call
        return {"pos": pos}

    # -------------------------------------------------------------- calls
    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call a verb by name with JSON arguments, checked against the table (the HTTP and
        MCP faces call this): unknown verbs and arguments and wrong types are ``Invalid``."""
        bound = bind(verb, args)
        fn: Callable[..., dict[str, Any]] = getattr(self, VERB[verb].name)
        return fn(**bound)


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(field, f"must be a list, e.g. [\"T-1\"], got {type(value).__name__}")
    return list(value)
