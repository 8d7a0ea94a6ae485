"""What one agent can do: the verbs every face exposes, each answering one JSON object.

The MCP server's tools, the HTTP API's endpoints and the remote client are this class
over different transports; the CLI uses it too.  Every answer carries ``news`` (what
others changed, since this agent last looked, in what it touched) and ``stale`` (the
keys and tasks it read whose contexts that news makes out of date), because agent
hosts drop notifications.  It remembers the context of each key and task it last
read or wrote, so ``write`` and ``task_claim`` are checked against what the agent saw
without the agent copying tokens around.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..coord import agents as agent_statuses
from ..coord import heartbeat as send_heartbeat
from ..coord import next_number, reservations, reserve
from ..coord import release as release_reservations
from ..errors import Invalid
from ..store import Session
from ._change_verbs import ChangeVerbs
from .changes import Changes, inbox_key
from .checks import Runner
from .decisions import DECISIONS_KEY, decisions
from .tasks import Board, parse_task_id, task_key
from .why import why as causal_history

__all__ = ["Agent", "VERBS"]

# The verbs, in the order tools are listed; each is a method of Agent.
VERBS = [
    "info", "whoami", "read", "write", "create", "delete", "update", "news", "log", "keys",
    "task_add", "task_list", "task_ready", "task_show", "task_assign", "task_claim", "task_renew",
    "task_checkpoint", "task_complete", "task_release", "task_fail",
    "seq_next", "reserve_paths", "release_paths", "reservations", "agents", "why", "heartbeat",
]  # fmt: skip


def _keyring() -> Any:
    from .attestations import Keyring  # cryptography loads only where keys are used

    return Keyring()


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(field, f"must be a list, e.g. [\"T-1\"], got {type(value).__name__}")
    return list(value)


class Agent(ChangeVerbs):
    """One agent's verbs over one store session."""

    def __init__(self, session: Session, *, runner: Runner | None = None, signing: bool = True) -> None:
        """``runner`` re-executes checks (default: a clean git worktree of the repository
        here); ``signing`` lets ``attest`` sign with this user's private key (a server,
        which holds no agent's key, passes False and checks the envelopes it is sent)."""
        self.session = session
        # News the verbs collect (the board reads and writes inside them) waits in the
        # session until an answer hands it out: only that counts as delivering it.
        session.holds_news = True
        self.board = Board(session)
        self.changes = Changes(session, runner=runner, keyring=_keyring() if signing else None)
        self.contexts: dict[str, str] = {}  # key -> the context this agent last saw
        if session.agent is not None:
            session.interest.add(inbox_key(session.agent))  # news about its changes, in every session of it

    # ------------------------------------------------------------ plumbing
    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        # Whatever the verb did inside (the task board reads and writes on the agent's
        # behalf), the news it collected waits in the session: deliver all of it, once.
        self.session.catch_up()
        news, truncated = self.session.take_news()
        changed = {n["key"] for n in news}
        stale = sorted(k for k in self.contexts if k in changed)
        out = dict(body)
        out["news"] = news
        out["stale"] = stale
        if truncated:
            out["news_truncated"] = True
        return out

    def _remember(self, key: str, context: str | None) -> None:
        if context is not None:
            self.contexts[key] = context

    def _task_context(self, task: dict[str, Any]) -> None:
        self._remember(task_key(task["id"]), task.get("context"))

    def _with_news(self, result: dict[str, Any]) -> dict[str, Any]:
        result.pop("news", None)  # delivered from the session, with everything else collected
        return self._answer(result)

    # ------------------------------------------------------------ identity
    def info(self) -> dict[str, Any]:
        """Where the store is and what it holds (``comity init``)."""
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
        self, key: str, value: Any, context: str | None = None, keep_both: bool = False, request_id: str | None = None
    ) -> dict[str, Any]:
        ctx = context if context is not None else self.contexts.get(key)
        w = self.session.put(key, value, context=ctx, keep_both=bool(keep_both), request_id=request_id)
        self._remember(key, w.context)
        body = w.to_json()
        return self._answer({k: v for k, v in body.items() if k not in ("news", "news_truncated")})

    def create(self, key: str, value: Any, request_id: str | None = None) -> dict[str, Any]:
        w = self.session.create(key, value, request_id=request_id)
        self._remember(key, w.context)
        body = w.to_json()
        return self._answer({k: v for k, v in body.items() if k not in ("news", "news_truncated")})

    def delete(self, key: str, context: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        ctx = context if context is not None else self.contexts.get(key)
        w = self.session.delete(key, context=ctx, request_id=request_id)
        self._remember(key, w.context)
        body = w.to_json()
        return self._answer({k: v for k, v in body.items() if k not in ("news", "news_truncated")})

    def update(self, key: str, op: str, arg: Any = None, type: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        r = self.session.update(key, op, arg, type=type, request_id=request_id)
        res = r.results[0]
        self._remember(key, res["context"])
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

    def keys(self, prefix: str = "", limit: int = 1000, deleted: bool = False) -> dict[str, Any]:
        return self._answer({"keys": self.session.keys(prefix, limit=limit, deleted=bool(deleted))})

    # -------------------------------------------------------------- tasks
    def task_add(
        self,
        title: str,
        body: str = "",
        deps: list[str] | None = None,
        labels: list[str] | None = None,
        assignee: str | None = None,
    ) -> dict[str, Any]:
        t = self.board.add(title, body=body, deps=_list(deps, "deps"), labels=_list(labels, "labels"), assignee=assignee)
        self._task_context(t)
        return self._with_news(t)

    def task_list(self, state: str | None = None) -> dict[str, Any]:
        tasks = self.board.tasks(status=state)
        return self._answer({"tasks": tasks})

    def task_ready(self) -> dict[str, Any]:
        tasks = self.board.ready()
        for t in tasks:
            self._task_context(t)
        return self._answer({"tasks": tasks})

    def task_show(self, id: str) -> dict[str, Any]:
        t = self.board.show(id)
        self._task_context(t)
        return self._answer(t)

    def task_assign(self, id: str, agent: str | None) -> dict[str, Any]:
        t = self.board.assign(id, agent)
        self._task_context(t)
        return self._with_news(t)

    def task_claim(
        self,
        id: str | None = None,
        context: str | None = None,
        ttl: float | None = None,
        steal: bool = False,
        next: bool = False,
    ) -> dict[str, Any]:
        if next == (id is not None):
            raise Invalid("id", "give a task id, or next=true for the first ready task (not both)")
        if next:
            c = self.board.claim_next(ttl=ttl)
        else:
            tid = parse_task_id(id)
            ctx = context if context is not None else self.contexts.get(task_key(tid))
            c = self.board.claim(tid, context=ctx, ttl=ttl, steal=bool(steal))
        self._task_context(c.task)
        body = c.to_json()
        news = body.pop("news")
        return self._answer(body)

    def task_renew(self, id: str, token: int, ttl: float | None = None) -> dict[str, Any]:
        return self._answer(self.board.renew(id, token, ttl=ttl))

    def task_checkpoint(self, id: str, token: int, note: str) -> dict[str, Any]:
        t = self.board.checkpoint(id, token, note)
        self._task_context(t)
        return self._with_news(t)

    def task_complete(self, id: str, token: int, result: str = "") -> dict[str, Any]:
        t = self.board.done(id, token, result=result)
        self._task_context(t)
        return self._with_news(t)

    def task_release(self, id: str, token: int) -> dict[str, Any]:
        t = self.board.release(id, token)
        self._task_context(t)
        return self._with_news(t)

    def task_fail(self, id: str, token: int, reason: str = "") -> dict[str, Any]:
        t = self.board.fail(id, token, reason=reason)
        self._task_context(t)
        return self._with_news(t)

    # ------------------------------------------------------- coordination
    def seq_next(self, name: str) -> dict[str, Any]:
        if self.session.agent is None:
            raise Invalid("agent", "taking a number needs an agent name")
        return self._answer({"sequence": name, "value": next_number(self.session, name)})

    def reserve_paths(self, paths: list[str], ttl: float | None = None, shared: bool = False) -> dict[str, Any]:
        got = reserve(self.session, _list(paths, "paths"), ttl=3600.0 if ttl is None else ttl, shared=bool(shared))
        # Decisions on these paths come with the grant; ones recorded later come as news.
        self.session.interest.add(DECISIONS_KEY)
        ds = [d for d in decisions(self.session) if any(d.covers(r.pattern) for r in got)]
        brief = [{"id": d.id, "agent": d.agent, "paths": d.paths, "text": d.text, "commit": d.commit} for d in ds]
        return self._answer({"reservations": [r.to_json() for r in got], "decisions": brief})

    def release_paths(self, paths: list[str]) -> dict[str, Any]:
        return self._answer({"released": release_reservations(self.session, _list(paths, "paths"))})

    def reservations(self) -> dict[str, Any]:
        return self._answer({"reservations": [r.to_json() for r in reservations(self.session)]})

    def agents(self, ttl: float = 300.0) -> dict[str, Any]:
        return self._answer({"agents": [a.to_json() for a in agent_statuses(self.session, ttl=ttl)]})

    def why(self, target: str) -> dict[str, Any]:
        return self._answer(causal_history(self.session, target))

    def heartbeat(self) -> dict[str, Any]:
        """A host's sign of life.  Answers without news: a background heartbeat has no one to
        show it to, so what it saw waits in the session for the agent's next answer."""
        return {"pos": send_heartbeat(self.session)}

    # -------------------------------------------------------------- calls
    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Dispatch a verb by name with JSON arguments (for the HTTP and MCP faces)."""
        if verb not in VERBS:
            raise Invalid("verb", f"unknown verb {verb!r}; use one of: {', '.join(VERBS)}")
        fn: Callable[..., dict[str, Any]] = getattr(self, verb)
        if not isinstance(args, (dict, type(None))):
            raise Invalid("args", f"{verb}: arguments must be a JSON object")
        args = dict(args or {})
        try:
            inspect.signature(fn).bind(**args)
        except TypeError as e:
            params = ", ".join(inspect.signature(fn).parameters)
            raise Invalid("args", f"{verb}: {e}; it takes ({params})") from None
        return fn(**args)
