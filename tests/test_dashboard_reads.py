"""The reads the dashboard renders, in the library (every face can use them), on both backends:
refused writes and fenced actions kept in the log, conflicts, the filtered feed, activity
and φ over time, migration allocations; and the dashboard's HTTP surface (sign-in, cookies,
refusals, fragments, the stream) without a browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import comity
from comity.coord.liveness import PhiAccrual, activity, phi_series
from comity.errors import Fenced, Invalid, StaleContext
from comity.runtime import VirtualClock
from comity.store._api import REFUSED_KEY
from comity.work import Agent, Board
from comity.work.conflicts import conflicts
from comity.work.feed import Filter, matches, recent


def test_a_refused_write_is_kept_in_the_log_with_what_its_writer_had_seen(store: comity.Store) -> None:
    alice, bob = store.session("alice"), store.session("bob")
    alice.create("notes/x", 1)
    old = bob.get("notes/x")
    w = alice.put("notes/x", 2, context=alice.get("notes/x").context)
    head = store.session().head()
    with pytest.raises(StaleContext):
        bob.put("notes/x", 3, context=old.context)
    with pytest.raises(StaleContext):
        bob.create("notes/x", 4)
    assert bob.get("notes/x").values == [2]  # the refusal itself is unchanged: nothing written
    log = [e for e in store.session().log(after=head) if e["key"] == REFUSED_KEY]
    assert [e["op"] for e in log] == ["write.refused", "write.refused"]
    stale, exists = log
    assert stale["agent"] == "bob" and stale["target"] == "notes/x" and stale["key"] == REFUSED_KEY
    assert stale["seen"] < w.pos  # it had seen the first write only
    assert stale["missed"] == [w.pos] and stale["writers"] == ["alice"] and stale["write"] == "put"
    assert exists["write"] == "create" and "seen" not in exists
    assert stale["pos"] > head
    c = conflicts(store.session())
    assert [(r["agent"], r["key"], r["missed"]) for r in c["refused_writes"]] == [("bob", "notes/x", [w.pos])] * 2  # newest first; a create is told who holds the key


def test_comity_s_own_retries_are_not_recorded_as_refusals(store: comity.Store) -> None:
    triage = Board(store.session("triage"))
    for i in range(3):
        triage.add(f"t{i}")
    Board(store.session("alice")).claim("T-1")
    assert [e for e in store.session().log(limit=1000) if e["key"] == REFUSED_KEY] == []


def test_a_fenced_completion_is_kept_on_the_task_s_history(store: comity.Store, clock: VirtualClock) -> None:
    Board(store.session("triage")).add("fix it")
    carol, bob = Board(store.session("carol")), Board(store.session("bob"))
    old = carol.claim("T-1", ttl=60)
    clock.advance(61)
    new = bob.claim("T-1", ttl=60)
    with pytest.raises(Fenced):
        carol.checkpoint("T-1", old.token, "late note")
    bob.done("T-1", new.token)
    with pytest.raises(Fenced):
        carol.done("T-1", old.token)
    c = conflicts(store.session())
    assert [(f["agent"], f["task"], f["action"], f["token"]) for f in c["fenced"]] == [("carol", "T-1", "done", old.token), ("carol", "T-1", "checkpoint", old.token)]
    assert c["fenced"][1]["current"] == new.token and c["fenced"][1]["holder"] == "bob"
    ops = [h["op"] for h in comity.work.why(store.session(), "T-1")["history"]]
    assert ops.count("task.fenced") == 2


def test_siblings_waiting_say_what_each_writer_had_not_seen(store: comity.Store) -> None:
    erin, alice = Agent(store.session("erin")), Agent(store.session("alice"))
    base = erin.create("notes/api", "REST")["context"]
    w1 = erin.write("notes/api", "REST + cursors", context=base)
    w2 = alice.write("notes/api", "gRPC", context=base, keep_both=True)
    c = conflicts(store.session())
    (s,) = c["siblings"]
    assert s["key"] == "notes/api" and s["count"] == 2
    assert [(w["agent"], [m["pos"] for m in w["missed"]]) for w in s["writes"]] == [("erin", []), ("alice", [w1["pos"]])]
    both = erin.read("notes/api")
    erin.write("notes/api", "REST for now", context=both["context"])  # resolved: no longer waiting
    assert conflicts(store.session())["siblings"] == []
    assert w2["pos"] > w1["pos"]


def test_refused_and_fenced_actions_are_news_to_nobody_but_stay_in_the_log(store: comity.Store, clock: VirtualClock) -> None:
    """A refused write and a fenced task action change nothing: news to nobody (the one who
    tried heard it from the refusal), kept in the log, `why` and the conflicts view.  A
    session far behind, whose key has more of them than one answer's news, still gets the
    real event after them."""
    Board(store.session("triage")).add("fix it")
    carol, bob = Board(store.session("carol")), Board(store.session("bob"))
    alice = store.session("alice")
    old = carol.claim("T-1", ttl=60)
    clock.advance(61)
    new = bob.claim("T-1", ttl=60)
    alice.get("@task/T-1")
    alice.news()
    writer = store.session("writer")
    for i in range(300):  # far behind: more than one scan of the log
        writer.put(f"noise/{i}", i)
    for i in range(60):  # more fenced notes on alice's key than one answer's news
        with pytest.raises(Fenced):
            carol.checkpoint("T-1", old.token, f"late note {i}")
    bob.checkpoint("T-1", new.token, "real progress")
    news = alice.get("@task/T-1").news
    assert [e["op"] for e in news if e["key"] == "@task/T-1"] == ["task.checkpoint"], [e["op"] for e in news]
    assert all(e["op"] not in ("task.fenced", "write.refused") for e in alice.news(limit=1000).events)
    assert [e["op"] for e in alice.log("@task/T-1", limit=1000)].count("task.fenced") == 60
    assert len(conflicts(store.session())["fenced"]) >= 1
    # A refused write: in the log under @refused (log("@refused") reads it), news to nobody.
    v = store.session("eve").get("notes/n")
    store.session("frank").put("notes/n", 1)
    with pytest.raises(StaleContext):
        store.session("eve").put("notes/n", 2, context=v.context)
    assert [e["agent"] for e in alice.log(REFUSED_KEY)] == ["eve"]
    assert [e["key"] for e in alice.news().events] == ["notes/n"]


def test_the_triage_race_s_refused_claim_is_a_conflict(store: comity.Store) -> None:
    triage, alice, bob = (Agent(store.session(n)) for n in ("triage", "alice", "bob"))
    triage.task_add("login fails")
    seen = bob.task_show("T-1")["context"]
    triage.task_assign("T-1", "alice")
    alice.task_claim("T-1")
    alice.news()
    with pytest.raises(StaleContext):
        bob.task_claim("T-1", context=seen)
    (r,) = conflicts(store.session())["refused_claims"]
    assert r["agent"] == "bob" and r["task"] == "T-1" and len(r["missed"]) == 2
    # bob's refused claim changed nothing: news to nobody (not even to the holder, whose task
    # it is), in the task's history.
    assert alice.task_show("T-1")["news"] == [] and alice.news()["news"] == []
    assert "task.claim-refused" in [e["op"] for e in alice.log("@task/T-1")["events"]]


def test_the_feed_pages_backwards_through_filters(store: comity.Store) -> None:
    a, b = store.session("a"), store.session("b")
    for i in range(30):
        (a if i % 3 else b).create(f"{'x' if i % 2 else 'y'}/{i}", i)
    page = recent(store.session(), Filter.parse(agent="b"), limit=4)
    assert [e["agent"] for e in page["events"]] == ["b"] * 4
    assert [e["pos"] for e in page["events"]] == sorted([e["pos"] for e in page["events"]], reverse=True)
    rest = recent(store.session(), Filter.parse(agent="b"), before=page["older"], limit=100)
    assert len(page["events"]) + len(rest["events"]) == 10 and rest["older"] is None
    assert not {e["pos"] for e in page["events"]} & {e["pos"] for e in rest["events"]}
    xs = recent(store.session(), Filter.parse(prefix="x/"))["events"]
    assert len(xs) == 15 and all(matches(e, Filter(prefix="x/")) for e in xs)
    assert xs[0]["preview"] == "29"
    Board(store.session("t")).add("a task")
    assert {e["key"] for e in recent(store.session(), Filter.parse(task="1"))["events"]} == {"@task/T-1"}
    with pytest.raises(Invalid):
        Filter.parse(agent="bad name!")
    with pytest.raises(Invalid):
        recent(store.session(), limit=0)


def test_phi_rises_over_a_silence_and_activity_lists_sessions(store: comity.Store, clock: VirtualClock) -> None:
    dave = store.session("dave", name="dave-1")
    for i in range(8):
        dave.create(f"d/{i}", i)
        clock.advance(60)
    clock.advance(3600)
    act = activity(store.session(), points=20)
    d = act["agents"]["dave"]
    assert d["last_action"]["key"] == "d/7"
    assert [(s["session"], s["events"]) for s in d["sessions"]] == [("dave-1", 8)]
    phis = [p for _, p in d["phi"]]
    assert phis[-1] > PhiAccrual().threshold > phis[1]  # quiet while it worked, suspected after
    assert phi_series(PhiAccrual(), [], 0.0, 10.0, points=3) == [(0.0, 0.0), (5.0, 0.0), (10.0, 0.0)]


def test_the_agents_view_reads_the_log_once(store: comity.Store, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view's two judgements (φ and holds, activity and sessions) share one read of the
    window: on a 100,000-event log each read is most of the page's time."""
    from comity.server.dashboard.app import Dashboard
    from comity.store._api import Session

    bob = Board(store.session("bob"))
    Board(store.session("triage")).add("t")
    bob.claim("T-1")
    for i in range(6):
        store.session("dave", name="dave-1").create(f"d/{i}", i)
        clock.advance(30)
    reads: list[object] = []
    real = Session.log
    monkeypatch.setattr(Session, "log", lambda self, *a, **k: reads.append(k) or real(self, *a, **k))
    view = Dashboard(store, auth=None).agents_view()  # type: ignore[arg-type]
    assert len(reads) == 1
    rows = {r["agent"]: r for r in view["rows"]}
    assert rows["bob"]["status"].holds[0]["resource"] == "@task/T-1"
    assert [s["session"] for s in rows["dave"]["activity"]["sessions"]] == ["dave-1"]
    assert rows["dave"]["status"].actions == 6


# ------------------------------------------------------------------ the HTTP surface, no browser


@pytest.fixture
def dash(tmp_path: Path) -> tuple[object, str]:
    from fastapi.testclient import TestClient

    from comity.server.app import create_app
    from comity.server.auth import issue_token

    s = comity.open(tmp_path / "d.db")
    token = issue_token(s.session("ops"), "ops", admin=True)["auth_token"]
    Board(s.session("triage")).add("first")
    app = create_app(s)
    return TestClient(app), token


def test_no_token_no_view(dash: tuple[object, str]) -> None:
    client, token = dash
    c = client  # type: ignore[assignment]
    for path in ("/", "/agents", "/news", "/conflicts", "/causality", "/evidence", "/repository"):
        r = c.get(path)  # type: ignore[attr-defined]
        assert r.status_code == 401 and 'name="token"' in r.text and "T-1" not in r.text, path
    for path in ("/news?fragment=1", "/dash/stream", "/dash/task/T-1"):
        assert c.get(path).status_code == 401, path  # type: ignore[attr-defined]
    r = c.post("/signin", data={"token": "ops." + "f" * 64}, follow_redirects=False)  # type: ignore[attr-defined]
    assert r.status_code == 401 and "set-cookie" not in r.headers
    r = c.post("/signin", data={"token": token, "next": "//evil.example/"}, follow_redirects=False)  # type: ignore[attr-defined]
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
    r = c.get("/")  # type: ignore[attr-defined]
    assert r.status_code == 200 and "T-1" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    r = c.post("/signin", data={"token": token}, headers={"Origin": "http://evil.example"})  # type: ignore[attr-defined]
    assert r.status_code == 403


def test_a_rotated_token_ends_its_dashboard_session(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from comity.server.app import create_app
    from comity.server.auth import issue_token

    s = comity.open(tmp_path / "r.db")
    token = issue_token(s.session("ops"), "viewer")["auth_token"]
    app = create_app(s)
    app.state.comity.auth.ttl = 0.0  # check the store on every request
    c = TestClient(app)
    c.post("/signin", data={"token": token})
    assert c.get("/agents").status_code == 200
    issue_token(s.session("ops"), "viewer", rotate=True)
    assert c.get("/agents").status_code == 401


def test_a_one_time_link_signs_in_once(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from comity.server.app import create_app

    app = create_app(comity.open(tmp_path / "o.db"))
    link = app.state.dashboard.one_time_link("http://testserver")
    c = TestClient(app)
    r = c.get(link.removeprefix("http://testserver"), follow_redirects=False)
    assert r.status_code == 303 and "comity_dash=" in r.headers["set-cookie"]
    assert c.get("/").status_code == 200
    other = TestClient(app)
    assert other.get(link.removeprefix("http://testserver")).status_code == 401  # used already


def test_pages_answer_bad_input_with_the_field(dash: tuple[object, str]) -> None:
    c, token = dash
    c.post("/signin", data={"token": token})  # type: ignore[attr-defined]
    r = c.get("/news?before=abc")  # type: ignore[attr-defined]
    assert r.status_code == 422 and "before" in r.text
    r = c.get("/causality?target=T-99")  # type: ignore[attr-defined]
    assert r.status_code == 404
    r = c.get("/?state=nonsense")  # type: ignore[attr-defined]
    assert r.status_code == 422 and "state" in r.text
    r = c.get("/evidence?scenario=nope")  # type: ignore[attr-defined]
    assert r.status_code == 422 and "scenario" in r.text
    r = c.get("/dash/task/T-1")  # type: ignore[attr-defined]
    assert r.status_code == 200 and 'id="task-T-1"' in r.text
    assert json.loads(c.get("/dash/task/T-77").text)["error"] == "not_found"  # type: ignore[attr-defined]


def test_comity_dashboard_binds_loopback_and_prints_a_one_time_link(tmp_path: Path) -> None:
    import http.cookiejar
    import subprocess
    import urllib.error
    import urllib.request

    from server_support import COMITY, clean_env

    store = tmp_path / "local.db"
    Board(comity.open(store).session("triage")).add("look at me")
    proc = subprocess.Popen([*COMITY, "--store", str(store), "dashboard", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=clean_env())  # fmt: skip
    try:
        assert proc.stdout is not None
        out = json.loads(proc.stdout.readline())
        assert out["url"].startswith("http://127.0.0.1:") and out["signin"].startswith(out["url"] + "signin?code=")
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(out["signin"], timeout=30) as r:  # follows the redirect to the board, with the cookie
            assert r.status == 200 and "look at me" in r.read().decode()
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(out["signin"], timeout=30)  # a second use, without the cookie
        assert ei.value.code == 401
    finally:
        proc.terminate()
        proc.wait(10)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
