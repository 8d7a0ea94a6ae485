"""The ``comity`` command: a thin face over the agent verbs (:class:`comity.work.Agent`).

Results go to stdout (JSON with ``--json``), news and messages to stderr.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_INVALID, ComityError, Invalid
from .store import Store
from .store import open as open_store
from .store._codec import parse_json
from .work import Agent

if TYPE_CHECKING:
    from .remote import RemoteAgent

EXIT_CODES = """\b
Exit codes (one meaning each):
  0  done
  1  internal error (a bug: please report it)
  2  bad input or usage (the message names the field)
  3  refused by the state: stale context, key exists, fenced, lease expired
  4  nothing there: not found, nothing ready
  5  unavailable: the store cannot be reached or is busy
"""

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


class Ctx:
    """What the global options chose: where the store is, who is acting, and how they prove it."""

    def __init__(self, store: str | None, agent: str | None, session: str | None, auth: str | None = None) -> None:
        self.store_location = store
        self.agent_name = agent
        self.session_name = session
        self.auth = auth
        self._store: Store | None = None
        self._agent: Agent | RemoteAgent | None = None

    @property
    def remote(self) -> bool:
        """A comity server (``--store http://…``, several separated by commas) rather than a store."""
        return (self.store_location or "").lower().startswith(("http://", "https://"))

    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.store_location)
        return self._store

    def agent(self) -> Agent | RemoteAgent:
        """The agent verbs: in process over the store, or over HTTP against a comity server
        (``comity.remote.RemoteAgent`` has the same verbs and answers)."""
        if self._agent is None:
            if self.remote:
                from .remote import RemoteAgent

                self._agent = RemoteAgent(self.store_location or "", auth=self.auth, agent=self.agent_name)
            else:
                self._agent = Agent(self.store().session(self.agent_name, name=self.session_name))
        return self._agent

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _print_json(obj: Any) -> None:
    if isinstance(obj, dict) and obj.get("stale") == []:
        # A one-shot CLI process remembers no reads, so nothing it read can be stale.
        obj = {k: v for k, v in obj.items() if k != "stale"}
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _news_line(n: dict[str, Any]) -> str:
    extra = f" token={n['token']}" if "token" in n else ""
    return f"news: {n['agent']} {n['op']} {n['key']} (pos {n['pos']}){extra}"


def print_news(news: list[dict[str, Any]], truncated: bool = False) -> None:
    for n in news:
        err.print(_news_line(n), markup=False)
    if truncated:
        err.print("news: … more; run `comity news` to see the rest", markup=False)


def _news_of(answer: dict[str, Any]) -> None:
    print_news(answer.get("news", []), bool(answer.get("news_truncated")))
    if answer.get("warning"):
        err.print(f"comity: warning: {answer['warning']}", markup=False)


def fail(e: ComityError, as_json: bool) -> NoReturn:
    if as_json:
        _print_json(e.to_json())
    err.print(f"comity: {e.message}", markup=False, style="red")
    news = getattr(e, "news", None)
    if news:
        print_news(news)
    sys.exit(e.exit_code)


def command(group: click.Group, name: str | None = None, **kw: Any) -> Callable[[F], F]:
    """A subcommand with ``--json`` and uniform error handling."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
            obj: Ctx = click.get_current_context().obj
            try:
                fn(obj, *args, as_json=as_json, **kwargs)
            except ComityError as e:
                fail(e, as_json)
            except KeyboardInterrupt:
                sys.exit(130)
            finally:
                obj.close()

        wrapper = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(wrapper)
        group.command(name, **kw)(wrapper)
        return fn

    return deco


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="COMITY_STORE", metavar="PATH_OR_URL", help="Store location [env COMITY_STORE]. Default: the git common dir of this repository, else ./.comity")
@click.option("--agent", envvar="COMITY_AGENT", metavar="NAME", help="Who is acting [env COMITY_AGENT]. Reads need none; writes do.")
@click.option("--session", envvar="COMITY_SESSION", metavar="NAME", help="Named session whose news position persists across calls [env COMITY_SESSION].")
@click.option("--auth", envvar="COMITY_AUTH", metavar="TOKEN", help="Your agent token for a comity server (--store http://…) [env COMITY_AUTH].")
@click.version_option(__version__, prog_name="comity")
@click.pass_context
def cli(ctx: click.Context, store: str | None, agent: str | None, session: str | None, auth: str | None) -> None:
    """comity: coordination for teams of AI agents.

    Every read returns a context; every write carries one. A write whose context
    misses newer values is refused with the news, or kept beside them with
    --keep-both. Nothing is silently lost.
    """
    ctx.obj = Ctx(store, agent, session, auth)


# ------------------------------------------------------------------------ keys


@command(cli, "init")
def init_cmd(obj: Ctx, *, as_json: bool) -> None:
    """Create the store (if needed) and say where it is."""
    from .store import locate

    why = "a comity server" if obj.remote else locate(obj.store_location)[1]
    info = obj.agent().info()
    info["why"] = why
    if as_json:
        _print_json(info)
    else:
        out.print(f"comity store at {info['location']} ({why})", markup=False)
        out.print(f"store {info['store_id']}, replica {info['replica_id']}, schema v{info['schema_version']}, {info['head']} events", markup=False)


@command(cli, "get")
@click.argument("key")
def get_cmd(obj: Ctx, key: str, *, as_json: bool) -> None:
    """Read KEY: its values (several if siblings) and the context to write with."""
    v = obj.agent().read(key)
    _news_of(v)
    if as_json:
        _print_json(v)
        return
    if not v["values"]:
        out.print(f"{key}: (absent)", markup=False)
    for value in v["values"]:
        out.print(json.dumps(value, ensure_ascii=False), markup=False)
    if v.get("type"):
        err.print(f"{key} is a {v['type']} CRDT: change it with `comity update`", markup=False)
    if len(v["values"]) > 1:
        err.print(f"{key} has {len(v['values'])} siblings; write with this context to resolve them", markup=False)
    err.print(f"context: {v['context']}", markup=False)


def _written(w: dict[str, Any], as_json: bool) -> None:
    _news_of(w)
    if as_json:
        _print_json(w)
    else:
        note = f", {len(w['values'])} siblings" if len(w["values"]) > 1 else ""
        again = " (retry: recorded outcome)" if w.get("replayed") else ""
        out.print(f"{w['op']} {w['key']} at pos {w['pos']}{note}{again}", markup=False)
        err.print(f"context: {w['context']}", markup=False)


_request_id = click.option("--request-id", metavar="ID", help="Idempotency key: a retry with the same id returns the recorded outcome.")


@command(cli, "put")
@click.argument("key")
@click.argument("json_value", metavar="JSON_VALUE")
@click.option("--context", metavar="CTX", help="The context from your last read of KEY.")
@click.option("--keep-both", is_flag=True, help="If KEY changed since CTX, keep your value beside the newer one as a sibling.")
@_request_id
def put_cmd(obj: Ctx, key: str, json_value: str, context: str | None, keep_both: bool, request_id: str | None, *, as_json: bool) -> None:
    """Write JSON_VALUE to KEY over what CTX saw (exit 3 if it changed since)."""
    value = parse_json(json_value, "JSON_VALUE")
    _written(obj.agent().write(key, value, context=context, keep_both=keep_both, request_id=request_id), as_json)


@command(cli, "create")
@click.argument("key")
@click.argument("json_value", metavar="JSON_VALUE")
@_request_id
def create_cmd(obj: Ctx, key: str, json_value: str, request_id: str | None, *, as_json: bool) -> None:
    """Write JSON_VALUE to KEY only if KEY does not exist (exit 3 naming the holder if it does)."""
    value = parse_json(json_value, "JSON_VALUE")
    _written(obj.agent().create(key, value, request_id=request_id), as_json)


@command(cli, "update")
@click.argument("key")
@click.argument("op")
@click.argument("json_arg", metavar="[JSON_ARG]", required=False)
@click.option("--type", "crdt", metavar="TYPE", help="The CRDT type, on a key's first update: gcounter, pncounter, lww, mvreg, orset, flag, ormap.")
@_request_id
def update_cmd(obj: Ctx, key: str, op: str, json_arg: str | None, crdt: str | None, request_id: str | None, *, as_json: bool) -> None:
    """Apply a CRDT operation to KEY: merges, never stale (e.g. `update labels/T-12 add '"backend"' --type orset`)."""
    arg = None if json_arg is None else parse_json(json_arg, "JSON_ARG")
    r = obj.agent().update(key, op, arg, type=crdt, request_id=request_id)
    _news_of(r)
    _print_json(r) if as_json else out.print(json.dumps(r["value"], ensure_ascii=False), markup=False)


@command(cli, "delete")
@click.argument("key")
@click.option("--context", metavar="CTX", help="The context from your last read of KEY (required if KEY exists).")
@_request_id
def delete_cmd(obj: Ctx, key: str, context: str | None, request_id: str | None, *, as_json: bool) -> None:
    """Delete KEY (a tombstone), if nothing changed since CTX."""
    _written(obj.agent().delete(key, context=context, request_id=request_id), as_json)


@command(cli, "log")
@click.argument("key", required=False)
@click.option("--after", type=int, default=0, show_default=True, help="Only events after this log position.")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many events.")
def log_cmd(obj: Ctx, key: str | None, after: int, limit: int, *, as_json: bool) -> None:
    """The event log (the audit trail), optionally of one KEY."""
    events = obj.agent().log(key, after=after, limit=limit)["events"]
    if as_json:
        _print_json(events)
        return
    for e in events:
        value = f" {json.dumps(e['value'], ensure_ascii=False)}" if "value" in e else ""
        out.print(f"{e['pos']:>6}  {e['agent']:<12} {e['op']:<7} {e['key']}{value}", markup=False)


@command(cli, "news")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="At most this many events.")
def news_cmd(obj: Ctx, limit: int, *, as_json: bool) -> None:
    """What other sessions changed since this session (--session) last looked."""
    agent = obj.agent()
    if obj.session_name is None:
        err.print("news: no --session given, so there is no position to start from; showing the latest events", markup=False)
        head = agent.session.head()
        events = agent.log(after=max(0, head - limit), limit=limit)["events"]
        if as_json:
            _print_json({"events": events, "truncated": False, "position": head})
        else:
            for e in events:
                out.print(_news_line(e)[6:], markup=False)
        return
    n = agent.news(limit=limit)
    if as_json:
        body = {"events": n["news"], "truncated": bool(n.get("news_truncated")), "position": n["position"]}
        _print_json({**body, "suspected": n["suspected"]} if n["suspected"] else body)
        return
    if not n["news"]:
        out.print("nothing new", markup=False)
    for e in n["news"]:
        out.print(_news_line(e)[6:], markup=False)
    for s in n["suspected"]:
        out.print(f"suspected: {s['agent']} (phi {s['phi']}) holds {', '.join(s['holds']) or 'nothing'}", markup=False)
    if n.get("news_truncated"):
        err.print("more news: run `comity news` again", markup=False)


@command(cli, "keys")
@click.argument("prefix", default="")
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="At most this many keys.")
@click.option("--deleted", is_flag=True, help="Also list deleted keys (they keep a tombstone).")
def keys_cmd(obj: Ctx, prefix: str, limit: int, deleted: bool, *, as_json: bool) -> None:
    """List keys starting with PREFIX (comity's own '@' keys only when PREFIX starts with '@')."""
    keys = obj.agent().keys(prefix, limit=limit, deleted=deleted)["keys"]
    if as_json:
        _print_json(keys)
    else:
        for k in keys:
            out.print(k, markup=False)


# ---------------------------------------------------------------- coordination


def _task_line(t: dict[str, Any]) -> str:
    who = t.get("lease") or {}
    extra = f" [{who.get('holder')} token {who.get('token')}]" if who else ""
    assignee = f" (assigned to {t['assignee']})" if t.get("assignee") else ""
    return f"{t['id']:<7} {t['state']:<9} {t.get('title', '')}{assignee}{extra}"


@cli.group("task")
def task_group() -> None:
    """The task board: add, assign, claim, checkpoint and complete tasks, fenced by tokens."""


@command(task_group, "add")
@click.argument("title")
@click.option("--body", default="", help="Longer description.")
@click.option("--dep", "deps", multiple=True, metavar="ID", help="A task this one waits on (repeatable).")
@click.option("--label", "labels", multiple=True, metavar="L", help="A label (repeatable).")
@click.option("--assign", "assignee", metavar="AGENT", help="Assign it to AGENT at once.")
def task_add_cmd(obj: Ctx, title: str, body: str, deps: tuple[str, ...], labels: tuple[str, ...], assignee: str | None, *, as_json: bool) -> None:
    """Add a task; prints its id."""
    t = obj.agent().task_add(title, body=body, deps=list(deps), labels=list(labels), assignee=assignee)
    _news_of(t)
    _print_json(t) if as_json else out.print(t["id"], markup=False)


@command(task_group, "list")
@click.option("--state", type=click.Choice(["open", "claimed", "orphaned", "submitted", "done", "failed"]), help="Only tasks in this state.")
def task_list_cmd(obj: Ctx, state: str | None, *, as_json: bool) -> None:
    """Every task with its state and who holds it."""
    tasks = obj.agent().task_list(state)["tasks"]
    if as_json:
        _print_json(tasks)
    else:
        for t in tasks:
            out.print(_task_line(t), markup=False)


@command(task_group, "ready")
def task_ready_cmd(obj: Ctx, *, as_json: bool) -> None:
    """Tasks you may claim now: open or orphaned, unassigned or yours, dependencies done."""
    tasks = obj.agent().task_ready()["tasks"]
    if as_json:
        _print_json(tasks)
        return
    if not tasks:
        err.print("nothing ready", markup=False)
    for t in tasks:
        out.print(_task_line(t), markup=False)


@command(task_group, "show")
@click.argument("task_id", metavar="ID")
def task_show_cmd(obj: Ctx, task_id: str, *, as_json: bool) -> None:
    """One task, with the context to claim it with."""
    t = obj.agent().task_show(task_id)
    _news_of(t)
    if as_json:
        _print_json(t)
        return
    out.print(_task_line(t), markup=False)
    if t.get("body"):
        out.print(t["body"], markup=False)
    for cp in t.get("checkpoints", []):
        out.print(f"  checkpoint by {cp['agent']} (token {cp['token']}): {cp['note']}", markup=False)
    err.print(f"context: {t['context']}", markup=False)


@command(task_group, "assign")
@click.argument("task_id", metavar="ID")
@click.argument("agent", metavar="AGENT")
def task_assign_cmd(obj: Ctx, task_id: str, agent: str, *, as_json: bool) -> None:
    """Assign task ID to AGENT: only AGENT may then claim it."""
    t = obj.agent().task_assign(task_id, agent)
    _news_of(t)
    _print_json(t) if as_json else out.print(_task_line(t), markup=False)


@command(task_group, "claim")
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--next", "take_next", is_flag=True, help="Claim the first ready task (retries when it loses a race).")
@click.option("--context", metavar="CTX", help="The task's context as you last read it: refused if it changed in a way that matters.")
@click.option("--ttl", type=float, default=None, help="Lease length in seconds (default 300).")
@click.option("--steal", is_flag=True, help="Take the task from a suspected agent, with a greater token.")
def task_claim_cmd(obj: Ctx, task_id: str | None, take_next: bool, context: str | None, ttl: float | None, steal: bool, *, as_json: bool) -> None:
    """Claim task ID (or --next): prints the fencing token to pass to later task commands."""
    if take_next == (task_id is not None):
        raise Invalid("ID", "give a task ID or --next, not both and not neither")
    c = obj.agent().task_claim(task_id, context=context, ttl=ttl, steal=steal, next=take_next)
    _news_of(c)
    if as_json:
        _print_json(c)
        return
    out.print(f"{c['task']['id']} token {c['token']}", markup=False)
    for h in c["handoff"]:
        err.print(f"handoff from {h['agent']}: {h['note']}", markup=False)


def _fenced_cmd(name: str, help_text: str, call: Callable[..., dict[str, Any]], *extra: Callable[[Any], Any]) -> None:
    def cmd(obj: Ctx, task_id: str, token: int, *, as_json: bool, **kw: Any) -> None:
        t = call(obj.agent(), task_id, token, **kw)
        _news_of(t)
        if as_json:
            _print_json(t)
        elif "state" in t:
            out.print(_task_line(t), markup=False)
        else:
            out.print(f"{t['id']} token {t['token']} until {t['expires']:.0f}", markup=False)

    for deco in extra:
        cmd = deco(cmd)
    cmd = click.option("--token", type=int, required=True, help="The fencing token your claim returned.")(cmd)
    cmd = click.argument("task_id", metavar="ID")(cmd)
    command(task_group, name, help=help_text)(cmd)


_fenced_cmd("renew", "Extend your lease on task ID (for long silent work).", lambda a, i, t, ttl: a.task_renew(i, t, ttl=ttl),
            click.option("--ttl", type=float, default=None, help="New lease length in seconds."))
_fenced_cmd("checkpoint", "Record a handoff note on task ID; a successor gets the last one.",
            lambda a, i, t, note: a.task_checkpoint(i, t, note), click.option("--note", required=True, help="What is done, what is next."))
_fenced_cmd("done", "Complete task ID (refused, exit 3, if your token was superseded).",
            lambda a, i, t, result: a.task_complete(i, t, result=result), click.option("--result", default="", help="What came of it."))
_fenced_cmd("release", "Give task ID back to the queue.", lambda a, i, t: a.task_release(i, t))
_fenced_cmd("fail", "Mark task ID failed.", lambda a, i, t, reason: a.task_fail(i, t, reason=reason),
            click.option("--reason", default="", help="Why it failed."))


@cli.group("seq")
def seq_group() -> None:
    """Sequences: unique, increasing numbers (migration numbers, ticket ids)."""


@command(seq_group, "next")
@click.argument("name")
def seq_next_cmd(obj: Ctx, name: str, *, as_json: bool) -> None:
    """Print the next number of sequence NAME (bare on stdout)."""
    r = obj.agent().seq_next(name)
    _news_of(r)
    _print_json(r) if as_json else out.print(str(r["value"]), markup=False)


@command(cli, "reserve")
@click.argument("paths", nargs=-1, required=True, metavar="PATH_OR_GLOB...")
@click.option("--ttl", type=float, default=3600.0, show_default=True, help="Seconds the reservation lasts.")
@click.option("--shared", is_flag=True, help="Shared: others may reserve overlapping paths shared too.")
def reserve_cmd(obj: Ctx, paths: tuple[str, ...], ttl: float, shared: bool, *, as_json: bool) -> None:
    """Reserve paths or globs (exclusive unless --shared); exit 3 naming the holder on overlap."""
    r = obj.agent().reserve_paths(list(paths), ttl=ttl, shared=shared)
    _news_of(r)
    if as_json:
        _print_json(r["reservations"])
    else:
        for x in r["reservations"]:
            out.print(f"reserved {x['pattern']} ({'shared' if x['shared'] else 'exclusive'}, token {x['token']})", markup=False)


@command(cli, "release")
@click.argument("paths", nargs=-1, required=True, metavar="PATH_OR_GLOB...")
def release_cmd(obj: Ctx, paths: tuple[str, ...], *, as_json: bool) -> None:
    """Release your reservations of these paths or globs."""
    r = obj.agent().release_paths(list(paths))
    _news_of(r)
    _print_json({"released": r["released"]}) if as_json else out.print("released " + " ".join(r["released"]), markup=False)


@command(cli, "reservations")
def reservations_cmd(obj: Ctx, *, as_json: bool) -> None:
    """Live path reservations."""
    rs = obj.agent().reservations()["reservations"]
    if as_json:
        _print_json(rs)
    else:
        for r in rs:
            out.print(f"{r['pattern']:<40} {r['holder']:<12} {'shared' if r['shared'] else 'exclusive'} token {r['token']}", markup=False)


@command(cli, "agents")
@click.option("--ttl", type=float, default=300.0, show_default=True, help="Never suspect an agent silent for less than this.")
def agents_cmd(obj: Ctx, ttl: float, *, as_json: bool) -> None:
    """Agents seen in the log: progress, suspicion (phi accrual), what each holds."""
    rows = obj.agent().agents(ttl=ttl)["agents"]
    if as_json:
        _print_json(rows)
        return
    for a in rows:
        flag = "SUSPECTED" if a["suspected"] else "ok"
        silent = f"silent {a['silent_s']:.0f}s" if a["silent_s"] is not None else "no actions"
        holds = ", ".join(h["resource"] for h in a["holds"]) or "-"
        out.print(f"{a['agent']:<16} {flag:<9} phi {a['phi']:6.2f}  {silent:<14} holds {holds}", markup=False)


@command(cli, "why")
@click.argument("target", metavar="TASK_OR_KEY")
def why_cmd(obj: Ctx, target: str, *, as_json: bool) -> None:
    """The causal history of a task or key: who did what, and what each had seen."""
    w = obj.agent().why(target)
    if as_json:
        _print_json(w)
        return
    for h in w["history"]:
        seen = f"  (had seen up to pos {h['had_seen_up_to']})" if "had_seen_up_to" in h else ""
        out.print(f"{h['pos']:>6}  {h['agent']:<12} {h['op']:<20}{seen}", markup=False)
    for line in w["explanations"]:
        out.print(line, markup=False)


@cli.group("bench")
def bench_group() -> None:
    """Benchmarks: JSON figures with a ratio against a baseline measured in the same run."""


@command(bench_group, "store")
@click.option("--ops", type=click.IntRange(100, 10_000_000), default=5000, show_default=True, help="Operations per measurement.")
@click.option("--log-events", type=click.IntRange(0, 100_000_000), default=1_000_000, show_default=True, help="Events seeded in bulk for growth_ratio (0 skips it).")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch stores go (default: a temporary directory).")
@click.option("--store-url", metavar="URL", default=None, help="Benchmark a PostgreSQL store (postgresql://…) instead of SQLite; scratch schemas are dropped after.")
def bench_store_cmd(obj: Ctx, ops: int, log_events: int, directory: str | None, store_url: str | None, *, as_json: bool) -> None:
    """Put, get and create throughput and latency against a plain upsert on the same engine."""
    from .bench import bench_store

    result = bench_store(
        ops=ops, log_events=log_events, directory=directory, store_url=store_url, progress=lambda m: err.print(m, markup=False)
    )
    if as_json:
        _print_json(result)
    else:
        for k, v in result.items():
            out.print(f"{k:>16}: {v}", markup=False)


@command(bench_group, "claims")
@click.option("--agents", type=click.IntRange(1, 256), default=8, show_default=True, help="Agent processes.")
@click.option("--tasks", type=click.IntRange(1, 1_000_000), default=500, show_default=True, help="Tasks to drain.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None, help="Where the scratch stores go.")
@click.option("--store-url", metavar="URL", default=None, help="Benchmark a PostgreSQL store (postgresql://…) instead of SQLite.")
def bench_claims_cmd(obj: Ctx, agents: int, tasks: int, directory: str | None, store_url: str | None, *, as_json: bool) -> None:
    """N processes drain M tasks (claim, complete) against a plain UPDATE queue on the same engine."""
    from .bench import bench_claims

    result = bench_claims(
        agents=agents, tasks=tasks, directory=directory, store_url=store_url, progress=lambda m: err.print(m, markup=False)
    )
    if as_json:
        _print_json(result)
    else:
        for k, v in result.items():
            out.print(f"{k:>22}: {v}", markup=False)


def _register_faces() -> None:
    """The server and MCP faces add their own commands (``comity serve``, ``comity mcp``, …)."""
    import importlib
    import importlib.util

    for name in ("comity.server.commands", "comity.mcp.commands", "comity.repo.commands", "comity.chaos.commands"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # the face's package is not there at all
            found = False
        if found:
            importlib.import_module(name).register(cli)


_register_faces()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="comity", standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_INVALID)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ComityError as e:  # raised outside a command (e.g. while opening)
        fail(e, False)
    except Exception as e:  # a bug: one line, and the exit code that says so
        if os.environ.get("COMITY_DEBUG"):
            raise
        err.print(f"comity: internal error: {type(e).__name__}: {e}", markup=False, style="red")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
