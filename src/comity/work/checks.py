"""Re-execution of a change's claimed checks in a clean git worktree.

:class:`GitChecks` is the real runner: ``git worktree add --detach`` of the change's
commit in a fresh temporary directory, each claimed command run there by ``/bin/sh -c``
in its own process group with a timeout (the group is killed when it runs out), the
combined output hashed (sha256), and the worktree removed afterwards whatever happened.
The environment is the runner's own minus comity's credentials (``COMITY_AUTH``,
``COMITY_TOKEN``, ``COMITY_TASK``), with ``COMITY_VERIFY`` set to the change's id.

A runner is a seam (:class:`Runner`): the chaos harness supplies one that knows, in
virtual time, whether a simulated change's work is right.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import Invalid, Unavailable
from ..runtime import Clock, SystemClock

__all__ = ["Runner", "GitChecks", "CheckResult", "Outcome", "DEFAULT_TIMEOUT_S", "find_repo"]

DEFAULT_TIMEOUT_S = 600.0
_TAIL = 2000
_SCRUB = ("COMITY_AUTH", "COMITY_TOKEN", "COMITY_TASK", "COMITY_SESSION")


@dataclass(slots=True)
class CheckResult:
    command: str
    exit_code: int | None  # None: killed at the timeout
    output_sha256: str
    seconds: float
    tail: str
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "exit_code": self.exit_code, "output_sha256": self.output_sha256,
                "seconds": round(self.seconds, 3), "timed_out": self.timed_out, "tail": self.tail}


@dataclass(slots=True)
class Outcome:
    """``passed`` (every check exited 0), ``failed`` (one did not, or timed out), or
    ``error`` (nothing could be checked: the commit is not here, git failed)."""

    outcome: str
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None

    @property
    def output_sha256(self) -> str:
        """One hash over every check's command and output hash, in order."""
        h = hashlib.sha256()
        for c in self.checks:
            h.update(f"{c.command}\0{c.exit_code}\0{c.output_sha256}\n".encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "output_sha256": self.output_sha256,
                               "checks": [c.to_json() for c in self.checks]}
        if self.error:
            out["error"] = self.error
        return out


class Runner(Protocol):
    """Runs a change's claimed checks at its commit."""

    def run(self, change: dict[str, Any], timeout: float) -> Outcome: ...


def find_repo(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The top of the git work tree at ``start`` (default: ``$COMITY_REPO``, else the cwd)."""
    where = start if start is not None else os.environ.get("COMITY_REPO") or os.getcwd()
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


class GitChecks:
    """Re-executes checks in a clean ``git worktree`` of ``repo``."""

    def __init__(self, repo: str | os.PathLike[str] | None = None, *, clock: Clock | None = None) -> None:
        self.repo = Path(repo) if repo is not None else find_repo()
        self.clock = clock or SystemClock()

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.repo is not None
        return subprocess.run(["git", "-C", str(self.repo), *args], capture_output=True, text=True, timeout=300)

    def run(self, change: dict[str, Any], timeout: float) -> Outcome:
        if self.repo is None:
            raise Unavailable("verification needs a git repository holding the change's commit; none was found here"
                              " (set COMITY_REPO to its path)")
        commit = change.get("commit")
        if not commit:
            return Outcome("error", error=f"change {change['id']} names no commit (only a diff hash): there is nothing to check out")
        if not change.get("checks"):
            raise Invalid("checks", f"change {change['id']} claims no checks: there is nothing to re-execute")
        found = self._git("rev-parse", "--verify", "-q", f"{commit}^{{commit}}")
        if found.returncode != 0:
            return Outcome("error", error=f"commit {commit} is not in {self.repo}; fetch it and verify again")
        base = Path(tempfile.mkdtemp(prefix=f"comity-verify-{change['id']}-"))
        tree = base / "worktree"
        try:
            added = self._git("worktree", "add", "--detach", str(tree), commit)
            if added.returncode != 0:
                return Outcome("error", error=f"git worktree add failed: {added.stderr.strip()[:300]}")
            results = []
            for cmd in change["checks"]:
                r = self._one(cmd, tree, timeout, change["id"])
                results.append(r)
                if not r.passed:
                    break  # the claim is already false; the rest would only cost time
            return Outcome("passed" if all(r.passed for r in results) else "failed", results)
        finally:
            self._git("worktree", "remove", "--force", str(tree))
            shutil.rmtree(base, ignore_errors=True)
            self._git("worktree", "prune")

    def _one(self, cmd: str, cwd: Path, timeout: float, change_id: str) -> CheckResult:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["COMITY_VERIFY"] = change_id
        start = self.clock.monotonic()
        with tempfile.TemporaryFile() as out:
            proc = subprocess.Popen(["/bin/sh", "-c", cmd], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            timed_out = False
            try:
                code: int | None = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                code = None
            seconds = self.clock.monotonic() - start
            out.seek(0)
            h = hashlib.sha256()
            tail = b""
            while chunk := out.read(1 << 16):
                h.update(chunk)
                tail = (tail + chunk)[-_TAIL:]
        return CheckResult(cmd, code, h.hexdigest(), seconds, tail.decode(errors="replace"), timed_out)
