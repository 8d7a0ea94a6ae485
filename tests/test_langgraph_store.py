"""ComityStore under real LangGraph graphs of plain Python functions (no LLM)."""

from __future__ import annotations

import asyncio
import operator
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph.store.base", reason="langgraph is not installed (pip install -e '.[dev]')")

from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.base import BaseStore, InvalidNamespaceError  # noqa: E402

import comity  # noqa: E402
from comity.integrations.langgraph import SIBLINGS, ComityItem, ComityStore  # noqa: E402

NS = ("projects", "alpha")


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    seen: list[Any]


def _graph(nodes: dict[str, Any], edges: list[tuple[Any, str]]) -> Any:
    g = StateGraph(State)
    for name, fn in nodes.items():
        g.add_node(name, fn)
    for a, b in edges:
        g.add_edge(a, b)
    return g


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = comity.open(tmp_path / "lg.db")
    yield s
    s.close()


def test_parallel_branches_writing_one_key_leave_siblings_a_later_node_resolves(store: comity.Store) -> None:
    def branch(step: str) -> Any:
        def node(state: State, *, store: BaseStore) -> State:
            # The usual LangGraph pattern: put without reading. In LangGraph's own stores the
            # last write wins and the other branch's work is gone; here both are kept.
            store.put(NS, "plan", {"steps": [step], "by": step})
            return {"log": [step]}

        return node

    def merge(state: State, *, store: BaseStore) -> State:
        item = store.get(NS, "plan")
        assert isinstance(item, ComityItem)
        seen = sorted(s["by"] for s in item.siblings)
        assert sorted(v["by"] for v in item.value[SIBLINGS]) == seen
        steps = sorted(step for s in item.siblings for step in s["steps"])
        store.put(NS, "plan", {"steps": steps, "by": "merge"})  # over what this node read: resolves them
        return {"log": ["merge"], "seen": seen}

    g = _graph(
        {"backend": branch("backend"), "frontend": branch("frontend"), "merge": merge},
        [(START, "backend"), (START, "frontend"), (["backend", "frontend"], "merge"), ("merge", END)],
    )
    lg = ComityStore(store, agent="graph")
    out = g.compile(store=lg).invoke({"log": []})
    assert out["seen"] == ["backend", "frontend"]
    after = store.session().get("projects/alpha/plan")
    assert after.values == [{"steps": ["backend", "frontend"], "by": "merge"}]
    # The history says who wrote what: nothing was lost on the way.
    ops = [e["op"] for e in store.session().log("projects/alpha/plan")]
    assert ops == ["put", "put", "put"]


def test_read_modify_write_in_parallel_keeps_both_and_in_sequence_overwrites(store: comity.Store) -> None:
    both_read = threading.Barrier(2, timeout=20)

    def add(step: str, wait: bool) -> Any:
        def node(state: State, *, store: BaseStore) -> State:
            item = store.get(NS, "plan")
            steps = list(item.value["steps"]) if item else []
            if wait:
                both_read.wait()  # both branches have read the same version before either writes
            store.put(NS, "plan", {"steps": steps + [step]})
            return {"log": [step]}

        return node

    def seed(state: State, *, store: BaseStore) -> State:
        store.put(NS, "plan", {"steps": ["design"]})
        return {"log": ["seed"]}

    lg = ComityStore(store)
    sequential = _graph({"seed": seed, "a": add("api", False), "b": add("ui", False)}, [(START, "seed"), ("seed", "a"), ("a", "b"), ("b", END)])
    sequential.compile(store=lg).invoke({"log": []})
    assert store.session().get("projects/alpha/plan").values == [{"steps": ["design", "api", "ui"]}]

    parallel = _graph({"a": add("db", True), "b": add("docs", True)}, [(START, "a"), (START, "b"), ("a", END), ("b", END)])
    parallel.compile(store=lg).invoke({"log": []})
    values = store.session().get("projects/alpha/plan").values
    assert sorted(v["steps"][-1] for v in values) == ["db", "docs"]
    assert all(v["steps"][:-1] == ["design", "api", "ui"] for v in values)


def test_search_namespaces_delete_and_key_validation(store: comity.Store) -> None:
    lg = ComityStore(store, prefix="graphs")
    lg.put(("users", "ann"), "prefs", {"theme": "dark", "size": 3})
    lg.put(("users", "bob"), "prefs", {"theme": "light", "size": 5})
    lg.put(("docs",), "readme", {"text": "hi"})
    assert store.session().get("graphs/users/ann/prefs").values == [{"theme": "dark", "size": 3}]

    found = lg.search(("users",))
    assert [(i.namespace, i.key) for i in found] == [(("users", "ann"), "prefs"), (("users", "bob"), "prefs")]
    assert [i.namespace for i in lg.search(("users",), filter={"size": {"$gt": 4}})] == [("users", "bob")]
    assert [i.key for i in lg.search((), filter={"theme": "dark"})] == ["prefs"]
    assert len(lg.search((), limit=2)) == 2 and len(lg.search((), offset=2)) == 1
    assert lg.list_namespaces() == [("docs",), ("users", "ann"), ("users", "bob")]
    assert lg.list_namespaces(prefix=("users",), max_depth=1) == [("users",)]
    assert lg.list_namespaces(suffix=("bob",)) == [("users", "bob")]

    # Deleting what this scope read works; a key it never read is refused; absent is a no-op.
    fresh = ComityStore(store, prefix="graphs")
    with pytest.raises(comity.StaleContext, match="read it"):
        fresh.delete(("docs",), "readme")
    assert fresh.get(("docs",), "readme") is not None
    fresh.delete(("docs",), "readme")
    assert fresh.get(("docs",), "readme") is None
    fresh.delete(("docs",), "never-there")

    bare = ComityStore(store)
    for ns, key in [(("a/b",), "k"), (("users",), "x/y"), (("users",), "with space"), (("@task",), "T-1")]:
        with pytest.raises(InvalidNamespaceError):
            bare.put(ns, key, {"v": 1})  # comity's own '@' keys are not reachable either
    with pytest.raises(InvalidNamespaceError):
        lg.get(("users",), "")


def test_async_graph_uses_abatch(store: comity.Store) -> None:
    async def writer(state: State, *, store: BaseStore) -> State:
        await store.aput(NS, "notes", {"n": 1})
        item = await store.aget(NS, "notes")
        assert item is not None
        await store.aput(NS, "notes", {"n": item.value["n"] + 1})
        return {"log": ["w"]}

    g = _graph({"w": writer}, [(START, "w"), ("w", END)])
    asyncio.run(g.compile(store=ComityStore(store)).ainvoke({"log": []}))
    assert store.session().get("projects/alpha/notes").values == [{"n": 2}]
