"""The few named errors every face maps to one code each.

=============  ==============================================  =========  ====
error          meaning                                          CLI exit   HTTP
=============  ==============================================  =========  ====
Invalid        bad input: names the field and the fix           2          422
StaleContext   the state moved past the caller's context        3          409
Fenced         a fencing token was superseded                   3          409
LeaseExpired   the caller's lease ran out                       3          409
NotFound       nothing there                                    4          404
Unavailable    the authority cannot be reached                  5          503
=============  ==============================================  =========  ====

An error carries what happened (``message``, in words, never a face's syntax), the news
that explains it, and ``next``: the steps that would move on, each a verb of the table
with its arguments (:class:`Step`).  Each face renders a step in its own idiom: the CLI as
a command, MCP as a tool call, HTTP as a JSON field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Step",
    "ComityError",
    "Invalid",
    "StaleContext",
    "Fenced",
    "LeaseExpired",
    "NotFound",
    "Unavailable",
    "EXIT_OK",
    "EXIT_INTERNAL",
    "EXIT_INVALID",
    "EXIT_REFUSED",
    "EXIT_NOT_FOUND",
    "EXIT_UNAVAILABLE",
]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_INVALID = 2
EXIT_REFUSED = 3
EXIT_NOT_FOUND = 4
EXIT_UNAVAILABLE = 5


@dataclass(frozen=True, slots=True)
class Step:
    """A next step after an error: call ``verb`` (a verb of the table) with ``args``."""

    verb: str
    args: Mapping[str, Any] = field(default_factory=dict)
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verb": self.verb, "args": dict(self.args)}
        if self.why:
            out["why"] = self.why
        return out

    @classmethod
    def from_json(cls, obj: Any) -> Step | None:
        if not isinstance(obj, dict) or not isinstance(obj.get("verb"), str):
            return None
        args = obj.get("args")
        return cls(obj["verb"], dict(args) if isinstance(args, dict) else {}, str(obj.get("why") or ""))


class ComityError(Exception):
    """Base of comity's errors.  ``code`` is a stable machine name, ``exit_code`` the CLI's;
    ``next`` the steps that would move on."""

    code = "error"
    exit_code = EXIT_INTERNAL
    http_status = 500

    def __init__(self, message: str, *, next: Iterable[Step] = (), **details: Any) -> None:  # noqa: A002 - the JSON field's name
        super().__init__(message)
        self.message = message
        self.next: tuple[Step, ...] = tuple(next)
        self.details = details

    def to_json(self) -> dict[str, Any]:
        out = {"error": self.code, "message": self.message, **self.details}
        if self.next:
            out["next"] = [s.to_json() for s in self.next]
        return out


class Invalid(ComityError):
    """Bad input.  ``field`` names what was wrong; the message says how to fix it."""

    code = "invalid"
    exit_code = EXIT_INVALID
    http_status = 422

    def __init__(self, field: str, message: str, *, next: Iterable[Step] = (), **details: Any) -> None:  # noqa: A002
        super().__init__(f"{field}: {message}", next=next, field=field, **details)
        self.field = field


class StaleContext(ComityError):
    """The state moved past the caller's context (or the key exists on create).

    ``news`` lists the events the caller had not seen; ``rejected`` is the value
    that was not written, so nothing is lost.
    """

    code = "stale_context"
    exit_code = EXIT_REFUSED
    http_status = 409

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        news: list[dict[str, Any]] | None = None,
        rejected: Any = None,
        next: Iterable[Step] = (),  # noqa: A002
        **details: Any,
    ) -> None:
        super().__init__(message, next=next, key=key, news=news or [], rejected=rejected, **details)
        self.key = key
        self.news = news or []
        self.rejected = rejected


class Fenced(ComityError):
    """A fencing token was superseded by a newer holder."""

    code = "fenced"
    exit_code = EXIT_REFUSED
    http_status = 409


class LeaseExpired(ComityError):
    """The caller's lease ran out before the action."""

    code = "lease_expired"
    exit_code = EXIT_REFUSED
    http_status = 409


class NotFound(ComityError):
    """Nothing there."""

    code = "not_found"
    exit_code = EXIT_NOT_FOUND
    http_status = 404


class Unavailable(ComityError):
    """The authority cannot be reached (or is busy past the timeout)."""

    code = "unavailable"
    exit_code = EXIT_UNAVAILABLE
    http_status = 503
