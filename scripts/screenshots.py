"""Take the README's screenshots of the dashboard: `make screenshots`.

A demo team's afternoon (comity.server.dashboard.demo) in a scratch store, a small chaos
report for the Evidence view, a real `comity serve`, and Chromium through Playwright;
one PNG per view, 1280x800, into docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from comity.chaos.report import report
from comity.server.auth import issue_token
from comity.server.dashboard.demo import populate
from comity.store import open as open_store

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
VIEWS = {
    "board": "/", "agents": "/agents", "news": "/news", "conflicts": "/conflicts", "causality": "/causality?target=T-1",
    "evidence": "/evidence?scenario=triage_race&strategy=naive-locks&seed=1", "repository": "/repository",
}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    chromium = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).exists()), None)
    if chromium is None:
        sys.exit("screenshots: no chromium; apt-get install -y chromium")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="comity-shots-") as tmp:
        root = Path(tmp)
        store = root / "store.db"
        populate(store, workdir=root)
        s = open_store(store)
        token = issue_token(s.session("ops"), "ops", admin=True)["auth_token"]
        s.close()
        rows = report(["migration_collision", "triage_race", "crash_mid_task", "zombie_commit"], None, range(5), jobs=1)
        evidence = root / "evidence.json"
        evidence.write_text(json.dumps({"seeds": 5, "rows": [r.to_json() for r in rows],
                                        "command": "comity chaos report --seeds 1000 --json"}))
        comity = Path(sys.executable).with_name("comity")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMITY_")}
        proc = subprocess.Popen([str(comity), "--store", str(store), "serve", "--port", "0", "--json", "--evidence", str(evidence)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        try:
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
                page = b.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1)
                page.goto(url + "/signin")
                page.screenshot(path=str(OUT / "signin.png"))
                page.fill("#token", token)
                page.click("button[type=submit]")
                page.wait_for_selector(".board")
                for name, path in VIEWS.items():
                    page.goto(url + path)
                    page.wait_for_selector("main h1")
                    page.screenshot(path=str(OUT / f"{name}.png"))
                    print(OUT / f"{name}.png")
                phone = b.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
                phone.goto(url + "/signin")
                phone.fill("#token", token)
                phone.click("button[type=submit]")
                phone.wait_for_selector(".board")
                phone.screenshot(path=str(OUT / "board-phone.png"))
                b.close()
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
