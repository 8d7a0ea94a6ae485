"""The change verbs of :class:`comity.work.Agent` (provenance, verification, attestations,
policies): each answers one JSON object with ``news`` and ``stale``, as every verb does."""

from __future__ import annotations

from typing import Any

from ..errors import Invalid
from ..store import Session
from .changes import Changes
from .tasks import Request

__all__ = ["ChangeVerbs", "CHANGE_VERBS"]

CHANGE_VERBS = ["change_submit", "change_show", "change_list", "verify", "refute", "attest", "key_register", "policy_set", "policy_list"]


def _list(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(field, f"must be a list, e.g. [\"C-1\"], got {type(value).__name__}")
    return list(value)


class ChangeVerbs:
    session: Session
    changes: Changes

    @property
    def contexts(self) -> dict[str, str]:
        raise NotImplementedError

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _request(self, verb: str, request_id: str | None, **given: Any) -> Request | None:
        raise NotImplementedError

    def change_submit(
        self,
        task: str,
        commit: str | None = None,
        checks: list[str] | None = None,
        on: list[str] | None = None,
        diff: str | None = None,
        commits: list[str] | None = None,
        reads: list[str] | None = None,
        paths: list[str] | None = None,
        note: str = "",
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Submit a change for a task: its commit (or diff hash), the checks it claims pass,
        and what it was built on (changes ``on``, base ``commits``, keys ``reads``: by
        default every key this session read, at the context it read)."""
        req = self._request("change_submit", request_id, task=task, commit=commit, checks=checks, on=on, diff=diff, commits=commits,
                            reads=reads, paths=paths, note=note)
        read_map: dict[str, str | None]
        if reads is None:
            read_map = {k: c for k, c in self.contexts.items() if not k.startswith("@")}
        else:
            read_map = {k: self.contexts.get(k) for k in _list(reads, "reads")}
        c = self.changes.submit(task, commit=commit, diff=diff, checks=_list(checks, "checks"), on=_list(on, "on"),
                                commits=_list(commits, "commits"), reads=read_map, paths=_list(paths, "paths"), note=note,
                                request=req)
        c.pop("context", None)
        return self._answer(c)

    def change_show(self, id: str) -> dict[str, Any]:
        c = self.changes.show(id)
        c.pop("context", None)
        return self._answer(c)

    def change_list(self, state: str | None = None, task: str | None = None) -> dict[str, Any]:
        return self._answer({"changes": self.changes.find(state=state, task=task)})

    def verify(self, id: str, timeout: float | None = None, request_id: str | None = None) -> dict[str, Any]:
        req = self._request("verify", request_id, id=id, timeout=timeout)
        return self._answer(self.changes.verify(id, timeout=timeout, request=req))

    def refute(self, id: str, reason: str, request_id: str | None = None) -> dict[str, Any]:
        c = self.changes.refute(id, reason, request=self._request("refute", request_id, id=id, reason=reason))
        c.pop("context", None)
        return self._answer(c)

    def attest(self, id: str, envelope: dict[str, Any] | None = None, request_id: str | None = None) -> dict[str, Any]:
        c = self.changes.attest(id, envelope, request=self._request("attest", request_id, id=id))
        c.pop("context", None)
        return self._answer(c)

    def key_register(self, public_key: str, request_id: str | None = None) -> dict[str, Any]:
        return self._answer(self.changes.register_key(public_key, request=self._request("key_register", request_id, public_key=public_key)))

    def policy_set(self, scope: str, attestations: int = 0, reexecute: bool = True, remove: bool = False,
                   request_id: str | None = None) -> dict[str, Any]:
        req = self._request("policy_set", request_id, scope=scope, attestations=attestations, reexecute=reexecute, remove=remove)
        return self._answer(self.changes.set_policy(scope, attestations=attestations, reexecute=reexecute, remove=bool(remove), request=req))

    def policy_list(self) -> dict[str, Any]:
        return self._answer({"policies": self.changes.policies()})

