"""``comity bench dashboard``: time to first render and event-to-page latency of the dashboard.

A store with a board of ``tasks`` tasks (some claimed, some done) and a log of
``log_events`` events (bulk-loaded) is served by a real ``comity serve`` process.

- **Render**: each view fetched over HTTP, signed in, ``renders`` times (p50/p99, bytes);
  the baseline, in the same run and server, is ``POST /v1/task_list``: the same board as
  the JSON API answers it, so ``board_over_task_list`` is what the page costs over the data.
- **Event to page**: this process writes a key (another OS process than the server) and
  times until the event arrives on an open ``/dash/stream`` (server-sent events); the
  baseline is the write's own acknowledgement.
- **In a browser** (when Playwright and Chromium are there): first contentful paint of the
  board, and the time from a claim written here to its card showing the claimant.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..work import Board
from .store import _open, _pct, _seed_log

__all__ = ["bench_dashboard"]

VIEWS = {"board": "/", "agents": "/agents", "news": "/news", "conflicts": "/conflicts", "causality": "/causality?target=T-1",
         "repository": "/repository"}  # fmt: skip
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


_PAINT = """(() => {
  const p = performance.getEntriesByName('first-contentful-paint')[0];
  if (p) return p.startTime;
  const n = performance.getEntriesByType('navigation')[0];
  return n ? n.domContentLoadedEventEnd : 0;
})()"""


def _comity() -> list[str]:
    beside = Path(sys.executable).with_name("comity")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "comity.cli"]


def _build(path: Path, tasks: int, log_events: int, progress: Callable[[str], None]) -> str:
    from ..server.auth import issue_token

    store = _open(path)
    try:
        progress(f"bench: bulk-loading {log_events} log events and {tasks} tasks")
        _seed_log(store, log_events)
        db = getattr(store.backend, "db")
        db.execute("PRAGMA synchronous=OFF")  # building the scratch store only; measured writes below are durable
        lead = Board(store.session("lead"))
        for i in range(tasks):
            lead.add(f"task {i}", body="bench", deps=[f"T-{i}"] if i % 10 == 9 else [])
        agents = [Board(store.session(f"agent-{k}")) for k in range(8)]
        for i in range(tasks // 5):  # a fifth claimed, half of those done
            b = agents[i % len(agents)]
            c = b.claim(f"T-{i + 1}", ttl=3600)
            if i % 2:
                b.checkpoint(f"T-{i + 1}", c.token, "halfway")
            else:
                b.done(f"T-{i + 1}", c.token, result="ok")
        db.execute("PRAGMA synchronous=FULL")
        return str(issue_token(store.session("ops"), "ops", admin=True)["auth_token"])
    finally:
        store.close()


def _serve(path: Path, log: Path) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
    with open(log, "w") as err:
        proc = subprocess.Popen([*_comity(), "--store", str(path), "serve", "--port", "0", "--json"], stdout=subprocess.PIPE,
                                stderr=err, text=True, env=env)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"bench: comity serve did not start: {log.read_text()}")
    return proc, json.loads(line)["url"]


class _Listener:
    """Reads /dash/stream in a thread and notes when each event's position arrives."""

    def __init__(self, client: Any, url: str) -> None:
        self.arrived: dict[int, float] = {}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self._client = client
        self._url = url
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url + "/dash/stream", timeout=None) as r:
                self.ready.set()
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        t = time.perf_counter()
                        with self.cond:
                            self.arrived[int(line[4:])] = t
                            self.cond.notify_all()
        except Exception:  # the server stopping at the end of the run closes the stream
            self.ready.set()

    def wait(self, pos: int, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        with self.cond:
            while pos not in self.arrived:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError(f"bench: event {pos} never reached the page's stream")
                self.cond.wait(left)
            return self.arrived[pos]


def _browser(url: str, token: str, path: Path, tasks: int, loads: int, events: int) -> dict[str, Any]:
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"browser": "skipped: playwright is not installed"}
    if chromium is None:
        return {"browser": "skipped: no chromium (apt-get install chromium)"}
    out: dict[str, Any] = {}
    store = _open(path)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
            page = b.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/signin")
            page.fill("#token", token)
            page.click("button[type=submit]")
            page.wait_for_selector(".board")
            fcp, loaded = [], []
            for _ in range(loads):
                t = time.perf_counter()
                page.goto(url + "/", wait_until="load")
                loaded.append(time.perf_counter() - t)
                # First contentful paint where the browser reports it, else the DOM ready for the script.
                fcp.append(float(page.evaluate(_PAINT)) / 1000)
            page.wait_for_selector("#live.on")
            board = Board(store.session("bench-writer"))
            lat = []
            free = [n for n in range(tasks, tasks // 5, -1) if (n - 1) % 10 != 9][:events]  # open, no dependency
            for n in free:
                tid = f"T-{n}"
                t = time.perf_counter()
                board.claim(tid, ttl=3600)
                page.wait_for_selector(f'[data-column="claimed"] #task-{tid} .holder', timeout=10_000)
                lat.append(time.perf_counter() - t)
            b.close()
        out.update(browser_first_render_p50_ms=_pct(fcp, 0.5), browser_load_p50_ms=_pct(loaded, 0.5),
                   browser_claim_to_card_p50_ms=_pct(lat, 0.5), browser_claim_to_card_p99_ms=_pct(lat, 0.99))  # fmt: skip
    finally:
        store.close()
    return out


def bench_dashboard(
    *,
    tasks: int = 1000,
    log_events: int = 100_000,
    renders: int = 20,
    events: int = 50,
    browser: bool = True,
    directory: str | None = None,
    progress: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    """Render p50/p99 per view against ``task_list``, and event-to-page latency against the write."""
    import httpx

    with tempfile.TemporaryDirectory(dir=directory, prefix="comity-bench-dash-") as tmp:
        path = Path(tmp) / "dash.db"
        t = time.perf_counter()
        token = _build(path, tasks, log_events, progress)
        built_s = time.perf_counter() - t
        proc, url = _serve(path, Path(tmp) / "serve.log")
        out: dict[str, Any] = {}
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                for _ in range(100):
                    try:
                        if client.get("/v1/health").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.05)
                r = client.post("/signin", data={"token": token}, follow_redirects=False)
                if r.status_code != 303:
                    raise RuntimeError(f"bench: sign-in refused ({r.status_code})")
                progress(f"bench: {renders} renders of each view, {events} events through the stream")
                for name, view in VIEWS.items():
                    client.get(view)  # warm up
                    samples = []
                    for _ in range(renders):
                        t = time.perf_counter()
                        resp = client.get(view)
                        samples.append(time.perf_counter() - t)
                        assert resp.status_code == 200, (view, resp.status_code)
                    out[f"{name}_render_p50_ms"] = _pct(samples, 0.5)
                    out[f"{name}_render_p99_ms"] = _pct(samples, 0.99)
                    out[f"{name}_bytes"] = len(resp.content)
                api = []
                auth = {"Authorization": f"Bearer {token}"}
                for _ in range(renders + 1):
                    t = time.perf_counter()
                    resp = client.post("/v1/task_list", json={}, headers=auth)
                    api.append(time.perf_counter() - t)
                    assert resp.status_code == 200, resp.text[:200]
                out["task_list_p50_ms"] = _pct(api[1:], 0.5)
                out["board_over_task_list"] = round(out["board_render_p50_ms"] / out["task_list_p50_ms"], 2)
                listener = _Listener(client, url)
                listener.ready.wait(10)
                store = _open(path)
                try:
                    s = store.session("bench-writer")
                    acks, lat = [], []
                    for i in range(events + 5):
                        t = time.perf_counter()
                        w = s.put(f"bench/live/{i}", {"n": i})
                        acked = time.perf_counter()
                        arrived = listener.wait(w.pos)
                        if i >= 5:  # the first few warm the stream up
                            acks.append(acked - t)
                            lat.append(arrived - t)
                finally:
                    store.close()
                out["event_to_page_p50_ms"] = _pct(lat, 0.5)
                out["event_to_page_p99_ms"] = _pct(lat, 0.99)
                out["write_ack_p50_ms"] = _pct(acks, 0.5)
                out["event_to_page_over_write"] = round(out["event_to_page_p50_ms"] / out["write_ack_p50_ms"], 2)
            if browser:
                progress("bench: the same in Chromium")
                out.update(_browser(url, token, path, tasks, 5, min(events, 20)))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc.stdout is not None:
                proc.stdout.close()
    return {**out, "tasks": tasks, "log_events": log_events, "renders": renders, "events": events,
            "build_s": round(built_s, 2), "python": platform.python_version()}  # fmt: skip
