"""Changes: provenance, acceptance by policy, signed attestations, refutation and taint.

An agent can be Byzantine without malice: it reports "fixed, tests pass" for work that
is wrong, and others build on it.  So a unit of work is a *change* that records what
it is and what it was built on, and it is accepted only after independent agreement:

- **Provenance.** A change names its task, its commit (or a diff hash), the checks it
  claims pass, and what it was built on: other changes, commits, and the keys its
  author read with their contexts.  It is written through the guarded transaction, so
  it is as durable and causal as any write, and ``why`` follows it.
- **Acceptance by policy.** A policy (``@policies``: per task label, per path, and a
  default) asks for ``attestations`` signed by k distinct agents other than the author
  and/or a passing re-execution of the claimed checks (``reexecute``).  A change is
  accepted when its policy is met and every change it was built on is accepted.  Under
  a stored policy a task's completion waits for its change: the task is ``submitted``
  until the change is accepted, then ``done``.
- **Refutation and taint.** A failed re-execution, or an explicit refutation, marks a
  change refuted; every change built on it, transitively, is tainted (``tainted_by``
  names the refuted sources).  Their tasks are reopened, and their authors get the
  news in their inbox (``@inbox/AGENT``, in every session of theirs).  A passing
  re-verification of a refuted change clears it, and the taint it caused.

With k ≥ f + 1 attestations from distinct agents, f lying agents cannot get a change
accepted on their word alone: at least one attester is honest.  See docs/verification.md.

State (system keys, each written by guarded transactions with contexts):

=========================  ===================================================
``@change/C-n``            the change: provenance, evidence, state
``@change-on/C-n``         the changes built directly on C-n (for taint)
``@change-task/T-n``       the changes submitted for task T-n
``@attestation/C-n/AGENT`` AGENT's DSSE envelope for C-n
``@pubkey/AGENT``          AGENT's registered public keys
``@policies``              the acceptance policies
``@inbox/AGENT``           news for AGENT about its changes (log notes only)
=========================  ===================================================
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..coord.reservations import normalize, overlaps
from ..coord.sequences import next_number
from ..errors import Fenced, Invalid, LeaseExpired, NotFound, StaleContext, Step
from ..store import Create, Delete, Holds, Note, Put, Session, Unchanged, Versioned
from ..store._api import check_agent
from ..store._codec import check_key
from .checks import DEFAULT_TIMEOUT_S, Runner

if TYPE_CHECKING:  # signing loads cryptography: only the verbs that sign or check pay for it
    from .attestations import Keyring, PublicKey
from .tasks import OPEN_PREFIX, Request, parse_task_id, task_key

__all__ = [
    "Changes",
    "Policy",
    "STATES",
    "CHANGE_PREFIX",
    "POLICIES_KEY",
    "INBOX_PREFIX",
    "parse_change_id",
    "change_key",
    "inbox_key",
    "provenance_digest",
    "gate",
]

CHANGE_PREFIX = "@change/"
DEPENDENTS_PREFIX = "@change-on/"
TASK_CHANGES_PREFIX = "@change-task/"
ATTESTATION_PREFIX = "@attestation/"
PUBKEY_PREFIX = "@pubkey/"
POLICIES_KEY = "@policies"
INBOX_PREFIX = "@inbox/"
SEQUENCE = "changes"
STATES = ("submitted", "accepted", "refuted", "tainted")

_ID = re.compile(r"(?:C-)?([1-9][0-9]{0,11})")
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_DIFF = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
_CHECK_MAX = 2000
_CHECKS_MAX = 20
_LIST_MAX = 200
_REASON_MAX = 2000
_VERIFICATIONS_KEPT = 20
_RETRIES = 64
_TIMEOUT_MAX = 24 * 3600.0
_IMMUTABLE = ("id", "task", "token", "author", "commit", "diff", "checks", "paths", "built_on", "submitted_at", "note")


def parse_change_id(value: object, field: str = "id") -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    m = _ID.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise Invalid(field, f"{value!r} is not a change id; ids look like C-4 (or 4)")
    return f"C-{int(m.group(1))}"


def change_key(change_id: str) -> str:
    return CHANGE_PREFIX + change_id


def inbox_key(agent: str) -> str:
    return INBOX_PREFIX + agent


def _num(change_id: str) -> int:
    return int(change_id[2:])


def provenance_digest(record: dict[str, Any]) -> str:
    """sha256 of the change's provenance (its immutable fields), as an attestation names it."""
    body = {k: record.get(k) for k in _IMMUTABLE}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ------------------------------------------------------------------ policies


@dataclass(frozen=True, slots=True)
class Policy:
    """What accepts a change: ``attestations`` from distinct non-authors, and/or ``reexecute``.

    ``scopes`` names the stored policies that apply (empty: the built-in default, which
    gates no task and accepts a change on a passing re-execution)."""

    attestations: int = 0
    reexecute: bool = True
    scopes: tuple[str, ...] = ()

    @property
    def gates(self) -> bool:
        return bool(self.scopes)

    def to_json(self) -> dict[str, Any]:
        return {"attestations": self.attestations, "reexecute": self.reexecute, "scopes": list(self.scopes)}


def _scope(scope: object) -> str:
    if not isinstance(scope, str) or not scope.strip():
        raise Invalid("scope", "must be 'default', 'label:NAME' or 'path:GLOB'")
    scope = scope.strip()
    if scope == "default":
        return scope
    kind, _, arg = scope.partition(":")
    if kind == "label" and 0 < len(arg) <= 64:
        return scope
    if kind == "path" and arg:
        return "path:" + normalize(arg, "scope")
    raise Invalid("scope", f"{scope[:80]!r}: use 'default', 'label:NAME' or 'path:GLOB'")


def _resolve(policies: dict[str, Any], labels: Iterable[str], paths: Iterable[str]) -> Policy:
    labels, paths = list(labels), list(paths)
    found = []
    for scope, p in sorted(policies.items()):
        kind, _, arg = scope.partition(":")
        if (kind == "label" and arg in labels) or (kind == "path" and any(overlaps(arg, x) for x in paths)):
            found.append((scope, p))
    if not found and "default" in policies:
        found = [("default", policies["default"])]
    if not found:
        return Policy()
    # Several apply: the strictest of each requirement.
    return Policy(max(int(p.get("attestations", 0)) for _, p in found), any(bool(p.get("reexecute")) for _, p in found),
                  tuple(s for s, _ in found))


# --------------------------------------------------------------------- inputs


def _str_list(value: object, field: str, cap: int = _LIST_MAX) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise Invalid(field, f"must be a list of strings, got {type(value).__name__}")
    if len(value) > cap or not all(isinstance(x, str) for x in value):
        raise Invalid(field, f"must be a list of at most {cap} strings")
    return list(dict.fromkeys(value))


def _commit(value: object, field: str = "commit") -> str:
    if not isinstance(value, str) or _COMMIT.fullmatch(value.strip().lower()) is None:
        raise Invalid(field, f"{value!r} is not a commit id (7 to 64 hex digits)")
    return value.strip().lower()


def _reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("reason", "say why the change is wrong, e.g. 'login fails for emails with a plus sign'")
    if len(value) > _REASON_MAX:
        raise Invalid("reason", f"is {len(value)} characters; the cap is {_REASON_MAX}")
    return value


def _prior(session: Session, request: Request | None) -> dict[str, Any] | None:
    """The outcome recorded for ``request``, if it was applied: a retry is answered from it
    instead of acting twice (as the board's verbs are)."""
    if request is None:
        return None
    got = session.recorded(request.id)
    if got is None:
        return None
    if got[0] != request.digest:
        raise Invalid("request_id", f"{request.id[:60]!r} was already used for a different request; use a new id for a new request")
    return got[1]


def _txn_request(request: Request | None) -> dict[str, Any]:
    return {} if request is None else {"request_id": request.id, "digest": request.digest}


class _Settled(dict[str, dict[str, Any]]):
    """The records a settlement left, and whether they are a racing retry's, as it recorded them."""

    replayed = False


def _written(results: list[dict[str, Any]], key: str) -> Any:
    """The value a recorded transaction wrote to ``key`` (None if it wrote none there)."""
    return next((r["values"][0] for r in results if r.get("key") == key and r.get("values")), None)


def _state(rec: dict[str, Any]) -> str:
    if rec.get("refuted"):
        return "refuted"
    if rec.get("tainted_by"):
        return "tainted"
    if rec.get("accepted"):
        return "accepted"
    return "submitted"


# --------------------------------------------------------------------- service


class Changes:
    """One agent's view of changes, over one store session.

    ``runner`` re-executes checks (:class:`comity.work.checks.GitChecks` by default, made
    on first use); ``keyring`` holds this agent's private key for signing (None: this
    process signs nothing, as on a server, which only checks envelopes it is sent)."""

    def __init__(self, session: Session, *, runner: Runner | None = None, keyring: Keyring | None = None) -> None:
        self.session = session
        self._runner = runner
        self.keyring = keyring

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            from .checks import GitChecks

            self._runner = GitChecks(clock=self.session.store.clock)
        return self._runner

    def _me(self, what: str) -> str:
        if self.session.agent is None:
            raise Invalid("agent", f"{what} needs an agent name")
        return self.session.agent

    # ----------------------------------------------------------------- reads
    def _get(self, change_id: str) -> Versioned:
        v = self.session.get(change_key(change_id))
        if len(v.values) != 1:
            raise NotFound(f"no change {change_id}", id=change_id, field="id")
        return v

    def record(self, change_id: str) -> dict[str, Any]:
        return dict(self._get(parse_change_id(change_id)).values[0])

    def policies(self) -> dict[str, Any]:
        v = self.session.get(POLICIES_KEY)
        return dict(v.values[0]) if len(v.values) == 1 and isinstance(v.values[0], dict) else {}

    def policy_for(self, record: dict[str, Any], policies: dict[str, Any] | None = None, labels: list[str] | None = None) -> Policy:
        if labels is None:
            t = self.session.get(task_key(record["task"])).values
            labels = list(t[0].get("labels", [])) if len(t) == 1 else []
        return _resolve(self.policies() if policies is None else policies, labels, record.get("paths", []))

    def _view(self, rec: dict[str, Any], *, envelopes: bool = True) -> dict[str, Any]:
        out = dict(rec)
        out["state"] = _state(rec)
        out["provenance"] = provenance_digest(rec)
        if envelopes:
            rows = self.session.scan(f"{ATTESTATION_PREFIX}{rec['id']}/")
            env = {v.key.rsplit("/", 1)[1]: v.values[0] for v in rows if len(v.values) == 1}
            out["attestations"] = [{**a, "envelope": env.get(a["attester"], {}).get("envelope")} for a in rec.get("attestations", [])]
        deps = self.session.get(DEPENDENTS_PREFIX + rec["id"]).values
        out["dependents"] = list(deps[0]) if len(deps) == 1 else []
        return out

    def show(self, change_id: str) -> dict[str, Any]:
        """A change with its state, provenance, evidence and dependents."""
        v = self._get(parse_change_id(change_id))
        return {**self._view(v.values[0]), "context": v.context}

    def find(self, *, state: str | None = None, task: str | None = None) -> list[dict[str, Any]]:
        """Every change (in a state, or of a task), oldest first, without envelopes."""
        if state is not None and state not in STATES:
            raise Invalid("state", f"must be one of {', '.join(STATES)}")
        tid = None if task is None else parse_task_id(task, "task")
        out = []
        for v in self.session.scan(CHANGE_PREFIX):
            if len(v.values) != 1:
                continue
            rec = v.values[0]
            if (tid is None or rec.get("task") == tid) and (state is None or _state(rec) == state):
                out.append({**rec, "state": _state(rec)})
        out.sort(key=lambda r: _num(r["id"]))
        return out

    def summary(self) -> dict[str, Any]:
        """For a dashboard: how many changes are in each state, and the refuted and tainted
        ones with what they taint (one scan, no envelopes)."""
        all_changes = self.find()
        counts = {s: 0 for s in STATES}
        for c in all_changes:
            counts[c["state"]] += 1
        bad = [{"id": c["id"], "task": c["task"], "author": c["author"], "state": c["state"], "commit": c.get("commit"),
                "refuted": c.get("refuted"), "tainted_by": c.get("tainted_by", [])}
               for c in all_changes if c["state"] in ("refuted", "tainted")]  # fmt: skip
        return {"counts": counts, "refuted_or_tainted": bad, "policies": self.policies()}

    # ---------------------------------------------------------------- submit
    def submit(
        self,
        task: str,
        *,
        commit: str | None = None,
        diff: str | None = None,
        checks: list[str] | None = None,
        on: list[str] | None = None,
        commits: list[str] | None = None,
        reads: dict[str, str | None] | list[str] | None = None,
        paths: list[str] | None = None,
        note: str = "",
        token: int | None = None,
        request: Request | None = None,
    ) -> dict[str, Any]:
        """Record a change for ``task`` by this session's agent, built on changes ``on``,
        base ``commits`` and the keys in ``reads`` (each with the context it was read at;
        None: its context now).  If this agent holds the task's lease, the change carries
        its fencing token (checked in the same transaction): only such a change completes
        the task.  With a ``request``, a retry returns the change the first attempt made."""
        me = self._me("submitting a change")
        prior = _prior(self.session, request)
        if prior is not None:
            return self._replayed(prior["results"][0]["values"][0]["id"])
        tid = parse_task_id(task, "task")
        if (commit is None) == (diff is None):
            raise Invalid("commit", "give the change's commit (or, without one, the sha256 of its diff as diff), not both")
        commit = None if commit is None else _commit(commit)
        if diff is not None:
            m = _DIFF.fullmatch(diff.strip().lower()) if isinstance(diff, str) else None
            if m is None:
                raise Invalid("diff", "must be the hex sha256 of the change's diff")
            diff = m.group(1)
        check_list = _str_list(checks, "checks", _CHECKS_MAX)
        if any(not c.strip() or len(c) > _CHECK_MAX or "\0" in c for c in check_list):
            raise Invalid("checks", f"each check is a shell command of 1 to {_CHECK_MAX} characters")
        bases = sorted({parse_change_id(c, "on") for c in _str_list(on, "on")}, key=_num)
        base_commits = [_commit(c, "commits") for c in _str_list(commits, "commits")]
        path_list = [normalize(p, "paths") for p in _str_list(paths, "paths")]
        if not isinstance(note, str) or len(note) > _REASON_MAX:
            raise Invalid("note", f"must be a string of at most {_REASON_MAX} characters")
        read_map: dict[str, str | None] = {}
        if isinstance(reads, dict):
            read_map = {check_key(k, "reads"): c for k, c in reads.items()}
        else:
            read_map = {check_key(k, "reads"): None for k in _str_list(reads, "reads")}
        if len(read_map) > _LIST_MAX:
            raise Invalid("reads", f"at most {_LIST_MAX} keys")
        keys = []
        codec = self.session.store.codec
        for k in sorted(read_map):
            ctx = read_map[k] or self.session.get(k).context
            keys.append({"key": k, "context": ctx, "pos": codec.open(ctx, k).pos})
        task_rec = self.session.get(task_key(tid)).values
        if len(task_rec) != 1:
            raise NotFound(f"no task {tid}", id=tid, field="task")
        if token is None:
            rows, now = self.session.leases(task_key(tid), limit=1)
            lease = next((r for r in rows if r.resource == task_key(tid)), None)
            if lease is not None and lease.holder == me and lease.expires > now:
                token = lease.token
        elif isinstance(token, bool) or not isinstance(token, int) or token < 1:
            raise Invalid("token", f"must be the fencing token of your claim, got {token!r}")
        for _ in range(_RETRIES):
            base_vs = self.session.get_many([change_key(b) for b in bases]) if bases else []
            for b, v in zip(bases, base_vs):
                if len(v.values) != 1:
                    raise NotFound(f"change {b} (named in on) does not exist", field="on", id=b)
            sources: set[str] = set()
            waiting = []
            for b, v in zip(bases, base_vs):
                brec = v.values[0]
                if brec.get("refuted"):
                    sources.add(b)
                sources.update(brec.get("tainted_by", []))
                if _state(brec) != "accepted":
                    waiting.append(b)
            # With a request id the number is taken under an id of its own: a retry (or this
            # loop, after a base moved) takes the same one, so a retried submit leaves no gap.
            seq = None if request is None else request.derived("seq")
            cid = f"C-{next_number(self.session, SEQUENCE, request_id=None if seq is None else seq.id, digest=None if seq is None else seq.digest)}"
            record: dict[str, Any] = {
                "id": cid, "task": tid, "token": token, "author": me, "commit": commit, "diff": diff,
                "checks": check_list, "paths": path_list,
                "built_on": {"changes": bases, "commits": base_commits, "keys": keys},
                "submitted_at": self.session.now(), "note": note,
                "verifications": [], "attestations": [], "accepted": None, "refuted": None,
                "tainted_by": sorted(sources, key=_num), "waiting_on": waiting,
            }
            record["state"] = _state(record)
            index = self.session.get(TASK_CHANGES_PREFIX + tid)
            ops: list[Any] = [Create(change_key(cid), record, label="change.submit")]
            ops.append(Put(TASK_CHANGES_PREFIX + tid, [*(index.values[0] if len(index.values) == 1 else []), cid],
                           context=index.context, label="change.index"))
            guards: list[Any] = [Unchanged(change_key(b), v.context) for b, v in zip(bases, base_vs)]
            for b in bases:
                d = self.session.get(DEPENDENTS_PREFIX + b)
                ops.append(Put(DEPENDENTS_PREFIX + b, [*(d.values[0] if len(d.values) == 1 else []), cid],
                               context=d.context, label="change.built-on"))
            if token is not None:
                guards.append(Holds(task_key(tid), token))
            try:
                r = self.session.txn(guards=guards, ops=ops, system=True, **_txn_request(request))
            except StaleContext as e:
                if e.key is not None and e.key.startswith(("@change", TASK_CHANGES_PREFIX)):
                    continue  # a base or an index moved: read again (the number is spent; a gap, never a duplicate)
                raise
            except (Fenced, LeaseExpired) as e:
                raise type(e)(f"token {token} no longer holds task {tid}: {e.message}", **e.details) from None
            if r.replayed:  # the same request, applied meanwhile by a retry racing this one
                return self._replayed(r.results[0]["values"][0]["id"])
            if not waiting and not sources:
                self._settle([cid], lambda recs: None)  # nothing to wait on: the policy may accept it at once
            return self.show(cid)
        raise StaleContext("the changes it is built on kept changing; retry", key=change_key(bases[0]) if bases else None)

    def _replayed(self, change_id: str) -> dict[str, Any]:
        """A retried request's answer: the change it made or acted on, as it is now.  Settling
        it again finishes what a first attempt cut off after its write left undone."""
        self._settle([change_id], lambda recs: None)
        return {**self.show(change_id), "replayed": True}

    # ------------------------------------------------------------ settlement
    def _dependents(self, ids: Iterable[str]) -> tuple[list[str], dict[str, Versioned]]:
        """Every change built on ``ids``, transitively, and the dependents index entries read."""
        seen = list(dict.fromkeys(ids))
        index: dict[str, Versioned] = {}
        frontier = list(seen)
        while frontier:
            vs = self.session.get_many([DEPENDENTS_PREFIX + c for c in frontier])
            nxt = []
            for c, v in zip(frontier, vs):
                index[c] = v
                for d in v.values[0] if len(v.values) == 1 else []:
                    if d not in seen:
                        seen.append(d)
                        nxt.append(d)
            frontier = nxt
        return sorted(seen, key=_num), index

    def _settle(self, seeds: list[str], mutate: Callable[[dict[str, dict[str, Any]]], None],
                request: Request | None = None) -> _Settled:
        """Apply ``mutate`` to the seed changes' records and recompute the state of every change
        built on them, with the effects on their tasks, in one guarded transaction (retried
        whole when anything it read moved; recording ``request``'s outcome).  Returns the new
        records (a racing retry's, as recorded, when it applied the request first)."""
        for _ in range(_RETRIES):
            closure, index = self._dependents(seeds)
            vs = dict(zip(closure, self.session.get_many([change_key(c) for c in closure])))
            missing = [c for c in seeds if len(vs[c].values) != 1]
            if missing:
                raise NotFound(f"no change {missing[0]}", id=missing[0], field="id")
            old = {c: v.values[0] for c, v in vs.items() if len(v.values) == 1}
            outside = sorted({b for r in old.values() for b in r["built_on"]["changes"] if b not in old}, key=_num)
            out_vs = dict(zip(outside, self.session.get_many([change_key(b) for b in outside]))) if outside else {}
            every = {**old, **{b: v.values[0] for b, v in out_vs.items() if len(v.values) == 1}}
            new = {c: json.loads(json.dumps(r)) for c, r in old.items()}
            mutate({c: new[c] for c in seeds})
            policies = self.policies()
            task_ids = sorted({r["task"] for r in new.values()}, key=lambda t: int(t[2:]))
            task_vs = dict(zip(task_ids, self.session.get_many([task_key(t) for t in task_ids])))
            labels = {t: list(v.values[0].get("labels", [])) if len(v.values) == 1 else [] for t, v in task_vs.items()}
            for c in closure:  # ids increase along provenance: bases are settled before what is built on them
                if c not in new:
                    continue
                r = new[c]
                bases = [new.get(b) or every.get(b) for b in r["built_on"]["changes"]]
                sources = {b["id"] for b in bases if b is not None and b.get("refuted")}
                for b in bases:
                    if b is not None:
                        sources.update(b.get("tainted_by", []))
                r["tainted_by"] = sorted(sources, key=_num)
                r["waiting_on"] = [b["id"] for b in bases if b is not None and _state(b) != "accepted"]
                policy = _resolve(policies, labels.get(r["task"], []), r.get("paths", []))
                r["policy"] = policy.to_json()
                if r.get("refuted") or r["tainted_by"]:
                    r["accepted"] = None
                elif not r.get("accepted") and not r["waiting_on"] and self._meets(r, policy):
                    r["accepted"] = {"at": self.session.now(), "policy": policy.to_json()}
                r["state"] = _state(r)
            changed = [c for c in closure if c in new and new[c] != old[c]]
            if not changed:
                return _Settled(new)
            guards: list[Any] = [Unchanged(DEPENDENTS_PREFIX + c, v.context) for c, v in index.items()]
            guards += [Unchanged(change_key(b), v.context) for b, v in out_vs.items()]
            ops: list[Any] = []
            inboxes: dict[str, list[dict[str, Any]]] = {}
            for c in changed:
                label = {"refuted": "change.refute", "tainted": "change.taint", "accepted": "change.accept"}.get(new[c]["state"], "change.update")
                if new[c]["state"] == "submitted" and old[c]["state"] in ("refuted", "tainted"):
                    label = "change.clear"
                ops.append(Put(change_key(c), new[c], context=vs[c].context, label=label))
                if new[c]["state"] != old[c]["state"]:
                    inboxes.setdefault(new[c]["author"], []).append(self._news(old[c], new[c]))
            for author, items in sorted(inboxes.items()):
                # The inbox's value is the latest news (its log is every piece): a write, not a
                # note, so the key's history can be walked from its row like any key's.
                box = self.session.get(inbox_key(author))
                ops.append(Put(inbox_key(author), {"agent": author, "news": items}, context=box.context, label="change.news"))
            ops += self._task_effects(old, new, changed, task_vs, guards)
            try:
                r = self.session.txn(guards=guards, ops=ops, system=True, **_txn_request(request))
            except StaleContext as e:
                if e.key is not None and e.key.startswith(("@change", "@task/", OPEN_PREFIX, INBOX_PREFIX)):
                    continue
                raise
            if r.replayed:
                done = _Settled({c: rec for c in seeds if (rec := _written(r.results, change_key(c))) is not None})
                done.replayed = True
                return done
            return _Settled(new)
        raise StaleContext(f"change {seeds[0]} kept changing under contention; retry", key=change_key(seeds[0]))

    @staticmethod
    def _meets(r: dict[str, Any], policy: Policy) -> bool:
        attesters = {a["attester"] for a in r.get("attestations", []) if a["attester"] != r["author"]}
        if len(attesters) < policy.attestations:
            return False
        if policy.reexecute:
            runs = [v for v in r.get("verifications", []) if v["outcome"] in ("passed", "failed")]
            if not runs or runs[-1]["outcome"] != "passed":
                return False
        return True

    @staticmethod
    def _news(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"change": new["id"], "task": new["task"], "state": new["state"], "was": old["state"]}
        if new["state"] == "refuted":
            out["reason"] = new["refuted"].get("reason")
            out["by"] = new["refuted"].get("by")
        if new["state"] == "tainted":
            out["tainted_by"] = new["tainted_by"]
        return out

    def _task_effects(self, old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], changed: list[str],
                      task_vs: dict[str, Versioned], guards: list[Any]) -> list[Any]:
        """Reopen the tasks of changes that became refuted or tainted; complete (or restore)
        those whose changes under the completing token are all accepted now."""
        ops: list[Any] = []
        touched = sorted({new[c]["task"] for c in changed if new[c]["state"] != old[c]["state"]}, key=lambda t: int(t[2:]))
        for tid in touched:
            v = task_vs.get(tid)
            if v is None or len(v.values) != 1:
                continue
            task = dict(v.values[0])
            token = task.get("done_token")
            idx = self.session.get(TASK_CHANGES_PREFIX + tid)
            guards.append(Unchanged(TASK_CHANGES_PREFIX + tid, idx.context))
            ids = [i for i in (idx.values[0] if len(idx.values) == 1 else [])]
            others = [i for i in ids if i not in new]
            recs = {**{i: r for i, r in zip(others, (x.values[0] for x in self.session.get_many([change_key(o) for o in others]))) },
                    **{i: new[i] for i in ids if i in new}} if ids else {}
            mine = [r for r in recs.values() if token is not None and r.get("token") == token]
            bad = [r for r in mine if r["state"] in ("refuted", "tainted")]
            status = task["status"]
            updated = None
            if bad and status in ("submitted", "done"):
                r = bad[0]
                why = (f"change {r['id']} was refuted: {r['refuted'].get('reason')}" if r["state"] == "refuted"
                       else f"change {r['id']} is built on refuted work ({', '.join(r['tainted_by'])})")
                updated = {**task, "status": "open", "claimed_by": None,
                           "reopened": {"change": r["id"], "was": status, "token": token, "why": why, "at": self.session.now()}}
                ops.append(Create(f"{OPEN_PREFIX}{int(tid[2:]):012d}",
                                  {"id": tid, "assignee": task.get("assignee"), "deps": task.get("deps", [])}, label="task.open"))
                label = "task.reopen"
            elif mine and not bad:
                restore = status == "open" and (task.get("reopened") or {}).get("token") == token and task.get("claimed_by") is None
                if restore:
                    marker = self.session.get(f"{OPEN_PREFIX}{int(tid[2:]):012d}")
                    if marker.values:
                        ops.append(Delete(marker.key, context=marker.context, label="task.claimed"))
                    status = "submitted"
                if status == "submitted" and all(r["state"] == "accepted" for r in mine):
                    updated = {**task, "status": "done", "reopened": None}
                    label = "task.accept"
                elif restore:
                    updated = {**task, "status": "submitted", "reopened": None}
                    label = "task.restore"
            if updated is not None:
                ops.append(Put(task_key(tid), updated, context=v.context, label=label))
            else:
                guards.append(Unchanged(task_key(tid), v.context))
        return ops

    # --------------------------------------------------------------- verbs
    def verify(self, change_id: str, *, timeout: float | None = None, request: Request | None = None) -> dict[str, Any]:
        """Re-execute the change's claimed checks at its commit in a clean worktree and record
        the outcome (with a hash of the output): a failure refutes the change, a pass on a
        refuted change clears it.  With a ``request``, a retry returns the recorded outcome
        without running the checks again."""
        me = self._me("verifying a change")
        cid = parse_change_id(change_id)
        prior = _prior(self.session, request)
        if prior is not None:
            return self._verified(cid, prior["results"], replayed=True)
        t = DEFAULT_TIMEOUT_S if timeout is None else timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= _TIMEOUT_MAX:
            raise Invalid("timeout", f"must be seconds in (0, {_TIMEOUT_MAX:.0f}], got {timeout!r}")
        rec = self.record(cid)
        result = self.runner.run(rec, float(t))
        entry = {"by": me, "at": self.session.now(), "commit": rec.get("commit"), **result.to_json()}

        def mutate(recs: dict[str, dict[str, Any]]) -> None:
            r = recs[cid]
            r["verifications"] = [*r.get("verifications", []), entry][-_VERIFICATIONS_KEPT:]
            if result.outcome == "failed":
                bad = next((c for c in result.checks if not c.passed), None)
                what = "timed out" if bad is not None and bad.timed_out else f"exited {bad.exit_code}" if bad else "failed"
                r["refuted"] = {"by": me, "at": entry["at"], "source": "verify",
                                "reason": f"claimed check {bad.command if bad else '?'!r} {what} on re-execution",
                                "output_sha256": result.output_sha256}
            elif result.outcome == "passed" and r.get("refuted"):
                r["cleared"] = {"by": me, "at": entry["at"], "was": r["refuted"]}
                r["refuted"] = None

        new = self._settle([cid], mutate, request)
        if new.replayed:  # a racing retry of this request recorded its own run first
            return self._verified(cid, [{"key": change_key(cid), "values": [new[cid]]}], replayed=True)
        return {"id": cid, "outcome": result.outcome, "state": new[cid]["state"], "verification": entry}

    def _verified(self, cid: str, results: list[dict[str, Any]], *, replayed: bool = False) -> dict[str, Any]:
        """A verification's answer from the transaction that recorded it (the change as written)."""
        rec = _written(results, change_key(cid))
        if rec is None or not rec.get("verifications"):
            raise Invalid("request_id", "that id was recorded for a request that verified nothing; use a new id")
        entry = rec["verifications"][-1]
        out = {"id": cid, "outcome": entry["outcome"], "state": rec["state"], "verification": entry}
        return {**out, "replayed": True} if replayed else out

    def refute(self, change_id: str, reason: str, *, request: Request | None = None) -> dict[str, Any]:
        """Mark the change refuted: everything built on it is tainted, their tasks reopen."""
        me = self._me("refuting a change")
        cid = parse_change_id(change_id)
        why = _reason(reason)
        if _prior(self.session, request) is not None:
            return self._replayed(cid)

        def mutate(recs: dict[str, dict[str, Any]]) -> None:
            recs[cid]["refuted"] = {"by": me, "at": self.session.now(), "source": "refute", "reason": why}

        if self._settle([cid], mutate, request).replayed:
            return {**self.show(cid), "replayed": True}
        return self.show(cid)

    # -------------------------------------------------------- attestations
    def public_keys(self, agent: str | None = None) -> list[PublicKey]:
        from .attestations import PublicKey, parse_public

        rows = self.session.scan(PUBKEY_PREFIX) if agent is None else [self.session.get(PUBKEY_PREFIX + check_agent(agent, "agent"))]
        out = []
        for v in rows:
            if len(v.values) == 1:
                for k in v.values[0].get("keys", []):
                    out.append(PublicKey.of(v.values[0]["agent"], parse_public(k["public_key"])))
        return out

    def register_key(self, public_key: str, *, request: Request | None = None) -> dict[str, Any]:
        """Register a public key (PEM, or base64 of 32 bytes) as this agent's."""
        from .attestations import PublicKey, parse_public

        me = self._me("registering a key")
        pk = PublicKey.of(me, parse_public(public_key))
        if _prior(self.session, request) is not None:
            return {"agent": me, "keyid": pk.keyid, "registered": True, "replayed": True}
        for _ in range(_RETRIES):
            v = self.session.get(PUBKEY_PREFIX + me)
            rec: dict[str, Any] = dict(v.values[0]) if len(v.values) == 1 else {"agent": me, "keys": []}
            if any(k["keyid"] == pk.keyid for k in rec["keys"]):
                return {"agent": me, "keyid": pk.keyid, "registered": False}
            others = [k for k in self.public_keys() if k.keyid == pk.keyid]
            if others:
                raise Invalid("public_key", f"that key is already registered to {others[0].agent}")
            rec["keys"] = [*rec["keys"], {"keyid": pk.keyid, "public_key": pk.to_json()["public_key"], "added": self.session.now()}]
            try:
                r = self.session.txn(ops=[Put(PUBKEY_PREFIX + me, rec, context=v.context, label="key.register")], system=True,
                                     **_txn_request(request))
            except StaleContext:
                continue
            return {"agent": me, "keyid": pk.keyid, "registered": True, **({"replayed": True} if r.replayed else {})}
        raise StaleContext(f"{me}'s keys kept changing; retry", key=PUBKEY_PREFIX + me)

    def sign(self, change_id: str) -> dict[str, Any]:
        """This agent's signed attestation (a DSSE envelope) for the change, made with its
        private key from the keyring (created and registered on first use)."""
        me = self._me("attesting")
        if self.keyring is None:
            raise Invalid("envelope", "this process holds no private keys: sign the statement where your key is and send the envelope")
        rec = self.record(change_id)
        if self.keyring.has(me):
            key = self.keyring.load(me)
        else:
            key = self.keyring.create(me, self.session.store.rng.token_bytes(32))
        from .attestations import public_pem, sign_envelope, statement

        self.register_key(public_pem(key.public_key()))
        return sign_envelope(statement(rec, self.session.store.store_id, me, provenance_digest(rec)), key)

    def attest(self, change_id: str, envelope: dict[str, Any] | None = None, *, request: Request | None = None) -> dict[str, Any]:
        """Record a signed approval of the change (``envelope``; None: sign one as this agent).

        Refused with the reason (Invalid, field ``envelope``) when the signature does not
        verify with a registered key, the subject or the change was altered, or the signer
        is the change's author."""
        from .attestations import check_statement, open_envelope

        self._me("attesting")
        cid = parse_change_id(change_id)
        if _prior(self.session, request) is not None:
            return self._replayed(cid)
        if envelope is None:
            envelope = self.sign(cid)
        rec = self.record(cid)
        body, signer = open_envelope(envelope, self.public_keys())
        check_statement(body, signer, change=rec, store_id=self.session.store.store_id, digest=provenance_digest(rec),
                        author=rec["author"])
        entry = {"attester": signer.agent, "keyid": signer.keyid, "at": self.session.now(), "by": self.session.agent}
        key = f"{ATTESTATION_PREFIX}{cid}/{signer.agent}"
        for _ in range(_RETRIES):
            v = self.session.get(key)
            try:
                self.session.txn(ops=[Put(key, {**entry, "envelope": envelope}, context=v.context, label="change.attest")], system=True)
                break
            except StaleContext:
                continue

        def mutate(recs: dict[str, dict[str, Any]]) -> None:
            r = recs[cid]
            r["attestations"] = [a for a in r.get("attestations", []) if a["attester"] != signer.agent] + [entry]

        replayed = self._settle([cid], mutate, request).replayed
        return {**self.show(cid), "replayed": True} if replayed else self.show(cid)

    # --------------------------------------------------------------- policy
    def set_policy(self, scope: str, *, attestations: int = 0, reexecute: bool = True, remove: bool = False,
                   request: Request | None = None) -> dict[str, Any]:
        """Set (or, with ``remove``, drop) the policy for ``scope``: 'default', 'label:NAME', 'path:GLOB'."""
        self._me("setting a policy")
        sc = _scope(scope)
        if isinstance(attestations, bool) or not isinstance(attestations, int) or not 0 <= attestations <= 64:
            raise Invalid("attestations", f"must be an integer in [0, 64], got {attestations!r}")
        if not isinstance(reexecute, bool):
            raise Invalid("reexecute", "must be true or false")
        prior = _prior(self.session, request)
        if prior is not None:
            return {"policies": _written(prior["results"], POLICIES_KEY), "replayed": True}
        for _ in range(_RETRIES):
            v = self.session.get(POLICIES_KEY)
            cur = dict(v.values[0]) if len(v.values) == 1 and isinstance(v.values[0], dict) else {}
            if remove:
                cur.pop(sc, None)
            else:
                cur[sc] = {"attestations": attestations, "reexecute": reexecute}
            try:
                r = self.session.txn(ops=[Put(POLICIES_KEY, cur, context=v.context, label="policy.set")], system=True, **_txn_request(request))
            except StaleContext:
                continue
            if r.replayed:
                return {"policies": _written(r.results, POLICIES_KEY), "replayed": True}
            return {"policies": cur}
        raise StaleContext("the policies kept changing; retry", key=POLICIES_KEY)

    # ------------------------------------------------------------ provenance
    def provenance(self, change_id: str) -> dict[str, Any]:
        """What the change was built on (transitively) and what was built on it, with states."""
        cid = parse_change_id(change_id)
        root = self.record(cid)
        up: list[dict[str, Any]] = []
        seen = {cid}
        frontier = list(root["built_on"]["changes"])
        while frontier:
            vs = self.session.get_many([change_key(c) for c in frontier])
            nxt = []
            for c, v in zip(frontier, vs):
                if c in seen or len(v.values) != 1:
                    continue
                seen.add(c)
                r = v.values[0]
                up.append({"id": c, "state": _state(r), "author": r["author"], "task": r["task"], "commit": r.get("commit"),
                           "built_on": r["built_on"]["changes"]})
                nxt += r["built_on"]["changes"]
            frontier = nxt
        closure, _ = self._dependents([cid])
        down = []
        for c, v in zip(closure[1:], self.session.get_many([change_key(c) for c in closure[1:]])):
            if len(v.values) == 1:
                r = v.values[0]
                down.append({"id": c, "state": _state(r), "author": r["author"], "task": r["task"], "built_on": r["built_on"]["changes"]})
        return {"change": {**root, "state": _state(root)}, "built_on": up, "built_upon_by": down,
                "commits": root["built_on"]["commits"], "keys": root["built_on"]["keys"]}


def gate(session: Session, task_id: str, token: int) -> tuple[str, list[Any], list[str]]:
    """What completing ``task_id`` under ``token`` does: ``("done", [], [])`` when no stored
    policy applies; else ``("submitted" | "done", guards, change ids)``, the guards holding
    the changes it relied on.  Raised: NotFound when a policy applies and no change was
    submitted under this token; StaleContext when one of them was refuted or tainted."""
    ch = Changes(session)
    policies = ch.policies()
    if not policies:
        return "done", [], []
    tv = session.get(task_key(task_id))
    labels = list(tv.values[0].get("labels", [])) if len(tv.values) == 1 else []
    idx = session.get(TASK_CHANGES_PREFIX + task_id)
    ids = list(idx.values[0]) if len(idx.values) == 1 else []
    vs = session.get_many([change_key(i) for i in ids]) if ids else []
    mine = [(v.values[0], v) for v in vs if len(v.values) == 1 and v.values[0].get("token") == token]
    paths = [p for r, _ in mine for p in r.get("paths", [])]
    policy = _resolve(policies, labels, paths)
    if not policy.gates:
        return "done", [], []
    if not mine:
        raise NotFound(
            f"task {task_id} is under policy {', '.join(policy.scopes)} ({policy.attestations} attestation(s)"
            f"{', re-execution' if policy.reexecute else ''}): submit its change (with its commit and checks) before completing it",
            field="change", task=task_id, next=[Step("change_submit", {"task": task_id}, "submit its change first")],
        )
    bad = [r for r, _ in mine if _state(r) in ("refuted", "tainted")]
    if bad:
        r = bad[0]
        why = f"was refuted: {r['refuted'].get('reason')}" if r.get("refuted") else f"is built on refuted work ({', '.join(r['tainted_by'])})"
        raise StaleContext(f"task {task_id}: your change {r['id']} {why}; fix it and submit a new change",
                           key=change_key(r["id"]), change=r["id"])
    guards: list[Any] = [Unchanged(TASK_CHANGES_PREFIX + task_id, idx.context)] + [Unchanged(v.key, v.context) for _, v in mine]
    status = "done" if all(_state(r) == "accepted" for r, _ in mine) else "submitted"
    return status, guards, [r["id"] for r, _ in mine]
