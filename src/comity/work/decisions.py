"""Decisions: intent recorded on paths, and the check that flags a change undoing one.

An agent that "fixes" a bug by reverting a change another agent made on purpose has
written without seeing intent.  A decision says "kept X because Y" about some paths and
carries, per file, the lines its commit added and removed.  A later change *undoes* it
when it removes lines the decision's commit added, or restores lines it removed; such a
change is flagged until the agent making it acknowledges the decision.

State: the record is the system key ``@decision/D-n`` (numbered by the ``decisions``
sequence); each acknowledgement is ``@decision-ack/D-n/<agent>``; a commit tree accepted
despite undoing a decision (after an acknowledgement) is ``@decision-ok/D-n/<tree>``.
Recording also logs a ``decision`` event on ``@decisions``, so a session interested in
that key (an agent that reserved paths) gets new decisions in its news.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..coord.reservations import normalize, overlaps
from ..coord.sequences import next_number
from ..errors import Invalid, NotFound, StaleContext
from ..store import Create, Note, Session

__all__ = [
    "Decision",
    "Undo",
    "decide",
    "decisions",
    "decision",
    "acknowledge",
    "accepted",
    "parse_decision_id",
    "DECISION_PREFIX",
    "DECISIONS_KEY",
]

DECISION_PREFIX = "@decision/"
ACK_PREFIX = "@decision-ack/"
ACCEPTED_PREFIX = "@decision-ok/"
DECISIONS_KEY = "@decisions"
SEQUENCE = "decisions"
_ID = re.compile(r"(?:D-)?([1-9][0-9]{0,11})")
_TEXT_MAX = 10_000
_LINES_MAX = 2_000  # per file and side: a decision is about a change a person can read
_TREE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def parse_decision_id(value: object, field: str = "id") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    m = _ID.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise Invalid(field, f"{value!r} is not a decision id; ids look like D-3 (or 3)")
    return f"D-{int(m.group(1))}"


def _signature(line: str) -> str:
    return " ".join(line.split())


def _meaningful(sig: str) -> bool:
    # A brace, a blank line or "end" is in every file: matching it would flag everything.
    return sum(c.isalnum() for c in sig) >= 3


@dataclass(frozen=True, slots=True)
class Undo:
    """How a change undoes a decision on one file: lines of the decision's commit it removes,
    and lines that commit removed which it restores."""

    decision: str
    path: str
    removes: list[str]
    restores: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "path": self.path, "removes": self.removes, "restores": self.restores}


@dataclass(slots=True)
class Decision:
    id: str
    text: str
    agent: str
    paths: list[str]
    commit: str | None
    changes: dict[str, dict[str, list[str]]]  # file -> {"added": [...], "removed": [...]}
    time: float
    acks: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "text": self.text,
            "agent": self.agent,
            "paths": self.paths,
            "commit": self.commit,
            "changes": self.changes,
            "time": self.time,
            "acks": self.acks,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], acks: list[str] | None = None) -> Decision:
        return cls(d["id"], d["text"], d["agent"], list(d["paths"]), d.get("commit"), dict(d.get("changes") or {}), float(d["time"]), acks or [])

    def covers(self, path: str) -> bool:
        """Is ``path`` (a file, directory or glob) on one of this decision's paths?"""
        return any(overlaps(path, p) for p in self.paths)

    def undone_by(self, path: str, added: list[str], removed: list[str]) -> Undo | None:
        """Does a change to ``path`` adding ``added`` and removing ``removed`` undo this decision?

        Lines compare with whitespace collapsed; a line moved within the change (removed and
        added again) is not undone; lines with fewer than three letters or digits never count."""
        mine = self.changes.get(path)
        if not mine:
            return None
        plus = Counter(_signature(x) for x in added)
        minus = Counter(_signature(x) for x in removed)
        gone, back = minus - plus, plus - minus
        decided_added = {s for s in (_signature(x) for x in mine.get("added", [])) if _meaningful(s)}
        decided_removed = {s for s in (_signature(x) for x in mine.get("removed", [])) if _meaningful(s)}
        removes = sorted(s for s in gone if s in decided_added)
        restores = sorted(s for s in back if s in decided_removed)
        if not removes and not restores:
            return None
        return Undo(self.id, path, removes, restores)


def _check_changes(changes: object) -> dict[str, dict[str, list[str]]]:
    if changes is None:
        return {}
    if not isinstance(changes, dict):
        raise Invalid("changes", "must map each file to {'added': [...], 'removed': [...]}")
    out: dict[str, dict[str, list[str]]] = {}
    for path, side in changes.items():
        p = normalize(path, "changes")
        if not isinstance(side, dict):
            raise Invalid("changes", f"{p}: must be {{'added': [...], 'removed': [...]}}")
        entry: dict[str, list[str]] = {}
        for k in ("added", "removed"):
            lines = side.get(k, [])
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise Invalid("changes", f"{p}.{k}: must be a list of lines")
            entry[k] = lines[:_LINES_MAX]
        out[p] = entry
    return out


def decide(
    session: Session,
    text: str,
    paths: list[str],
    *,
    commit: str | None = None,
    changes: dict[str, dict[str, list[str]]] | None = None,
) -> Decision:
    """Record a decision on ``paths`` by this session's agent; returns it with its id."""
    if session.agent is None:
        raise Invalid("agent", "recording a decision needs an agent name")
    if not isinstance(text, str) or not text.strip():
        raise Invalid("text", "say what was decided and why, e.g. 'kept the retry loop: the API drops 1% of calls'")
    if len(text) > _TEXT_MAX:
        raise Invalid("text", f"is {len(text)} characters; the cap is {_TEXT_MAX}")
    if not isinstance(paths, list) or not paths:
        raise Invalid("paths", "give at least one path or glob the decision is about")
    norm = list(dict.fromkeys(normalize(p) for p in paths))
    if commit is not None and (not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{4,64}", commit)):
        raise Invalid("commit", f"{commit!r} is not a commit id (hex)")
    checked = _check_changes(changes)
    n = next_number(session, SEQUENCE)
    did = f"D-{n}"
    record = Decision(did, text, session.agent, norm, commit, checked, session.now())
    body = record.to_json()
    del body["acks"]
    session.txn(
        ops=[
            Create(DECISION_PREFIX + did, body, label="decide"),
            Note(DECISIONS_KEY, "decision", {"id": did, "paths": norm, "text": text[:200]}),
        ],
        system=True,
    )
    return record


def _acks(session: Session, ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {i: [] for i in ids}
    for v in session.scan(ACK_PREFIX):
        did, _, agent = v.key[len(ACK_PREFIX) :].partition("/")
        if did in out and v.values:
            out[did].append(agent)
    return out


def decisions(session: Session, path: str | None = None) -> list[Decision]:
    """Every decision (on ``path``, if given), oldest first, with who acknowledged each."""
    want = None if path is None else normalize(path, "path")
    found = []
    for v in session.scan(DECISION_PREFIX):
        if len(v.values) == 1 and isinstance(v.values[0], dict):
            d = Decision.from_json(v.values[0])
            if want is None or d.covers(want):
                found.append(d)
    acks = _acks(session, [d.id for d in found]) if found else {}
    for d in found:
        d.acks = sorted(acks.get(d.id, []))
    found.sort(key=lambda d: int(d.id[2:]))
    return found


def decision(session: Session, decision_id: str) -> Decision:
    did = parse_decision_id(decision_id)
    v = session.get(DECISION_PREFIX + did)
    if len(v.values) != 1:
        raise NotFound(f"no decision {did}; list the decisions to find it", id=did)
    d = Decision.from_json(v.values[0])
    d.acks = sorted(_acks(session, [did])[did])
    return d


def acknowledge(session: Session, decision_id: str, *, tree: str | None = None) -> Decision:
    """This agent has read decision ``decision_id``: its changes that undo it are no longer
    flagged.  With ``tree``, that commit tree is also recorded as accepted (for ``doctor``)."""
    if session.agent is None:
        raise Invalid("agent", "acknowledging a decision needs an agent name")
    d = decision(session, decision_id)
    ops: list[Any] = []
    if session.agent not in d.acks:
        ops.append(Create(f"{ACK_PREFIX}{d.id}/{session.agent}", {"agent": session.agent, "time": session.now()}, label="ack"))
    if tree is not None:
        if not isinstance(tree, str) or _TREE.fullmatch(tree) is None:
            raise Invalid("tree", f"{tree!r} is not a full tree id")
        ops.append(Create(f"{ACCEPTED_PREFIX}{d.id}/{tree}", {"agent": session.agent, "time": session.now()}, label="accept"))
    for op in ops:
        try:
            session.txn(ops=[op], system=True)
        except StaleContext:
            pass  # acknowledged (or accepted) already, by a concurrent call: the same outcome
    if session.agent not in d.acks:
        d.acks = sorted([*d.acks, session.agent])
    return d


def accepted(session: Session, decision_id: str, tree: str) -> bool:
    """Was a commit with this tree accepted despite undoing the decision?"""
    return bool(session.get(f"{ACCEPTED_PREFIX}{parse_decision_id(decision_id)}/{tree}").values)
