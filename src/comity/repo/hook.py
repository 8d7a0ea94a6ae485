"""The hook entry point: ``python -m comity.repo.hook pre-commit|commit-msg [ARGS]``.

Kept lean on purpose (it runs on every commit): it imports the store, the
coordination layer and the decision records, never click or rich.  Exit 0 lets the
commit through; 3 refuses it, with one paragraph per problem on stderr.
"""

from __future__ import annotations

import os
import sys

from ..errors import ComityError
from ..store import open as open_store
from ._git import Repo
from .hooks import Report, commit_msg, pre_commit


def _print(report: Report, hook: str) -> None:
    for note in report.notes:
        sys.stderr.write(f"comity: news: {note}\n")
    if report.problems:
        sys.stderr.write(f"comity {hook}: commit refused ({len(report.problems)} problem{'s' if len(report.problems) > 1 else ''}):\n")
        for p in report.problems:
            sys.stderr.write(f"  - {p.message}\n    fix: {p.fix}\n")
        sys.stderr.write("  (a person may skip these checks with `git commit --no-verify`; `comity doctor` reports what slipped past)\n")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("pre-commit", "commit-msg"):
        sys.stderr.write("usage: python -m comity.repo.hook pre-commit|commit-msg [ARGS]\n")
        return 2
    hook = args[0]
    env = dict(os.environ)
    location = env.get("COMITY_STORE") or None
    if location is not None and location.strip().lower().startswith(("http://", "https://")):
        sys.stderr.write(f"comity {hook}: the checks read the store directly and {location} is a server; skipping them\n")
        return 0
    try:
        repo = Repo.find()
        store = open_store(location or repo.store_path)
        try:
            session = store.session(env.get("COMITY_AGENT") or None)
            if hook == "pre-commit":
                report = pre_commit(session, repo, env)
            else:
                if len(args) < 2:
                    sys.stderr.write("comity commit-msg: git passes the message file; none was given\n")
                    return 2
                with open(args[1], encoding="utf-8", errors="replace") as f:
                    report = commit_msg(session, f.read(), env)
        finally:
            store.close()
    except ComityError as e:
        sys.stderr.write(f"comity {hook}: {e.message}\n")
        return e.exit_code if e.exit_code != 0 else 1
    _print(report, hook)
    return 0 if report.ok else 3


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # every commit pays for interpreter teardown otherwise; the store is closed
