"""The verb table: every verb an agent can call, declared once.

Each :class:`Verb` names its parameters (a small type language, defaults, limits and a
description each), a one-line summary, the text an LLM reads (ending with an example
call), whether it mutates, whether a retry after a lost answer is safe, and the shape of
its answer.  The faces are generated from it: the HTTP routes and their OpenAPI schemas
(:mod:`comity.server.app`), the MCP tools with their input and output schemas
(:mod:`comity.mcp.server`), the remote client's methods (:mod:`comity.remote`); the CLI
maps its commands onto it (:mod:`comity.cli`).  :class:`comity.work.Agent` implements
each verb as a method of the same name and signature; a test fails when they drift.

Adding a verb: docs/faces.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..coord.leases import DEFAULT_TTL_S
from ..coord.reservations import DEFAULT_TTL_S as _RESERVATION_TTL_S
from ..errors import Invalid

__all__ = [
    "Param",
    "Field",
    "Verb",
    "VERBS",
    "VERB",
    "REQUIRED",
    "LEASE_TTL_S",
    "RESERVATION_TTL_S",
    "bind",
    "input_schema",
    "output_schema",
    "python_annotation",
    "request_digest",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

# The defaults every face shows and uses (one place: a default written twice drifts).
LEASE_TTL_S = DEFAULT_TTL_S  # a task's lease
RESERVATION_TTL_S = _RESERVATION_TTL_S  # a path reservation
MAX_TTL_S = 7 * 24 * 3600.0
_INT64 = 2**63 - 1

# The type language: str, int, number, bool, json (any JSON value), object, list[T];
# a trailing "?" admits null.
_SCALARS = {"str": "string", "int": "integer", "number": "number", "bool": "boolean", "object": "object"}
_PY = {"str": "str", "int": "int", "number": "float", "bool": "bool", "json": "Any", "object": "dict[str, Any]"}
_JSON_TYPES = ["object", "array", "string", "number", "boolean", "null"]


@dataclass(frozen=True, slots=True)
class Param:
    """One argument of a verb."""

    name: str
    kind: str
    doc: str
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum (a ttl is more than 0 seconds)
    cli: str | None = None  # the CLI's name for it, when not --name (e.g. the ID argument)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def nullable(self) -> bool:
        return self.kind.endswith("?")

    @property
    def base(self) -> str:
        return self.kind.rstrip("?")


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a verb's answer."""

    name: str
    kind: str
    doc: str
    required: bool = True


@dataclass(frozen=True, slots=True)
class Verb:
    """One verb: what every face offers under this name."""

    name: str
    summary: str
    text: str
    params: tuple[Param, ...]
    result: tuple[Field, ...]
    mutating: bool
    retry_safe: bool
    tool: bool = True  # offered as an MCP tool
    news: bool = True  # the answer carries news and stale
    remembers: str | None = None  # the parameter naming what a context is remembered for: "key" or "id" (a task)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params if not p.required}


# --------------------------------------------------------------------- shared pieces

NEWS = (
    Field("news", "list[object]", "What others changed, since this session last looked, in what it touched."),
    Field("stale", "list[str]", "Keys this session remembers a context of that the news makes out of date."),
    Field("news_truncated", "bool", "More news than one answer carries: call news().", required=False),
)


def _key(doc: str = "A path-like key, e.g. 'notes/auth-design' or 'files/db/migrations/0267.sql'.") -> Param:
    return Param("key", "str", doc)


_VALUE = Param("value", "json", "Any JSON value: object, list, string, number, boolean or null.")
_CONTEXT = Param("context", "str?", "The context of an earlier read; default: this session's last read of the key.", None)
_REQUEST_ID = Param(
    "request_id",
    "str?",
    "An idempotency key (1 to 128 characters): a retry with the same id returns the recorded outcome instead of acting twice.",
    None,
)
_TASK_ID = Param("id", "str", "A task id, e.g. 'T-12'.", cli="ID")
_TOKEN = Param("token", "int", "The fencing token task_claim returned for this task.", minimum=1, maximum=_INT64)
_LEASE_TTL = Param("ttl", "number", "Lease length in seconds.", LEASE_TTL_S, maximum=MAX_TTL_S, above=0)
_PATHS = Param("paths", "list[str]", "File paths or globs, relative to the repository, e.g. ['src/auth/**', 'README.md'].")

_WRITTEN = (
    Field("key", "str", "The key written."),
    Field("op", "str", "put, create or delete."),
    Field("values", "list[json]", "The values now present (several: siblings)."),
    Field("context", "str", "The new context: pass it to the next write of this key."),
    Field("pos", "int", "The event's log position."),
    Field("replayed", "bool", "A retry: the outcome recorded under this request id.", required=False),
    Field("provisional", "list[json]", "On a replica cut off from its upstream, a write under a task's lease: the [lease, token]s"
          " it was kept under, for the upstream to judge when it arrives (fenced if a successor took the lease).", required=False),
)
_TASK = (
    Field("id", "str", "The task's id, e.g. 'T-12'."),
    Field("title", "str", "Its one-line title."),
    Field("state", "str", "open, claimed, orphaned (its holder's lease expired), done or failed."),
    Field("body", "str", "Its description.", required=False),
    Field("assignee", "str?", "Who alone may claim it, if anyone.", required=False),
    Field("lease", "object?", "The live claim: holder, token, expires.", required=False),
    Field("context", "str", "The task's context as read: pass it to task_claim.", required=False),
    Field("checkpoints", "list[object]", "Handoff notes, oldest first.", required=False),
)
_CLAIM = (
    Field("task", "object", "The task, now claimed."),
    Field("token", "int", "The fencing token: pass it to task_checkpoint, task_complete, task_release, task_fail."),
    Field("expires", "number", "When the lease expires (the store's clock, seconds since the epoch)."),
    Field("handoff", "list[object]", "The checkpoints of whoever held it before."),
    Field("replayed", "bool", "A retry: the claim recorded under this request id.", required=False),
)
_TASKS = (Field("tasks", "list[object]", "Tasks, each with id, title, state, assignee, lease and context."),)


def _verb(
    name: str,
    summary: str,
    text: str,
    params: Iterable[Param] = (),
    result: Iterable[Field] = (),
    *,
    mutating: bool,
    retry_safe: bool | None = None,
    tool: bool = True,
    news: bool = True,
    remembers: str | None = None,
) -> Verb:
    ps = tuple(params)
    if retry_safe is None:
        retry_safe = not mutating or any(p.name == "request_id" for p in ps)
    return Verb(name, summary, text, ps, tuple(result) + (NEWS if news else ()), mutating, retry_safe, tool, news, remembers)


# --------------------------------------------------------------------- the table

VERBS: tuple[Verb, ...] = (
    _verb(
        "info", "Where the store is and what it holds.",
        "Where the store is and what it holds: its location, ids, schema version and log head. Example: info()",
        (),
        (Field("location", "str", "Where the store lives."), Field("store_id", "str", "The store's id."),
         Field("replica_id", "str", "This replica's id."), Field("schema_version", "int", "The store's schema version."),
         Field("head", "int", "The log's last position."), Field("max_value_bytes", "int", "The cap on a value's JSON size.")),
        mutating=False, tool=False,
    ),
    _verb(
        "whoami", "The acting agent, its session and news position.",
        "Who you are here: your agent name, your session, the store, and your news position. "
        "Call it first to check the connection. Example: whoami()",
        (),
        (Field("agent", "str?", "The acting agent (none: reads only)."), Field("session", "str", "This session's id."),
         Field("store", "str", "The store's location."), Field("store_id", "str", "The store's id."),
         Field("replica", "str", "The replica's id."), Field("position", "int", "The log position this session's news starts after."),
         Field("agent_from", "str", "How the agent's name was chosen: --agent, COMITY_AGENT, the worktree, the token.", required=False),
         Field("store_from", "str", "Why the store is where it is.", required=False),
         Field("warning", "str", "Something about this setup you must know (a store nobody else shares).", required=False)),
        mutating=False,
    ),
    _verb(
        "read", "A key's values (several if siblings) and the context to write with.",
        "Read a key: its values and the context of your read. One value is the normal case; several are siblings "
        "(concurrent writes nobody resolved yet): merge them and write the result, which replaces them all. "
        "Your session remembers what you read, so a later write(key=...) is checked against it. An absent key has "
        'values []. Example: read(key="notes/auth-design")',
        (_key(),),
        (Field("key", "str", "The key read."), Field("values", "list[json]", "Its live values: none, one, or several siblings."),
         Field("context", "str", "The context of this read: what a write over it is checked against."),
         Field("type", "str", "The CRDT type, for keys changed with update.", required=False)),
        mutating=False, remembers="key",
    ),
    _verb(
        "write", "Write a value over what `context` saw (default: this session's last read); refused if it changed since.",
        "Write a JSON value to a key over what you last read of it. Refused if anyone changed the key since your read "
        "(the error names who): read it again, merge, and retry; or pass keep_both=true to keep both values as siblings. "
        "A key you never read is written only if it is absent (to take a new name, prefer create). While you hold a "
        "task, pass task and token to make the write count only if your claim is still current. "
        'Example: write(key="notes/auth-design", value={"status": "agreed", "by": "alice"})',
        (_key(), _VALUE, _CONTEXT,
         Param("keep_both", "bool", "If the key changed since your read, keep your value beside the newer one as a sibling instead of failing.", False),
         Param("task", "str?", "A task you hold: the write counts only if your claim on it (token) is still current.", None),
         Param("token", "int?", "The fencing token of your claim on task.", None, minimum=1, maximum=_INT64),
         _REQUEST_ID),
        _WRITTEN, mutating=True, remembers="key",
    ),
    _verb(
        "create", "Write a value only if the key does not exist; refused naming the holder if it does.",
        "Create a key only if it does not exist: the safe way to take a name (a migration file, a branch, a lock). "
        "Refused, naming who holds it, if it exists: pick another name. For a numbered file in the repository (a "
        "migration) use migration_new instead, which takes the number and creates the file. "
        'Example: create(key="files/db/migrations/0267_add_index.sql", value={"task": "T-12"})',
        (_key(), _VALUE, _REQUEST_ID),
        _WRITTEN, mutating=True, remembers="key",
    ),
    _verb(
        "delete", "Leave a tombstone, if nothing changed since `context`.",
        "Delete a key you read, if nobody changed it since (it leaves a tombstone). Example: delete(key=\"notes/old-plan\")",
        (_key(), _CONTEXT, _REQUEST_ID),
        _WRITTEN, mutating=True, remembers="key",
    ),
    _verb(
        "update", "Apply a CRDT operation (typed by `type` on a key's first update): merges, never stale.",
        "Apply a CRDT operation to a key (counters, sets, registers): it merges with everyone else's and is never "
        'refused as stale. Example: update(key="labels/T-12", op="add", arg="backend", type="orset")',
        (_key(),
         Param("op", "str", "The operation: gcounter/pncounter 'inc'/'dec', orset 'add'/'remove', lww/mvreg 'set', flag 'enable'/'disable', ormap ops, bcounter 'inc'/'dec'/'transfer' (and 'escrow' N on a replica: take N rights from the upstream)."),
         Param("arg", "json", "The operation's JSON argument, e.g. 1 or 'backend'.", None),
         Param("type", "str?", "The CRDT type, on a key's first update: gcounter, pncounter, lww, mvreg, orset, flag, ormap, bcounter.", None),
         _REQUEST_ID),
        (Field("key", "str", "The key updated."), Field("type", "str", "Its CRDT type."), Field("value", "json", "Its merged value now."),
         Field("context", "str", "The key's context after the update."), Field("pos", "int", "The event's log position."),
         Field("replayed", "bool", "A retry: the outcome recorded under this request id.", required=False)),
        mutating=True, remembers="key",
    ),
    _verb(
        "news", "What other sessions changed since this session last looked, and suspected agents.",
        "Everything other agents changed since you last looked (each answer already carries the news about what you "
        "touched), and agents suspected of being stuck. Example: news()",
        (Param("limit", "int", "At most this many events.", 50, minimum=1, maximum=1000),),
        (Field("position", "int", "The log position this session has now been shown."),
         Field("suspected", "list[object]", "Agents suspected of being stuck, and what they hold.")),
        mutating=False,
    ),
    _verb(
        "log", "The event log (the audit trail), optionally of one key.",
        "The event log, the audit trail: who did what, in order, optionally of one key. Example: log(key=\"notes/plan\", limit=20)",
        (Param("key", "str?", "Only the events of this key.", None),
         Param("after", "int", "Only events after this log position.", 0, minimum=0, maximum=_INT64),
         Param("limit", "int", "At most this many events.", 100, minimum=1, maximum=10_000)),
        (Field("events", "list[object]", "Events in log order, each with pos, key, op, agent, session and value."),),
        mutating=False, tool=False,
    ),
    _verb(
        "keys", "Keys under a prefix.",
        'List keys starting with a prefix (comity\'s own \'@\' keys only when the prefix starts with \'@\'). Example: keys(prefix="notes/")',
        (Param("prefix", "str", "Only keys starting with this, e.g. 'notes/'.", ""),
         Param("limit", "int", "At most this many keys.", 200, minimum=1, maximum=100_000),
         Param("deleted", "bool", "Also list deleted keys (they keep a tombstone).", False)),
        (Field("keys", "list[str]", "The keys, in order."),),
        mutating=False,
    ),
    _verb(
        "task_add", "Add a task to the board.",
        "Add a task to the board; the answer's `id` names it. "
        'Example: task_add(title="Fix login timeout", body="Sessions expire after 5 min", deps=["T-3"], labels=["backend"])',
        (Param("title", "str", "A one-line title."),
         Param("body", "str", "The longer description.", ""),
         Param("deps", "list[str]?", "Ids of tasks that must be done first, e.g. ['T-3'].", None),
         Param("labels", "list[str]?", "Labels, e.g. ['backend'].", None),
         Param("assignee", "str?", "Assign it at once: only this agent may claim it.", None),
         _REQUEST_ID),
        _TASK, mutating=True,
    ),
    _verb(
        "task_list", "Every task with its state and who holds it.",
        'Every task with its state and who holds it. Example: task_list(state="claimed")',
        (Param("state", "str?", "Only tasks in this state: open, claimed, orphaned, done or failed.", None),),
        _TASKS, mutating=False,
    ),
    _verb(
        "task_ready", "Tasks this agent may claim now.",
        "Tasks you may claim now: open (or orphaned by an agent that died), unassigned or assigned to you, "
        "dependencies done. Pick one and task_claim it. Example: task_ready()",
        (), _TASKS, mutating=False,
    ),
    _verb(
        "task_show", "One task, with the context to claim it with.",
        'One task: its body, state, holder, checkpoints (handoff notes). Example: task_show(id="T-12")',
        (_TASK_ID,), _TASK, mutating=False, remembers="id",
    ),
    _verb(
        "task_assign", "Assign a task to an agent: only that agent may then claim it.",
        'Assign a task to an agent: only that agent may then claim it (null: unassign). Example: task_assign(id="T-12", agent="bob")',
        (_TASK_ID, Param("agent", "str?", "The agent's name, e.g. 'bob' (null: nobody).", cli="AGENT"), _REQUEST_ID),
        _TASK, mutating=True,
    ),
    _verb(
        "task_claim", "Claim a task; answers the fencing token.",
        "Claim a task before working on it. The answer has `token` (pass it to task_checkpoint, task_complete, "
        "task_release), `expires`, and `handoff`: the notes of whoever held it before. Refused if another agent holds "
        "it, or it changed since you read it: the error names who; call task_ready() for other work. "
        'Example: task_claim(id="T-12")',
        (_TASK_ID,
         Param("context", "str?", "The task's context as you last read it; default: this session's last read of the task.", None),
         _LEASE_TTL,
         Param("steal", "bool", "Take the task from an agent suspected to be stuck (see news()).", False),
         _REQUEST_ID),
        _CLAIM, mutating=True, remembers="id",
    ),
    _verb(
        "task_claim_next", "Claim a ready task; answers the fencing token.",
        "Claim one of the first 32 ready tasks, at random so that agents claiming at once rarely race for one"
        " (trying another when another agent wins it first); task_claim takes a given one. The answer is task_claim's. "
        "Example: task_claim_next()",
        (_LEASE_TTL, _REQUEST_ID),
        _CLAIM, mutating=True,
    ),
    _verb(
        "task_renew", "Extend this agent's lease on a task.",
        'Extend your lease on a task during long silent work (a checkpoint renews it too). Example: task_renew(id="T-12", token=7)',
        (_TASK_ID, _TOKEN,
         Param("ttl", "number?", "Lease length in seconds from now (default: the length it was claimed or last renewed with).", None,
               maximum=MAX_TTL_S, above=0),
         _REQUEST_ID),
        (Field("id", "str", "The task."), Field("token", "int", "Your token."), Field("expires", "number", "When the lease now expires."),
         Field("ttl", "number", "The lease's length.")),
        mutating=True,
    ),
    _verb(
        "task_checkpoint", "Record a handoff note on a task this agent holds.",
        "Record progress on a task you hold: if you stop, whoever takes over gets this note. Renews your lease. "
        'Example: task_checkpoint(id="T-12", token=7, note="migration written; tests next")',
        (_TASK_ID, _TOKEN, Param("note", "str", "What is done and what is next."), _REQUEST_ID),
        _TASK, mutating=True,
    ),
    _verb(
        "task_complete", "Complete a task this agent holds (refused if its token was superseded).",
        "Complete a task you hold. Refused if your token was superseded (another agent took over): stop, and call "
        'task_ready(). Example: task_complete(id="T-12", token=7, result="fixed in 3f2a1c")',
        (_TASK_ID, _TOKEN, Param("result", "str", "What came of it: a commit, a summary.", ""), _REQUEST_ID),
        _TASK + (Field("replayed", "bool", "A retry: the completion already recorded.", required=False),),
        mutating=True,
    ),
    _verb(
        "task_release", "Give a held task back to the queue.",
        'Give a task you hold back to the queue, for someone else. Example: task_release(id="T-12", token=7)',
        (_TASK_ID, _TOKEN, _REQUEST_ID), _TASK, mutating=True,
    ),
    _verb(
        "task_fail", "Mark a held task failed.",
        'Mark a task you hold failed. Example: task_fail(id="T-12", token=7, reason="needs a product decision")',
        (_TASK_ID, _TOKEN, Param("reason", "str", "Why it cannot be done.", ""), _REQUEST_ID), _TASK, mutating=True,
    ),
    _verb(
        "seq_next", "The next number of a sequence: unique, increasing, never reissued.",
        "Take the next number of a sequence: unique and increasing, never handed out twice, starting at 1; it knows "
        "nothing of files. Use it for ticket ids and other counters; for a migration file use migration_new, which "
        'numbers it after every file in every worktree and branch. Example: seq_next(name="tickets")',
        (Param("name", "str", "The sequence, e.g. 'tickets'.", cli="NAME"), _REQUEST_ID),
        (Field("sequence", "str", "The sequence."), Field("value", "int", "Your number.")),
        mutating=True,
    ),
    # ------------------------------------------------ numbered files (comity.work.numbers, comity.repo.worktree)
    _verb(
        "migration_new", "Take the next migration number of a directory and create the file in your worktree.",
        "Create a new migration (or any numbered file) in your git worktree: the number is the next one after every "
        "file of that directory in every worktree and local branch, taken from one authority, so two agents never get "
        "the same one. The answer's path is the new file (write your SQL into it) and number its number; the git hooks "
        "accept it. Never pick a number by looking at the directory, nor create a numbered file yourself. "
        'Example: migration_new(slug="add_users", dir="db/migrations")',
        (Param("slug", "str", "What the migration does, in letters, digits and underscores, e.g. 'add_users'.", cli="SLUG"),
         Param("dir", "str?", "The migrations directory relative to the repository root, e.g. 'db/migrations'; default: the only one known.", None),
         Param("template", "str?", "The file-name layout: sql ({n:04d}_{slug}.sql, the default), rails, django, alembic, or a "
               "pattern with {slug} and one of {n:04d}, {ts}, {rev}; default: the directory's known layout.", None),
         Param("task", "str?", "The task this migration is for: asking again for the same task and slug gets the same number.", None),
         Param("worktree", "str?", "The absolute path of your git worktree, when the server does not run in it "
               "(comity mcp --http); default: the worktree the server runs in.", None),
         _REQUEST_ID),
        (Field("path", "str", "The new file's absolute path: write into it."),
         Field("number", "int", "Its number (for rails, the timestamp; for alembic, the sequence number of its revision)."),
         Field("file", "str", "The file relative to the repository root."), Field("dir", "str", "The migrations directory."),
         Field("template", "str", "The directory's layout."), Field("agent", "str", "Who took the number."),
         Field("worktree", "str?", "The worktree it was created in."), Field("branch", "str?", "That worktree's branch."),
         Field("task", "str?", "The task it is for."),
         Field("revision", "str", "Alembic: the new revision id.", required=False),
         Field("held", "bool", "The task already held this number (asked again): nothing new was taken.", required=False)),
        mutating=True,
    ),
    _verb(
        "migration_check", "Duplicate migration numbers (and several heads) across every worktree and branch.",
        "Check migration directories for numbers used twice across every worktree and local branch (and, for Django "
        "and Alembic, several heads); each problem says how to fix it. Call it before committing migrations. "
        'Example: migration_check(dir="db/migrations")',
        (Param("dir", "str?", "Only this directory, relative to the repository root; default: every known one.", None),
         Param("template", "str?", "The directory's layout, if comity does not know it yet.", None),
         Param("worktree", "str?", "The absolute path of your git worktree, when the server does not run in it.", None)),
        (Field("ok", "bool", "No problem found."),
         Field("problems", "list[object]", "Each with kind, message, fix, and the files and places involved.")),
        mutating=False,
    ),
    _verb(
        "migration_take", "The store's half of migration_new: a number above `floor`, recorded as the caller's.",
        "Take a number for a new file of a directory, above floor (the highest number the caller found in every "
        "worktree and branch) and every number taken before, and record it as yours with the file's name; create the "
        "file yourself. migration_new does both where it can reach your worktree. "
        'Example: migration_take(dir="db/migrations", slug="add_users", floor=266)',
        (Param("dir", "str", "The migrations directory relative to the repository root."),
         Param("slug", "str", "What the migration does, e.g. 'add_users'."),
         Param("template", "str?", "The layout, remembered for dir; default: the remembered one, else guess.", None),
         Param("guess", "str?", "The layout the caller's files suggest, used when none is given or remembered.", None),
         Param("floor", "int", "The highest number already used in dir anywhere.", 0, minimum=0, maximum=_INT64),
         Param("unit", "str?", "What the number is for (a task and a slug): one unit keeps one number; default: the request.", None),
         Param("revision", "str?", "Alembic: the new revision id.", None),
         Param("task", "str?", "The task it is for.", None),
         Param("worktree", "str?", "The worktree the file will be created in (recorded).", None),
         Param("branch", "str?", "That worktree's branch (recorded).", None),
         Param("detail", "object?", "More to record (dependencies, down_revision).", None),
         _REQUEST_ID),
        (Field("number", "int", "The number."), Field("file", "str", "The file to create, relative to the repository root."),
         Field("dir", "str", "The directory."), Field("template", "str", "Its layout."), Field("agent", "str", "Who took it."),
         Field("held", "bool", "The unit held this number already.", required=False)),
        mutating=True, tool=False,
    ),
    _verb(
        "migration_dirs", "Directories migration numbers were taken in, and their layouts.",
        "Every directory migration numbers were taken in, and its file-name layout. Example: migration_dirs()",
        (), (Field("dirs", "object", "Directory -> layout."),), mutating=False, tool=False,
    ),
    _verb(
        "seq_reserve", "On a replica: take a block of a sequence's numbers from the upstream now, to spend offline.",
        "On a replica that may lose its link to the upstream (a sandbox, a laptop), take a block of numbers of a "
        "sequence while connected: seq_next then takes them here, connected or not, and nobody else is ever given "
        'them. Example: seq_reserve(name="migrations", count=20)',
        (Param("name", "str", "The sequence, e.g. 'migrations'.", cli="NAME"),
         Param("count", "int", "How many numbers to take now.", minimum=1, maximum=1_000_000),
         _REQUEST_ID),
        (Field("sequence", "str", "The sequence."), Field("first", "int", "The block's first number."),
         Field("last", "int", "The block's last number."), Field("count", "int", "How many were taken."),
         Field("escrowed", "int", "Numbers of this sequence now held here, not yet spent.")),
        mutating=True,
    ),
    _verb(
        "reserve_paths", "Reserve paths or globs (exclusive unless `shared`); refused naming the holder on overlap.",
        "Reserve files or globs before editing them, so no one else edits them at once. Exclusive unless shared=true; "
        'refused, naming the holder, on overlap. Example: reserve_paths(paths=["src/auth/**"], ttl=1800)',
        (_PATHS,
         Param("ttl", "number", "Seconds the reservation lasts.", RESERVATION_TTL_S, maximum=MAX_TTL_S, above=0),
         Param("shared", "bool", "Shared: others may reserve overlapping paths shared too.", False),
         _REQUEST_ID),
        (Field("reservations", "list[object]", "What you now hold: pattern, holder, shared, token, expires."),
         Field("decisions", "list[object]", "Decisions recorded on these paths: read them before changing the code.")),
        mutating=True,
    ),
    _verb(
        "release_paths", "Release this agent's reservations of paths or globs.",
        'Release your reservations of these paths or globs. Example: release_paths(paths=["src/auth/**"])',
        (_PATHS, _REQUEST_ID), (Field("released", "list[str]", "The patterns released."),), mutating=True,
    ),
    _verb(
        "reservations", "Live path reservations.",
        "Every live path reservation and who holds it. Example: reservations()",
        (), (Field("reservations", "list[object]", "pattern, holder, shared, token, expires."),), mutating=False,
    ),
    _verb(
        "agents", "Agents seen in the log: progress, suspicion, what each holds.",
        "Agents seen lately: their progress, whether they are suspected of being stuck, what they hold. Example: agents()",
        (Param("ttl", "number", "Never suspect an agent silent for less than this many seconds.", LEASE_TTL_S, maximum=MAX_TTL_S, above=0),),
        (Field("agents", "list[object]", "agent, actions, last_action, last_heartbeat, silent_s, phi, suspected, holds."),),
        mutating=False,
    ),
    _verb(
        "why", "The causal history of a task or key.",
        "The causal history of a task or key: who did what, and what each had seen. Use it to understand a refusal "
        'or a conflict. Example: why(target="T-12")',
        (Param("target", "str", "A task id (e.g. 'T-12') or a key.", cli="TASK_OR_KEY"),),
        (Field("target", "str", "What was asked about."), Field("key", "str", "The key it stands for."),
         Field("history", "list[object]", "Its events, with what each author had seen."),
         Field("explanations", "list[str]", "Which actions were concurrent, in words.")),
        mutating=False,
    ),
    # ------------------------------------------------ changes and verification (docs/verification.md)
    _verb(
        "change_submit", "Submit a change for a task: its commit, the checks it claims pass, what it was built on.",
        "Submit your work on a task as a change: its commit (or the sha256 of its diff), the shell commands you claim "
        "pass, and what it was built on (other changes, base commits, and by default every key this session read). It "
        "is accepted by policy: re-execution of its checks and/or attestations from other agents. "
        'Example: change_submit(task="T-12", commit="3f2a1c9", checks=["pytest -q tests/test_auth.py"])',
        (Param("task", "str", "The task this change is for, e.g. 'T-12'."),
         Param("commit", "str?", "The change's commit.", None),
         Param("checks", "list[str]?", "Shell commands the change claims pass.", None),
         Param("on", "list[str]?", "Changes this one was built on, e.g. ['C-3'].", None),
         Param("diff", "str?", "Without a commit: the sha256 of the change's diff.", None),
         Param("commits", "list[str]?", "Commits this one was built on.", None),
         Param("reads", "list[str]?", "Keys the work was based on, at the context this session read them (default: every key it read).", None),
         Param("paths", "list[str]?", "Paths the change touches (for path policies).", None),
         Param("note", "str", "What the change is.", ""),
         _REQUEST_ID),
        (Field("id", "str", "The change's id, e.g. 'C-4'."), Field("state", "str", "submitted, accepted, refuted or tainted."),
         Field("task", "str", "Its task."),
         Field("replayed", "bool", "A retry: the change recorded under this request id.", required=False)),
        mutating=True,
    ),
    _verb(
        "change_show", "One change: state, provenance, verifications, attestations, what was built on it.",
        'One change: its state, provenance, verifications, attestations, and the changes built on it. Example: change_show(id="C-4")',
        (Param("id", "str", "A change id, e.g. 'C-4'.", cli="ID"),),
        (Field("id", "str", "The change."), Field("state", "str", "submitted, accepted, refuted or tainted."),
         Field("task", "str", "Its task."), Field("provenance", "str", "The digest of what it claims and was built on.")),
        mutating=False,
    ),
    _verb(
        "change_list", "Every change with its state.",
        'Every change with its state, optionally in one state or of one task. Example: change_list(state="submitted")',
        (Param("state", "str?", "Only changes in this state: submitted, accepted, refuted or tainted.", None),
         Param("task", "str?", "Only changes of this task.", None)),
        (Field("changes", "list[object]", "Changes, oldest first."),),
        mutating=False,
    ),
    _verb(
        "verify", "Re-run a change's claimed checks at its commit in a clean worktree.",
        "Re-run a change's claimed checks at its commit in a clean git worktree: passed accepts it (if its policy needs "
        'no more), failed refutes it. Example: verify(id="C-4")',
        (Param("id", "str", "A change id, e.g. 'C-4'.", cli="ID"),
         Param("timeout", "number?", "Seconds each claimed check may run (default 600).", None, maximum=MAX_TTL_S, above=0),
         _REQUEST_ID),
        (Field("id", "str", "The change."), Field("outcome", "str", "passed, failed, or error (could not check)."),
         Field("state", "str", "The change's state now."), Field("verification", "object", "What ran: each check's exit code, time and output digest."),
         Field("replayed", "bool", "A retry: the verification recorded under this request id (the checks are not run again).", required=False)),
        mutating=True,
    ),
    _verb(
        "refute", "Mark a change refuted: every change built on it is tainted and its task reopens.",
        'Mark a change wrong: every change built on it is tainted, and their tasks reopen. Example: refute(id="C-4", reason="breaks login on Safari")',
        (Param("id", "str", "A change id, e.g. 'C-4'.", cli="ID"), Param("reason", "str", "Why the change is wrong."), _REQUEST_ID),
        (Field("id", "str", "The change."), Field("state", "str", "refuted."),
         Field("replayed", "bool", "A retry: the refutation recorded under this request id.", required=False)),
        mutating=True,
    ),
    _verb(
        "attest", "Record a signed approval of a change.",
        "Approve a change you reviewed with a signed attestation (in-toto statement in a DSSE envelope): signed here "
        'with your key, or the envelope you pass. Example: attest(id="C-4")',
        (Param("id", "str", "A change id, e.g. 'C-4'.", cli="ID"),
         Param("envelope", "object?", "A signed DSSE envelope to record instead of signing one here.", None),
         _REQUEST_ID),
        (Field("id", "str", "The change."), Field("state", "str", "Its state now."),
         Field("replayed", "bool", "A retry: the attestation recorded under this request id.", required=False)),
        mutating=True,
    ),
    _verb(
        "key_register", "Register this agent's public key for attestations.",
        "Register your Ed25519 public key (PEM), so that attestations you sign are checked against it. "
        'Example: key_register(public_key="-----BEGIN PUBLIC KEY-----...")',
        (Param("public_key", "str", "The public key, PEM."), _REQUEST_ID),
        (Field("agent", "str", "Whose key."), Field("keyid", "str", "The key's id."), Field("registered", "bool", "False if it was already."),
         Field("replayed", "bool", "A retry: the registration recorded under this request id.", required=False)),
        mutating=True, tool=False,
    ),
    _verb(
        "policy_set", "Set (or remove) the acceptance policy of a scope.",
        "Set how changes in a scope are accepted: attestations needed from distinct agents other than the author, and "
        "whether a passing re-execution is needed. Scopes: 'default', 'label:NAME', 'path:GLOB'. "
        'Example: policy_set(scope="label:security", attestations=2)',
        (Param("scope", "str", "'default', 'label:NAME' or 'path:GLOB'.", cli="SCOPE"),
         Param("attestations", "int", "Signed approvals needed from distinct agents other than the author.", 0, minimum=0, maximum=64),
         Param("reexecute", "bool", "Whether a passing re-execution of the claimed checks is needed.", True),
         Param("remove", "bool", "Remove the scope's policy instead.", False),
         _REQUEST_ID),
        (Field("policies", "object", "Every stored policy, by scope."),
         Field("replayed", "bool", "A retry: the policies as recorded under this request id.", required=False)),
        mutating=True, tool=False,
    ),
    _verb(
        "policy_list", "Every stored acceptance policy.",
        "Every stored acceptance policy, by scope. Example: policy_list()",
        (), (Field("policies", "object", "Every stored policy, by scope."),), mutating=False, tool=False,
    ),
    _verb(
        "heartbeat", "Tell the store this agent is alive.",
        "Tell the store you are alive (a host does this for you). Example: heartbeat()",
        (), (Field("pos", "int", "The heartbeat's log position."),),
        mutating=True, retry_safe=True, tool=False, news=False,
    ),
)

VERB: Mapping[str, Verb] = {v.name: v for v in VERBS}


# --------------------------------------------------------------------- binding


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check(p: Param, value: Any, path: str) -> Any:
    if value is None:
        if p.nullable:
            return None
        raise Invalid(path, f"must be {_describe(p.base)}, not null")
    base = p.base
    if base == "json":
        return value
    if base == "str":
        if not isinstance(value, str):
            raise Invalid(path, f"must be a string, got {_type_name(value)}")
    elif base == "bool":
        if not isinstance(value, bool):
            raise Invalid(path, f"must be true or false, got {_type_name(value)}")
    elif base == "int":
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"must be an integer, got {_type_name(value)}")
    elif base == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(path, f"must be a number, got {_type_name(value)}")
        try:  # an integer past float's range (10**400) is no more a number of seconds than inf is
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise Invalid(path, "must be a finite number")
    elif base == "object":
        if not isinstance(value, dict):
            raise Invalid(path, f"must be a JSON object, got {_type_name(value)}")
    elif base.startswith("list["):
        if not isinstance(value, (list, tuple)):
            raise Invalid(path, f"must be a list, e.g. [\"a\", \"b\"], got {_type_name(value)}")
        item = Param(p.name, base[5:-1], p.doc)
        value = [_check(item, x, f"{path}.{i}") for i, x in enumerate(value)]
    if p.minimum is not None and value < p.minimum or p.maximum is not None and value > p.maximum or (
        p.above is not None and value <= p.above
    ):
        raise Invalid(path, f"must be in {_range(p)}, got {value!r}")
    return value


def _range(p: Param) -> str:
    low = f"({_num(p.above)}" if p.above is not None else f"[{_num(p.minimum)}" if p.minimum is not None else "(-inf"
    high = f"{_num(p.maximum)}]" if p.maximum is not None else "inf)"
    return f"{low}, {high}"


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def _describe(base: str) -> str:
    return {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false", "object": "a JSON object"}.get(
        base, "a list" if base.startswith("list[") else "a JSON value"
    )


def bind(verb: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments of a call of ``verb``, checked against the table, defaults filled in.

    Unknown verbs, unknown arguments, missing required ones and wrong types are refused
    as :class:`Invalid` naming the argument (``paths.1`` for an item of a list)."""
    v = VERB.get(verb) if isinstance(verb, str) else None
    if v is None:
        raise Invalid("verb", f"unknown verb {str(verb)[:60]!r}; the verbs are: {', '.join(VERB)}")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise Invalid("args", f"{verb}: the arguments must be a JSON object, got {_type_name(args)}")
    names = v.names
    for name in args:
        if name not in names:
            takes = ", ".join(names) or "no arguments"
            raise Invalid(str(name)[:60], f"is not an argument of {verb}; it takes: {takes}")
    out: dict[str, Any] = {}
    for p in v.params:
        if p.name in args:
            out[p.name] = _check(p, args[p.name], p.name)
        elif p.required:
            raise Invalid(p.name, f"is required: {p.doc}")
        else:
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


# --------------------------------------------------------------------- schemas


def _schema(kind: str) -> dict[str, Any]:
    base = kind.rstrip("?")
    if base == "json":
        return {"anyOf": [{"type": t} for t in _JSON_TYPES]}
    if base.startswith("list["):
        out: dict[str, Any] = {"type": "array", "items": _schema(base[5:-1])}
    else:
        out = {"type": _SCALARS[base]}
    if kind.endswith("?"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _param_schema(p: Param) -> dict[str, Any]:
    s = _schema(p.kind)
    target = s["anyOf"][0] if p.nullable and "anyOf" in s and p.base != "json" else s
    if p.minimum is not None:
        target["minimum"] = p.minimum
    if p.maximum is not None:
        target["maximum"] = p.maximum
    if p.above is not None:
        target["exclusiveMinimum"] = p.above
    s["description"] = p.doc
    if not p.required:
        s["default"] = list(p.default) if isinstance(p.default, tuple) else p.default
    return s


def input_schema(verb: Verb) -> dict[str, Any]:
    """The JSON Schema of a call's arguments: an object with exactly the verb's parameters."""
    return {
        "type": "object",
        "properties": {p.name: _param_schema(p) for p in verb.params},
        "required": [p.name for p in verb.params if p.required],
        "additionalProperties": False,
    }


_ITEM_WORDS = {"str": "a string", "int": "an integer", "number": "a number", "bool": "true or false", "object": "an object"}


def _result_schema(kind: str, doc: str) -> dict[str, Any]:
    # An answer's list is an array without ``items``; its description names what each item
    # is.  The official MCP client checks every answer against the tool's outputSchema with
    # jsonschema, which descends into a subschema once per item: ``stale`` (every key whose
    # remembered context is out of date, on every answer) or a board of tasks made that check
    # cost more than the rest of the call.  A single value keeps its type (an anyOf of single
    # types for any JSON value: ``{}`` constrains nothing and a list of types is less
    # portable; MCP Inspector's --strict warns of both).  Arguments keep typed items: comity
    # checks them itself (``bind``).
    base = kind.rstrip("?")
    if base.startswith("list["):
        item = _ITEM_WORDS.get(base[5:-1])
        out: dict[str, Any] = {"type": "array", "description": f"{doc} Each item is {item}." if item else doc}
        return {"anyOf": [out, {"type": "null"}]} if kind.endswith("?") else out
    s = _schema(kind)
    s["description"] = doc
    return s


def output_schema(verb: Verb) -> dict[str, Any]:
    """The JSON Schema of a verb's answer (other fields may appear beside the declared ones)."""
    return {
        "type": "object",
        "properties": {f.name: _result_schema(f.kind, f.doc) for f in verb.result},
        "required": [f.name for f in verb.result if f.required],
        "additionalProperties": True,
    }


def python_annotation(kind: str) -> str:
    """How :class:`comity.work.Agent` annotates a parameter of this kind (``str | None`` for
    ``str?``).  A list with a default is nullable, its default None (a Python default is
    never a mutable list)."""
    base = kind.rstrip("?")
    py = f"list[{python_annotation(base[5:-1])}]" if base.startswith("list[") else _PY[base]
    return f"{py} | None" if kind.endswith("?") else py


def request_digest(agent: str | None, verb: str, args: Mapping[str, Any]) -> str:
    """What makes two calls with one request id "the same request": the agent, the verb and
    the arguments as the caller gave them (the request id aside)."""
    given = {k: v for k, v in args.items() if k != "request_id"}
    body = json.dumps([agent, verb, given], sort_keys=True, ensure_ascii=False, default=str)
    return "verb:" + hashlib.sha256(body.encode()).hexdigest()
