"""The ``comity`` command: a thin face over the verb table (:mod:`comity.work.verbs`).

Each command that maps onto a verb is declared with :func:`verb_command`: its positional
arguments and options, their help text, types, limits and defaults come from the table,
and the command it takes to call the verb is registered (:data:`comity.render.CLI_FORMS`),
so an error's next step prints as a command.  Results go to stdout (JSON with
``--json``), news and messages to stderr.  The other faces' commands (serve, mcp, the
repository's, the harness's, the benchmarks) register themselves through :mod:`comity.clikit`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from . import __version__
from .clikit import Ctx, Verbs, closed_pipe, command, err, fail, news_of, out, print_json
from .errors import EXIT_INTERNAL, EXIT_INVALID, EXIT_UNAVAILABLE, ComityError, Invalid
from .render import CLI_FORMS, CliForm, cli_command, news_line
from .store import Store
from .store import open as open_store
from .store._codec import parse_json
from .work import VERB, Agent, Param

__all__ = ["cli", "main", "verb_command", "GENERATED", "NOT_COMMANDS"]

EXIT_CODES = """\b
Exit codes (one meaning each):
  0  done
  1  internal error (a bug: please report it)
  2  bad input or usage (the message names the field)
  3  refused by the state: stale context, key exists, fenced, lease expired
  4  nothing there: not found, nothing ready
  5  unavailable: the store cannot be reached, is busy, missing, damaged or not a store
"""


# Commands made by verb_command: their options' help text and defaults are the table's.
GENERATED: set[str] = set()


class _Opener:
    """How the CLI opens a store and an agent session (:class:`comity.clikit.Ctx` asks)."""

    def store(self, ctx: Ctx, create: bool | None = None) -> Store:
        if ctx.remote:
            raise Invalid("store", "this command needs a store (a path or a postgresql:// URL), not a comity server")
        if create is None:
            # Reads never create a store: a command marked as reading, or one whose first verb
            # changes nothing, says "no store at …" instead.
            create = not ctx.reads and (ctx.verb is None or VERB[ctx.verb].mutating)
        return open_store(ctx.store_location, create=create)

    def agent(self, ctx: Ctx) -> Verbs:
        if ctx.remote:
            from .remote import RemoteAgent

            # --session names the server-side session; without it the server remembers nothing.
            return RemoteAgent(ctx.store_location or "", auth=ctx.auth, agent=ctx.agent_name, session=ctx.session_name or False)
        from .repo.worktree import Worktrees

        return Agent(ctx.store().session(ctx.agent_name, name=ctx.session_name), worktrees=Worktrees.here())


# ------------------------------------------------------------------ verbs as commands


def _click_type(p: Param) -> Any:
    # Limits are the table's to check (bind), so that a value out of range is the same
    # Invalid, naming the same field, on every face.
    return {"int": int, "number": float}.get(p.base, str)


def verb_command(
    group: click.Group,
    name: str,
    verb_name: str,
    *,
    args: Iterable[str] = (),
    flags: Mapping[str, str] | None = None,
    json_args: Mapping[str, str] | None = None,
    choices: Mapping[str, list[str]] | None = None,
    skip: Iterable[str] = (),
    help: str | None = None,  # noqa: A002 - click's name
) -> Callable[[Callable[[Ctx, dict[str, Any], bool], None]], None]:
    """Map ``comity [group] name`` onto ``verb_name``: ``args`` are its positional arguments
    (in order), every other parameter of the verb an option (``flags`` renames them, e.g.
    ``{"deps": "--dep"}``); ``json_args`` are typed as JSON text.  The decorated function
    prints the answer: ``show(obj, answer, as_json)``."""
    verb = VERB[verb_name]
    positional = tuple(args)
    flags = dict(flags or {})
    json_args = dict(json_args or {})
    choices = dict(choices or {})
    skipped = set(skip)
    path = f"{group.name} {name}".strip() if group.name and group.name != "cli" else name

    def deco(show: Callable[[Ctx, dict[str, Any], bool], None]) -> None:
        def run(obj: Ctx, *, as_json: bool, **given: Any) -> None:
            call: dict[str, Any] = {}
            for p in verb.params:
                if p.name in skipped or p.name not in given:
                    continue
                value = given[p.name]
                if value is None or (isinstance(value, tuple) and not value and not p.required):
                    continue  # not given: the table's default
                if p.name in json_args:
                    value = parse_json(value, json_args[p.name])
                elif isinstance(value, tuple):
                    value = list(value)
                call[p.name] = value
            answer = obj.call(verb_name, call)
            news_of(answer)
            show(obj, answer, as_json)

        cmd: Callable[..., Any] = run
        for p in reversed(verb.params):
            if p.name in skipped:
                continue
            if p.name in positional:
                metavar = json_args.get(p.name) or p.cli or p.name.upper()
                many = p.base.startswith("list[")
                metavar = metavar + "..." if many else metavar
                cmd = click.argument(p.name, metavar=metavar, nargs=-1 if many else 1, required=p.required)(cmd)
                continue
            flag = flags.get(p.name, "--" + p.name.replace("_", "-"))
            text = p.doc
            if p.base == "bool":
                cmd = click.option(flag, p.name, is_flag=True, help=text)(cmd)
            elif p.base.startswith("list["):
                cmd = click.option(flag, p.name, multiple=True, metavar=p.cli or "VALUE", help=text + " (repeatable)")(cmd)
            else:
                kind = click.Choice(choices[p.name]) if p.name in choices else _click_type(p)
                show_default = not p.required and p.default not in (None, "")
                cmd = click.option(
                    flag, p.name, type=kind, default=None if p.required else p.default, required=p.required,
                    show_default=show_default, metavar=json_args.get(p.name) or p.cli, help=text,
                )(cmd)  # fmt: skip
        command(group, name, help=help or verb.summary)(cmd)
        CLI_FORMS[verb_name] = CliForm(path, positional, flags, frozenset(json_args))
        GENERATED.add(path)

    return deco


def _written(obj: Ctx, w: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(w)
        return
    note = f", {len(w['values'])} siblings" if len(w["values"]) > 1 else ""
    again = " (retry: recorded outcome)" if w.get("replayed") else ""
    out.print(f"{w['op']} {w['key']} at pos {w['pos']}{note}{again}", markup=False)
    err.print(f"context: {w['context']}", markup=False)


def _listing(field: str, line: Callable[[Any], str]) -> Callable[[Ctx, dict[str, Any], bool], None]:
    def show(obj: Ctx, answer: dict[str, Any], as_json: bool) -> None:
        items = answer[field]
        if as_json:
            print_json(items)
            return
        for item in items:
            out.print(line(item), markup=False)

    return show


def _task_line(t: dict[str, Any]) -> str:
    who = t.get("lease") or {}
    extra = f" [{who.get('holder')} token {who.get('token')}]" if who else ""
    assignee = f" (assigned to {t['assignee']})" if t.get("assignee") else ""
    return f"{t['id']:<7} {t['state']:<9} {t.get('title', '')}{assignee}{extra}"


def _task(obj: Ctx, t: dict[str, Any], as_json: bool) -> None:
    print_json(t) if as_json else out.print(_task_line(t), markup=False)


# ------------------------------------------------------------------ the group


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", envvar="COMITY_STORE", metavar="PATH_OR_URL", help="Store location [env COMITY_STORE]. Default: the git common dir of this repository, else ./.comity")
@click.option("--agent", envvar="COMITY_AGENT", metavar="NAME", help="Who is acting [env COMITY_AGENT]. Reads need none; writes do.")
@click.option("--session", envvar="COMITY_SESSION", metavar="NAME", help="The session: its news position persists across calls (docs/faces.md) [env COMITY_SESSION].")
@click.option("--auth", envvar="COMITY_AUTH", metavar="TOKEN", help="Your agent token for a comity server (--store http://…) [env COMITY_AUTH].")
@click.version_option(__version__, prog_name="comity")
@click.pass_context
def cli(ctx: click.Context, store: str | None, agent: str | None, session: str | None, auth: str | None) -> None:
    """comity: coordination for teams of AI agents.

    Every read returns a context; every write carries one. A write whose context
    misses newer values is refused with the news, or kept beside them with
    --keep-both. Nothing is silently lost.
    """
    ctx.obj = Ctx(store, agent, session, auth, _Opener())


# ------------------------------------------------------------------------ keys


@command(cli, "init")
def init_cmd(obj: Ctx, *, as_json: bool) -> None:
    """Create the store (if needed), check that it is whole, and say where it is."""
    from .store import check, locate

    why = "a comity server" if obj.remote else locate(obj.store_location)[1]
    if not obj.remote:
        # A store that is there is checked (quickly) before anything opens it, let alone
        # calls it healthy; only a missing one is made.
        report = check(obj.store_location, quick=True)
        if [p for p in report.problems if p.code != "absent"]:
            if as_json:
                print_json(report.to_json())
            _print_problems(report)
            sys.exit(EXIT_UNAVAILABLE)
        obj.store(create=True)
    info = {k: v for k, v in obj.call("info").items() if k not in ("news", "stale", "news_truncated")}
    info["why"] = why
    size = None if obj.remote else obj.store().size()
    if size is not None:
        info["size_bytes"] = size
    if as_json:
        print_json(info)
    else:
        out.print(f"comity store at {info['location']} ({why})", markup=False)
        on_disk = "" if size is None else f", {_bytes(size)} on disk"
        out.print(f"store {info['store_id']}, replica {info['replica_id']}, schema v{info['schema_version']}, {info['head']} events{on_disk}",
                  markup=False)  # fmt: skip


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


@command(cli, "compact")
@click.option("--keep", type=click.IntRange(1, None), default=1_000_000, show_default=True,
              help="Keep at least the latest N events (and everything a named session has not been shown).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and how big the store is; change nothing.")
@click.option("--no-reclaim", is_flag=True, help="Do not VACUUM after deleting (the file keeps its size; the space is reused).")
def compact_cmd(obj: Ctx, keep: int, dry_run: bool, no_reclaim: bool, *, as_json: bool) -> None:
    """Delete log events older than the latest --keep, keeping each key's last event; shrink the store."""
    if obj.remote:
        raise Invalid("store", "compact works on a store file or database directly; run it where the store is, not against a server")
    store = obj.store(create=False)
    report = store.compact(keep=keep, dry_run=dry_run, reclaim=not no_reclaim)
    if as_json:
        print_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    n = report["events_to_delete"] if dry_run else report["deleted"]
    out.print(
        f"{verb} {n} of the events before position {report['horizon']} (head {report['head']}; kept before it:"
        f" {report['kept_before_horizon']}, the last event of each key and lease)",
        markup=False,
    )
    if report["held_back_by_sessions"]:
        err.print("a named session kept in the store has not been shown everything: the horizon stops at its position", markup=False)
    after = report.get("size_after_bytes")
    out.print(f"size: {_bytes(report['size_bytes'])}" + ("" if after is None else f" -> {_bytes(after)}"), markup=False)


def _print_problems(report: Any) -> None:
    err.print(f"comity: the store at {report.location} has {len(report.problems)} problem(s):", markup=False, style="red")
    for p in report.problems:
        err.print(f"  - {p.what}", markup=False)
        err.print(f"    fix: {p.fix}", markup=False)
        for step in p.next:
            err.print(f"    next: {cli_command(step.verb, step.args)}", markup=False)


# The steps a store-file error names (comity.store._files) are these commands.
CLI_FORMS["init"] = CliForm("init")
CLI_FORMS["check"] = CliForm("check")


@command(cli, "check", reads=True)
@click.option("--quick", is_flag=True, help="Skip the page-by-page and key-by-key parts (what `comity init` runs).")
@click.option("--salvage-to", "salvage_to", metavar="NEW.db", type=click.Path(dir_okay=False),
              help="Build a new store file from every row still readable in this (damaged) one, then check it.")
def check_cmd(obj: Ctx, quick: bool, salvage_to: str | None, *, as_json: bool) -> None:
    """Check the store's integrity without changing it; say what to do about each problem (exit 5 if any)."""
    from pathlib import Path

    from .store import check, locate, salvage

    if obj.remote:
        raise Invalid("store", "check reads a store file or database directly; run it where the store is, not against a server")
    if salvage_to is not None:
        where = locate(obj.store_location)[0]
        if isinstance(where, str):
            raise Invalid("salvage-to", "salvage rebuilds an SQLite store file; restore a PostgreSQL store from its backups")
        counts = salvage(where, Path(salvage_to))
        err.print(
            f"salvaged {counts['events']} events ({counts['events_lost']} unreadable), {counts['keys']} keys,"
            f" {counts['leases']} leases into {salvage_to}",
            markup=False,
        )
        obj.store_location = salvage_to
    report = check(obj.store_location, quick=quick)
    if as_json:
        print_json(report.to_json())
    if not report.ok:
        _print_problems(report)
        sys.exit(EXIT_UNAVAILABLE)
    if not as_json:
        facts = report.facts
        out.print(
            f"the store at {report.location} is whole: {facts.get('events', 0)} events, {facts.get('keys', 0)} keys,"
            f" schema v{facts.get('schema_version')}",
            markup=False,
        )


@verb_command(cli, "get", "read", args=["key"], help="Read KEY: its values (several if siblings) and the context to write with.")
def get_cmd(obj: Ctx, v: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(v)
        return
    if not v["values"]:
        out.print(f"{v['key']}: (absent)", markup=False)
    for value in v["values"]:
        out.print(json.dumps(value, ensure_ascii=False), markup=False)
    if v.get("type"):
        err.print(f"{v['key']} is a {v['type']} CRDT: change it with `comity update`", markup=False)
    if len(v["values"]) > 1:
        err.print(f"{v['key']} has {len(v['values'])} siblings; write with this context to resolve them", markup=False)
    err.print(f"context: {v['context']}", markup=False)


verb_command(
    cli, "put", "write", args=["key", "value"], json_args={"value": "JSON_VALUE"},
    help="Write JSON_VALUE to KEY over what CTX saw (exit 3 if it changed since); with --task and --token, only while your claim holds.",
)(_written)  # fmt: skip
verb_command(
    cli, "create", "create", args=["key", "value"], json_args={"value": "JSON_VALUE"},
    help="Write JSON_VALUE to KEY only if KEY does not exist (exit 3 naming the holder if it does).",
)(_written)  # fmt: skip
verb_command(cli, "delete", "delete", args=["key"], help="Delete KEY (a tombstone), if nothing changed since CTX.")(_written)


@verb_command(
    cli, "update", "update", args=["key", "op", "arg"], json_args={"arg": "JSON_ARG"},
    help="Apply a CRDT operation to KEY: merges, never stale (e.g. `update labels/T-12 add '\"backend\"' --type orset`).",
)  # fmt: skip
def update_cmd(obj: Ctx, r: dict[str, Any], as_json: bool) -> None:
    print_json(r) if as_json else out.print(json.dumps(r["value"], ensure_ascii=False), markup=False)


@verb_command(cli, "log", "log", args=["key"], help="The event log (the audit trail), optionally of one KEY.")
def log_cmd(obj: Ctx, answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer["events"])
        return
    for e in answer["events"]:
        value = f" {json.dumps(e['value'], ensure_ascii=False)}" if "value" in e else ""
        out.print(f"{e['pos']:>6}  {e['agent']:<12} {e['op']:<7} {e['key']}{value}", markup=False)


@command(cli, "news")
@click.option("--limit", type=click.IntRange(1, 1000), default=VERB["news"].param("limit").default, show_default=True,
              help=VERB["news"].param("limit").doc)
def news_cmd(obj: Ctx, limit: int, *, as_json: bool) -> None:
    """What other sessions changed since this session (--session) last looked."""
    if obj.session_name is None:
        err.print("news: no --session given, so there is no position to start from; showing the latest events", markup=False)
        head = int(obj.call("info")["head"])
        events = obj.call("log", {"after": max(0, head - limit), "limit": limit})["events"]
        if as_json:
            print_json({"events": events, "truncated": False, "position": head})
        else:
            for e in events:
                out.print(news_line(e), markup=False)
        return
    n = obj.call("news", {"limit": limit})
    if as_json:
        body = {"events": n["news"], "truncated": bool(n.get("news_truncated")), "position": n["position"]}
        print_json({**body, "suspected": n["suspected"]} if n["suspected"] else body)
        return
    if not n["news"]:
        out.print("nothing new", markup=False)
    for e in n["news"]:
        out.print(news_line(e), markup=False)
    for s in n["suspected"]:
        out.print(f"suspected: {s['agent']} (phi {s['phi']}) holds {', '.join(s['holds']) or 'nothing'}", markup=False)
    if n.get("news_truncated"):
        err.print("more news: run `comity news` again", markup=False)


CLI_FORMS["news"] = CliForm("news")


verb_command(
    cli, "keys", "keys", args=["prefix"],
    help="List keys starting with PREFIX (comity's own '@' keys only when PREFIX starts with '@').",
)(_listing("keys", str))  # fmt: skip


# ---------------------------------------------------------------- coordination


@cli.group("task")
def task_group() -> None:
    """The task board: add, assign, claim, checkpoint and complete tasks, fenced by tokens."""


@verb_command(task_group, "add", "task_add", args=["title"], flags={"deps": "--dep", "labels": "--label", "assignee": "--assign"},
              help="Add a task; prints its id.")
def task_add_cmd(obj: Ctx, t: dict[str, Any], as_json: bool) -> None:
    print_json(t) if as_json else out.print(t["id"], markup=False)


verb_command(task_group, "list", "task_list", choices={"state": ["open", "claimed", "orphaned", "submitted", "done", "failed"]})(
    _listing("tasks", _task_line)
)


@verb_command(task_group, "ready", "task_ready", help="Tasks you may claim now: open or orphaned, unassigned or yours, dependencies done.")
def task_ready_cmd(obj: Ctx, answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(answer["tasks"])
        return
    if not answer["tasks"]:
        err.print("nothing ready", markup=False)
    for t in answer["tasks"]:
        out.print(_task_line(t), markup=False)


@verb_command(task_group, "show", "task_show", args=["id"])
def task_show_cmd(obj: Ctx, t: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(t)
        return
    out.print(_task_line(t), markup=False)
    if t.get("body"):
        out.print(t["body"], markup=False)
    for cp in t.get("checkpoints", []):
        out.print(f"  checkpoint by {cp['agent']} (token {cp['token']}): {cp['note']}", markup=False)
    err.print(f"context: {t['context']}", markup=False)


verb_command(task_group, "assign", "task_assign", args=["id", "agent"], help="Assign task ID to AGENT: only AGENT may then claim it.")(_task)


def _claimed(c: dict[str, Any], as_json: bool) -> None:
    news_of(c)
    if as_json:
        print_json(c)
        return
    out.print(f"{c['task']['id']} token {c['token']}", markup=False)
    for h in c["handoff"]:
        err.print(f"handoff from {h['agent']}: {h['note']}", markup=False)


_CLAIM = VERB["task_claim"]


@command(task_group, "claim")
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--next", "take_next", is_flag=True, help="Claim one of the first 32 ready tasks, at random (agents claiming at once rarely race for one).")
@click.option("--context", metavar="CTX", help=_CLAIM.param("context").doc)
@click.option("--ttl", type=_click_type(_CLAIM.param("ttl")), default=_CLAIM.param("ttl").default, show_default=True, help=_CLAIM.param("ttl").doc)
@click.option("--steal", is_flag=True, help=_CLAIM.param("steal").doc)
@click.option("--request-id", metavar="ID", help=_CLAIM.param("request_id").doc)
def task_claim_cmd(
    obj: Ctx, task_id: str | None, take_next: bool, context: str | None, ttl: float, steal: bool, request_id: str | None, *, as_json: bool
) -> None:
    """Claim task ID (or --next): prints the fencing token to pass to later task commands."""
    if take_next == (task_id is not None):
        raise Invalid("ID", "give a task ID or --next, not both and not neither")
    if take_next:
        if context is not None or steal:
            raise Invalid("--next", "--next takes no --context or --steal: it claims whatever is ready")
        _claimed(obj.call("task_claim_next", {"ttl": ttl, "request_id": request_id}), as_json)
    else:
        _claimed(obj.call("task_claim", {"id": task_id, "context": context, "ttl": ttl, "steal": steal, "request_id": request_id}), as_json)


CLI_FORMS["task_claim"] = CliForm("task claim", ("id",))
CLI_FORMS["task_claim_next"] = CliForm("task claim --next")


def _fenced(t: dict[str, Any]) -> str:
    return _task_line(t) if "state" in t else f"{t['id']} token {t['token']} until {t['expires']:.0f}"


def _fenced_show(obj: Ctx, t: dict[str, Any], as_json: bool) -> None:
    print_json(t) if as_json else out.print(_fenced(t), markup=False)


verb_command(task_group, "renew", "task_renew", args=["id"], help="Extend your lease on task ID (for long silent work).")(_fenced_show)
verb_command(task_group, "checkpoint", "task_checkpoint", args=["id"], help="Record a handoff note on task ID; a successor gets the last one.")(
    _fenced_show
)
verb_command(task_group, "done", "task_complete", args=["id"], help="Complete task ID (refused, exit 3, if your token was superseded).")(
    _fenced_show
)
verb_command(task_group, "release", "task_release", args=["id"], help="Give task ID back to the queue.")(_fenced_show)
verb_command(task_group, "fail", "task_fail", args=["id"], help="Mark task ID failed.")(_fenced_show)


@cli.group("seq")
def seq_group() -> None:
    """Sequences: unique, increasing numbers (migration numbers, ticket ids)."""


@verb_command(seq_group, "next", "seq_next", args=["name"], help="Print the next number of sequence NAME (bare on stdout).")
def seq_next_cmd(obj: Ctx, r: dict[str, Any], as_json: bool) -> None:
    print_json(r) if as_json else out.print(str(r["value"]), markup=False)


@verb_command(seq_group, "reserve", "seq_reserve", args=["name"],
              help="On a replica: take --count numbers of sequence NAME from the upstream now (connected), for `seq next NAME` to spend here later, offline or not; never issued to anyone else.")
def seq_reserve_cmd(obj: Ctx, r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(r)
        return
    out.print(f"{r['first']}..{r['last']}", markup=False)
    err.print(f"{r['escrowed']} numbers of {r['sequence']} escrowed here", markup=False)


@verb_command(cli, "reserve", "reserve_paths", args=["paths"],
              help="Reserve paths or globs (exclusive unless --shared); exit 3 naming the holder on overlap.")
def reserve_cmd(obj: Ctx, r: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(r["reservations"])
        return
    for x in r["reservations"]:
        out.print(f"reserved {x['pattern']} ({'shared' if x['shared'] else 'exclusive'}, token {x['token']})", markup=False)


@verb_command(cli, "release", "release_paths", args=["paths"], help="Release your reservations of these paths or globs.")
def release_cmd(obj: Ctx, r: dict[str, Any], as_json: bool) -> None:
    print_json({"released": r["released"]}) if as_json else out.print("released " + " ".join(r["released"]), markup=False)


verb_command(cli, "reservations", "reservations")(
    _listing("reservations", lambda r: f"{r['pattern']:<40} {r['holder']:<12} {'shared' if r['shared'] else 'exclusive'} token {r['token']}")
)


def _agent_line(a: dict[str, Any]) -> str:
    flag = "SUSPECTED" if a["suspected"] else "ok"
    silent = f"silent {a['silent_s']:.0f}s" if a["silent_s"] is not None else "no actions"
    holds = ", ".join(h["resource"] for h in a["holds"]) or "-"
    return f"{a['agent']:<16} {flag:<9} phi {a['phi']:6.2f}  {silent:<14} holds {holds}"


verb_command(cli, "agents", "agents", help="Agents seen in the log: progress, suspicion (phi accrual), what each holds.")(_listing("agents", _agent_line))


@verb_command(cli, "why", "why", args=["target"], help="The causal history of a task or key: who did what, and what each had seen.")
def why_cmd(obj: Ctx, w: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(w)
        return
    for h in w["history"]:
        seen = f"  (had seen up to pos {h['had_seen_up_to']})" if "had_seen_up_to" in h else ""
        out.print(f"{h['pos']:>6}  {h['agent']:<12} {h['op']:<20}{seen}", markup=False)
    for line in w["explanations"]:
        out.print(line, markup=False)


# ------------------------------------------------------------------ other faces

# Verbs the CLI does not offer as commands (the drift test checks every other verb has one).
NOT_COMMANDS = {
    "info": "comity init",
    "migration_take": "the store's half of migration_new, for clients that create the file themselves",
    "migration_dirs": "comity migrations check lists problems in every known directory",
    "whoami": "a host's check of its connection",
    "heartbeat": "sent by hosts (comity mcp)",
    "key_register": "comity attest registers the key it signs with",
}

# The verification commands (comity.repo.verify_commands) are written by hand: how each
# is typed, for an error's next step.
CLI_FORMS.update(
    {
        "change_submit": CliForm("change submit", (), {"checks": "--check", "commits": "--base", "reads": "--read", "paths": "--path"}),
        "change_show": CliForm("change show", ("id",)),
        "change_list": CliForm("change list"),
        "verify": CliForm("verify", ("id",)),
        "refute": CliForm("refute", ("id",)),
        "attest": CliForm("attest sign", ("id",)),
        "policy_set": CliForm("policy set", ("scope",)),
        "policy_list": CliForm("policy list"),
        "migration_new": CliForm("migrations new", ("slug",)),
        "migration_check": CliForm("migrations check"),
    }
)


def _register_faces() -> None:
    """The other faces add their own commands (``serve``, ``mcp``, the repository's, the
    harness's, the benchmarks)."""
    from .bench.commands import register as bench
    from .chaos.commands import register as chaos
    from .mcp.commands import register as mcp
    from .replica_cli import register as replica
    from .repo.commands import register as repo
    from .server.commands import register as server

    for register in (bench, server, mcp, repo, chaos, replica):
        register(cli)


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
    except BrokenPipeError:
        closed_pipe()
    except ComityError as e:  # raised outside a command (e.g. while opening)
        fail(e, False)
    except Exception as e:  # a bug: one line, and the exit code that says so
        if os.environ.get("COMITY_DEBUG"):
            raise
        err.print(f"comity: internal error: {type(e).__name__}: {e}", markup=False, style="red")
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
