"""The small kit every ``comity`` command module uses: the consoles, JSON output, news on
stderr, errors rendered in the CLI's idiom (exit codes, the next step as a command), the
``command`` decorator, and :class:`Ctx` (what the global options chose).

It depends on nothing of comity but :mod:`comity.errors` and :mod:`comity.render`, so
command modules of any layer (the harness's included) can use it; :mod:`comity.cli`
hands :class:`Ctx` the functions that open a store and an agent session.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

import click
from rich.console import Console

from .errors import ComityError
from .render import cli_command, news_line

__all__ = [
    "Ctx",
    "Verbs",
    "Opener",
    "out",
    "err",
    "print_json",
    "print_news",
    "news_of",
    "fail",
    "closed_pipe",
    "command",
    "FIELD_FIXES",
]

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

# How to fix, on the command line, an input that is not a verb's argument.
FIELD_FIXES: dict[str, str] = {
    "agent": "pass --agent NAME or set COMITY_AGENT",
    "auth": "pass --auth TOKEN or set COMITY_AUTH (`comity agent add NAME` issues one)",
    "session": "pass --session NAME (letters, digits and _ . - @ + :) or set COMITY_SESSION",
}


class Verbs(Protocol):
    """The verbs of one agent session: :class:`comity.work.Agent` or :class:`comity.remote.RemoteAgent`."""

    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]: ...


class Opener(Protocol):
    """How :class:`Ctx` opens what the global options name (given by :mod:`comity.cli`).
    ``create``: make the store if it is missing (None: decide by what the command does)."""

    def store(self, ctx: Ctx, create: bool | None = None) -> Any: ...

    def agent(self, ctx: Ctx) -> Verbs: ...


class Ctx:
    """What the global options chose: where the store is, who is acting, in which session,
    and how they prove it."""

    def __init__(self, store: str | None, agent: str | None, session: str | None, auth: str | None, opener: Opener) -> None:
        self.store_location = store
        self.agent_name = agent
        self.session_name = session
        self.auth = auth
        self._opener = opener
        self._store: Any = None
        self._agent: Verbs | None = None
        self.reads = False  # the command only reads (command(reads=True)): it never creates a store
        self.verb: str | None = None  # the first verb the command calls, once it calls one

    @property
    def remote(self) -> bool:
        """A comity server (``--store http://…``, several separated by commas) rather than a store."""
        return (self.store_location or "").strip().lower().startswith(("http://", "https://"))

    def store(self, *, create: bool | None = None) -> Any:
        """The store (:class:`comity.store.Store`), opened once; made if missing when
        ``create`` says so, or (None) unless the command only reads."""
        if self._store is None:
            self._store = self._opener.store(self, create)
        return self._store

    def agent(self) -> Verbs:
        """The agent session's verbs: in process over the store, or over HTTP against a server."""
        if self._agent is None:
            self._agent = self._opener.agent(self)
        return self._agent

    def call(self, verb: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.verb is None:
            self.verb = verb  # what the store is opened for: a read never creates one
        return self.agent().call(verb, args)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        closer = getattr(self._agent, "close", None)
        if callable(closer):
            closer()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_news(news: list[dict[str, Any]], truncated: bool = False) -> None:
    for n in news:
        err.print(f"news: {news_line(n)}", markup=False)
    if truncated:
        err.print("news: … more; run `comity news` to see the rest", markup=False)


def news_of(answer: Mapping[str, Any]) -> None:
    """An answer's news, and its warning if it has one, on stderr."""
    print_news(list(answer.get("news", [])), bool(answer.get("news_truncated")))
    if answer.get("warning"):
        err.print(f"comity: warning: {answer['warning']}", markup=False)


def closed_pipe() -> NoReturn:
    """stdout's reader went away (`comity log | head -1`): not an error.  Point stdout at
    /dev/null so the interpreter's last flush does not complain, and exit 0."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    sys.exit(0)


# rich exits 1 on a closed pipe; a reader that stopped reading (`| head`) is not an error.
out.on_broken_pipe = closed_pipe  # type: ignore[method-assign]


def fail(e: ComityError, as_json: bool) -> NoReturn:
    """Print an error (JSON on stdout with ``--json``), its news and its next step, and exit
    with its code."""
    if as_json:
        print_json(e.to_json())
    message = e.message
    fix = FIELD_FIXES.get(str(e.details.get("field", "")))
    if fix and e.code == "invalid":
        message += f"; {fix}"
    err.print(f"comity: {message}", markup=False, style="red")
    news = getattr(e, "news", None) or e.details.get("news") or []
    print_news(list(news))
    for step in e.next:
        why = f"  ({step.why})" if step.why else ""
        err.print(f"next: {cli_command(step.verb, step.args)}{why}", markup=False)
    rejected = e.details.get("rejected")
    if rejected is not None:
        err.print(f"not written (your value): {json.dumps(rejected, ensure_ascii=False)}", markup=False)
    sys.exit(e.exit_code)


def command(group: click.Group, name: str | None = None, *, reads: bool = False, **kw: Any) -> Callable[[F], F]:
    """A subcommand with ``--json`` and uniform error handling: ``fn(obj, ..., as_json=…)``.
    A command that ``reads`` only never creates a store (a command that calls verbs is
    judged by them: a verb that changes nothing never creates one either)."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
            obj: Ctx = click.get_current_context().obj
            obj.reads = reads
            try:
                fn(obj, *args, as_json=as_json, **kwargs)
            except ComityError as e:
                fail(e, as_json)
            except KeyboardInterrupt:
                sys.exit(130)
            except BrokenPipeError:
                closed_pipe()
            finally:
                obj.close()

        wrapper = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(wrapper)
        group.command(name, **kw)(wrapper)
        return fn

    return deco
