"""Words the faces share: what an internal key means, a news event on one line, and the
next step of an error as each face writes it (a CLI command, an MCP tool call).

Pure functions over JSON, below every layer (like :mod:`comity.errors`), so that any
face, and the harness's commands, may use them.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["describe_key", "news_line", "tool_call", "CliForm", "CLI_FORMS", "cli_command"]

# comity's own keys ('@…'), as what they mean to an agent.
_MEANINGS: list[tuple[str, Callable[[str], str]]] = [
    ("@task/", lambda rest: f"task {rest}"),
    ("@open/", lambda rest: f"the ready queue (task T-{int(rest)})" if rest.isdigit() else "the ready queue"),
    ("@seq/", lambda rest: f"sequence {rest}"),
    ("@lease/@task/", lambda rest: f"the lease of task {rest}"),
    ("@lease/", lambda rest: f"the lease on {rest}"),
    ("@reservations", lambda rest: "the path reservations"),
    ("@agent/", lambda rest: f"agent {rest}"),
    ("@auth/", lambda rest: f"{rest}'s token"),
    ("@decision-ack/", lambda rest: f"an acknowledgement of decision {rest}"),
    ("@decision-ok/", lambda rest: f"an acceptance of decision {rest}"),
    ("@decision/", lambda rest: f"decision {rest}"),
    ("@decisions", lambda rest: "the decisions"),
    ("@migration-dir/", lambda rest: f"the migrations directory {rest}"),
    ("@migration/", lambda rest: f"migration {rest}"),
]


def describe_key(key: object) -> str:
    """``@task/T-1`` as "task T-1"; an agent's own key as itself."""
    if not isinstance(key, str):
        return str(key)
    if key.startswith("@"):
        for prefix, say in sorted(_MEANINGS, key=lambda m: -len(m[0])):
            if key.startswith(prefix):
                return say(key[len(prefix) :])
    return key


_OPS = {
    "task.add": "added", "task.open": "queued", "task.claimed": "dequeued", "task.assign": "assigned",
    "task.claim": "claimed", "task.checkpoint": "checkpointed", "task.done": "completed", "task.fail": "failed",
    "task.release": "released", "task.claim-refused": "was refused a claim of",
}  # fmt: skip


def news_line(n: Mapping[str, Any]) -> str:
    """One event as a person or a model reads it: "bob claimed task T-3 (pos 12)"."""
    op = str(n.get("op", "?"))
    what = describe_key(n.get("key", "?"))
    verb = _OPS.get(op, op)
    extra = f" token {n['token']}" if "token" in n else ""
    if op == "task.assign" and isinstance(n.get("value"), dict):
        extra += f" to {n['value'].get('assignee')}"
    # An event a refusal forwarded from the authority names, not pulled here yet, has no position here.
    where = f"pos {n['pos']}" if "pos" in n else "not in this log yet"
    return f"{n.get('agent', '?')} {verb} {what}{extra} ({where})"


def _value(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def tool_call(verb: str, args: Mapping[str, Any]) -> str:
    """A next step as an MCP tool call: ``read(key="notes/plan")``."""
    return f"{verb}({', '.join(f'{k}={_value(v)}' for k, v in args.items())})"


@dataclass(frozen=True)
class CliForm:
    """How a verb is typed on the command line: its command, positional arguments in order,
    and the flag of each option (a bool option is a bare flag)."""

    path: str
    positional: tuple[str, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)
    json_args: frozenset[str] = frozenset()  # arguments typed as JSON text

    def render(self, args: Mapping[str, Any]) -> str:
        words = ["comity", *self.path.split()]
        for name in self.positional:
            if name in args and args[name] is not None:
                words.append(shlex.quote(self._text(name, args[name])))
        for name, v in args.items():
            if name in self.positional or v is None or v is False:
                continue
            flag = self.flags.get(name, "--" + name.replace("_", "-"))
            if v is True:
                words.append(flag)
            elif isinstance(v, (list, tuple)):
                for item in v:
                    words += [flag, shlex.quote(str(item))]
            else:
                words += [flag, shlex.quote(self._text(name, v))]
        return " ".join(words)

    def _text(self, name: str, v: Any) -> str:
        return _value(v) if name in self.json_args else str(v)


# verb -> its command line; the CLI registers one per command that maps onto a verb.
CLI_FORMS: dict[str, CliForm] = {}


def cli_command(verb: str, args: Mapping[str, Any]) -> str:
    """A next step as a command: ``comity get notes/plan``."""
    form = CLI_FORMS.get(verb)
    if form is None:
        return tool_call(verb, args)
    return form.render(args)
