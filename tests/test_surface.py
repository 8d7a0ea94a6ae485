"""The public surface is deliberate: a change to any ``__all__`` must change this test."""

from __future__ import annotations

import importlib

import pytest

SURFACE = {
    "comity": [
        "open", "Store", "Session", "Versioned", "Written", "TxnResult", "News",
        "ComityError", "StaleContext", "Fenced", "LeaseExpired", "NotFound", "Invalid", "Unavailable",
        "__version__",
    ],
    "comity.crdt": [
        "CRDT", "UpdateContext", "GCounter", "PNCounter", "LWWRegister", "MVRegister", "ORSet", "EWFlag", "ORMap",
        "BCounter", "OutOfRights", "TYPES", "crdt_type",
    ],
    "comity.coord": [
        "Lease", "Leases", "DEFAULT_TTL_S", "next_number", "allocate", "Allocation", "raise_to", "reserve_block", "PhiAccrual", "AgentStatus", "agents", "heartbeat",
        "Reservation", "overlaps", "reserve", "release", "reservations",
    ],
    "comity.work": [
        "Agent", "VERBS", "VERB", "Verb", "Param", "bind", "Board", "Claim", "why", "parse_task_id", "task_key", "TASK_PREFIX", "OPEN_PREFIX",
        "Decision", "decide", "decisions", "acknowledge",
    ],
    "comity.repo": [
        "Repo", "GitFailed", "Template", "new_migration", "check", "renumber", "install", "uninstall", "pre_commit",
        "decide_on_commit", "doctor",
    ],
    "comity.causal": ["Dot", "Ordering", "VersionVector", "DVVSet", "HLC", "HLCTimestamp"],
    "comity.store": [
        "open", "locate", "check", "salvage", "Problem", "Report", "AUTH_PREFIX", "Store", "Session", "Versioned", "Written", "TxnResult", "News",
        "Unchanged", "Absent", "Holds", "Put", "Create", "Delete", "Acquire", "Renew", "Release", "Update", "Next", "Note",
        "Guard", "Op", "Backend", "Tx", "StoreMeta", "KeyRow", "LeaseRow", "EventRow", "SessionRow",
        "SQLiteBackend", "PostgresBackend", "PRAGMAS", "SCHEMA_VERSION",
    ],
    "comity.errors": [
        "Step", "ComityError", "Invalid", "StaleContext", "Fenced", "LeaseExpired", "NotFound", "Unavailable",
        "EXIT_OK", "EXIT_INTERNAL", "EXIT_INVALID", "EXIT_REFUSED", "EXIT_NOT_FOUND", "EXIT_UNAVAILABLE",
    ],
    "comity.render": ["describe_key", "news_line", "tool_call", "CliForm", "CLI_FORMS", "cli_command"],
    "comity.clikit": ["Ctx", "Verbs", "Opener", "out", "err", "print_json", "print_news", "news_of", "fail", "closed_pipe", "command", "FIELD_FIXES"],
    "comity.bench": [],
    "comity.runtime": [
        "Clock", "SystemClock", "VirtualClock", "Rng", "SystemRng", "SeededRng",
        "Transport", "Handler", "InProcessTransport", "HttpTransport", "SimulatedTransport", "Unreachable",
    ],
    "comity.sync": [
        "clone", "sync_with", "repair_with", "status", "sync", "repair", "SyncResult", "Endpoint", "Link", "connect",
        "Upstream", "apply", "collect", "vector", "covers", "Applied", "state_hash", "leaves", "reserve_numbers",
        "take_number", "escrowed", "last_reached", "CONFLICT_PREFIX",
    ],
}


@pytest.mark.parametrize("module", sorted(SURFACE))
def test_public_surface_is_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(SURFACE[module])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"
