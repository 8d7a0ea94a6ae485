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
"""

from __future__ import annotations

from typing import Any

__all__ = [
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


class ComityError(Exception):
    """Base of comity's errors.  ``code`` is a stable machine name, ``exit_code`` the CLI's."""

    code = "error"
    exit_code = EXIT_INTERNAL
    http_status = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.details}


class Invalid(ComityError):
    """Bad input.  ``field`` names what was wrong; the message says how to fix it."""

    code = "invalid"
    exit_code = EXIT_INVALID
    http_status = 422

    def __init__(self, field: str, message: str, **details: Any) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)
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
        **details: Any,
    ) -> None:
        super().__init__(message, key=key, news=news or [], rejected=rejected, **details)
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
