"""The dashboard in a real browser: Playwright driving the machine's Chromium against a real
``comity serve`` process, with writes made by agents in other OS processes.

Skipped, saying why, only when Chromium cannot be found (``.ci/run`` installs Debian's
``chromium``).  Screenshots of every view, at a laptop's width and a phone's, are saved
under the test run's temporary directory (or ``$COMITY_SCREENSHOTS``); the path is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from server_support import COMITY, Served, _ready, agent_token, clean_env, comity

pw = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")

CHROMIUM = next((p for p in (os.environ.get("COMITY_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).exists()), None)  # fmt: skip
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (apt-get install -y chromium, as .ci/run does; or set COMITY_CHROMIUM)"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip
LIVE_MS = 1000  # a write by another process must be on the open page within a second
VIEWS = ["/", "/agents", "/news", "/conflicts", "/causality?target=T-1", "/evidence?scenario=triage_race&strategy=naive-locks&seed=1",
         "/repository"]  # fmt: skip


@dataclass
class Site:
    served: Served
    store: Path
    token: str
    bob_token: str
    made: dict[str, Any]
    shots: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from comity.chaos.report import report
    from comity.server.dashboard.demo import populate

    root = tmp_path_factory.mktemp("dashboard")
    store = root / "store.db"
    made = populate(store, workdir=root)
    evidence = root / "evidence.json"
    rows = report(["triage_race", "zombie_commit"], None, range(2), jobs=1)
    evidence.write_text(json.dumps({"seeds": 2, "rows": [r.to_json() for r in rows]}))
    token = agent_token(store, "ops", admin=True)
    bob_token = agent_token(store, "viewer")
    log = root / "serve.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([*COMITY, "--store", str(store), "serve", "--port", "0", "--json", "--evidence", str(evidence)],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=clean_env())  # fmt: skip
    served = _ready(proc, log, 60)
    shots = Path(os.environ.get("COMITY_SCREENSHOTS") or tmp_path_factory.mktemp("dashboard-screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {shots}")
    try:
        yield Site(served, store, token, bob_token, made, shots)
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _signed_in(browser: Any, site: Site, **context: Any) -> Any:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    page.goto(site.served.url + "/")
    page.fill("#token", site.token)
    page.click("button[type=submit]")
    pw.expect(page.locator(".board")).to_be_visible()
    return page


def test_a_viewer_without_a_token_is_refused(browser: Any, site: Site) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    response = page.goto(site.served.url + "/")
    assert response is not None and response.status == 401
    pw.expect(page.locator("#token")).to_be_visible()
    pw.expect(page.locator(".board")).to_have_count(0)
    for path in ("/agents?fragment=1", "/dash/stream", "/dash/task/T-1"):
        r = page.request.get(site.served.url + path)
        assert r.status == 401, path
    page.fill("#token", "ops." + "0" * 64)  # well formed, forged
    page.click("button[type=submit]")
    pw.expect(page.locator(".message")).to_contain_text("unknown")
    pw.expect(page.locator(".board")).to_have_count(0)
    assert not [c for c in ctx.cookies() if c["name"] == "comity_dash"]
    page.screenshot(path=str(site.shots / "signin.png"))
    ctx.close()


def test_signing_in_sets_a_strict_http_only_cookie_and_an_agent_token_works(browser: Any, site: Site) -> None:
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(site.served.url + "/news")
    page.fill("#token", site.bob_token)
    page.click("button[type=submit]")
    pw.expect(page).to_have_url(site.served.url + "/news")  # back where the viewer was going
    pw.expect(page.locator("header .who")).to_contain_text("viewer")
    (cookie,) = [c for c in ctx.cookies() if c["name"] == "comity_dash"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.bob_token not in cookie["value"]  # the cookie names a session, not the token
    page.click("text=sign out")
    pw.expect(page.locator("#token")).to_be_visible()
    r = page.request.get(site.served.url + "/agents?fragment=1")
    assert r.status == 401
    ctx.close()


def test_the_board_shows_a_claimed_task_with_its_token(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site)
    card = page.locator('[data-column="claimed"] #task-T-8')
    pw.expect(card.locator(".holder")).to_have_text("bob")
    pw.expect(card.locator(".token")).to_have_text(str(site.made["claimed"]["T-8"]))
    pw.expect(card.locator(".ttl")).to_contain_text("min")  # the lease counting down
    pw.expect(card.locator(".handoff")).to_contain_text("3 call sites left")
    pw.expect(page.locator('[data-column="done"] #task-T-2 .token')).to_have_text("2")  # the successor's token counted
    page.context.close()


def test_a_write_by_another_process_appears_on_the_open_page_within_a_second(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site)
    news = page.context.new_page()
    news.goto(site.served.url + "/news")
    pw.expect(news.locator("#live.on")).to_have_count(1)
    pw.expect(page.locator("#live.on")).to_have_count(1)
    # Another OS process, another agent: a claim and a write through the CLI on the store itself.
    r = comity("--store", str(site.store), "--agent", "zed", "task", "claim", "T-11", "--json")
    assert r.returncode == 0, r.stderr
    token = json.loads(r.stdout)["token"]
    card = page.locator('[data-column="claimed"] #task-T-11')
    pw.expect(card.locator(".holder")).to_have_text("zed", timeout=LIVE_MS)
    pw.expect(card.locator(".token")).to_have_text(str(token), timeout=LIVE_MS)
    pw.expect(page.locator('[data-column="open"] #task-T-11')).to_have_count(0)
    r = comity("--store", str(site.store), "--agent", "zed", "create", "notes/live", '"from another process"')
    assert r.returncode == 0, r.stderr
    pw.expect(news.locator("#events tr", has_text="notes/live").first).to_be_visible(timeout=LIVE_MS)
    pw.expect(news.locator("#events tr", has_text="notes/live").first).to_contain_text("zed")
    page.context.close()


def test_the_news_filters_by_agent_prefix_and_task(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site)
    page.goto(site.served.url + "/news?agent=carol")
    rows = page.locator("#events tr")
    assert rows.count() > 0
    assert all(t == "carol" for t in page.locator("#events tr td:nth-child(3)").all_inner_texts())
    page.goto(site.served.url + "/news?task=T-2")
    keys = page.locator("#events tr td:nth-child(5)").all_inner_texts()
    assert keys and all(k in ("@task/T-2", "@lease/@task/T-2") for k in keys)
    pw.expect(page.locator("#events tr", has_text="task.fenced")).to_have_count(1)  # the zombie's late done
    page.goto(site.served.url + "/news?prefix=notes/")
    r = comity("--store", str(site.store), "--agent", "yan", "create", "other/skip", "1")
    assert r.returncode == 0
    r = comity("--store", str(site.store), "--agent", "yan", "create", "notes/kept", "1")
    assert r.returncode == 0
    pw.expect(page.locator("#events tr", has_text="notes/kept")).to_have_count(1, timeout=LIVE_MS)
    pw.expect(page.locator("#events tr", has_text="other/skip")).to_have_count(0)
    page.context.close()


def test_the_causal_view_of_the_triage_race_marks_the_concurrent_claim(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site)
    page.goto(site.served.url + "/causality?target=" + site.made["triage_task"])
    refused = page.locator('#causal g.node.refused[data-agent="bob"]')
    pw.expect(refused).to_have_count(1)
    pw.expect(refused).to_have_class("node refused is-concurrent")
    assign = page.locator('#causal g.node.is-concurrent[data-agent="triage"]')
    pw.expect(assign).to_have_count(1)  # the assignment bob's claim had not seen
    pos = assign.get_attribute("data-pos")
    pw.expect(page.locator(f'#causal g.concurrent[data-concurrent^="{pos}-"]')).to_have_count(1)
    pw.expect(page.locator("#causal")).to_contain_text("concurrent")
    pw.expect(page.locator(".explanations")).to_contain_text("bob's claim-refused")
    pw.expect(page.locator(".explanations")).to_contain_text("did not see triage's assign")
    page.context.close()


def test_conflicts_show_who_and_what_each_had_seen(browser: Any, site: Site) -> None:
    page = _signed_in(browser, site)
    page.goto(site.served.url + "/conflicts")
    pw.expect(page.locator("#siblings")).to_contain_text("notes/api-design")
    pw.expect(page.locator("#siblings")).to_contain_text("did not see erin's put")
    pw.expect(page.locator("#refused-writes")).to_contain_text("notes/schema")
    pw.expect(page.locator("#fenced tbody tr").first).to_contain_text("carol")
    pw.expect(page.locator("#refused-claims")).to_contain_text("T-1")
    page.context.close()


@pytest.mark.parametrize("device", ["laptop", "phone"])
def test_every_view_renders_and_fits_the_screen(browser: Any, site: Site, device: str) -> None:
    size = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}[device]
    page = _signed_in(browser, site, viewport=size, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    for path in VIEWS:
        response = page.goto(site.served.url + path)
        assert response is not None and response.status == 200, path
        pw.expect(page.locator("main h1")).to_be_visible()
        # Usable at this width: the page itself never scrolls sideways (wide tables and pictures scroll in their boxes).
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, device, overflow)
        name = path.strip("/").split("?")[0] or "board"
        page.screenshot(path=str(site.shots / f"{name}-{device}.png"), full_page=device == "laptop")
    assert not errors, errors
    page.context.close()
