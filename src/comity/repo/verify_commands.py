"""The verification commands: ``comity change``, ``verify``, ``refute``, ``attest``,
and ``policy``.  Registered by :mod:`comity.repo.commands`.

Each is a thin face over the agent verbs (:mod:`comity.work._change_verbs`).  ``attest``
signs where the private key is: here, with this user's key, whether the store is
embedded or a server (which only checks the envelope it is sent).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["register"]


class _AttestGroup(click.Group):
    """``comity attest ID`` signs (``attest sign ID``); ``comity attest verify FILE`` checks."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["sign", *args]
        return super().parse_args(ctx, args)


def register(cli: click.Group) -> None:  # noqa: C901 - one place that lists every command
    from ..clikit import Ctx, command, err, out
    from ..clikit import news_of as _news_of
    from ..clikit import print_json as _print_json
    from ..errors import EXIT_REFUSED, EXIT_UNAVAILABLE, Invalid
    from ..work.verbs import VERB
    from ._git import GitFailed, Repo

    REQUEST_ID_HELP = VERB["change_submit"].param("request_id").doc

    def verbs(obj: Ctx) -> Any:
        # The change verbs of the agent facade (in process, or a server's through RemoteAgent).
        return obj.agent()

    def change_line(c: dict[str, Any]) -> str:
        what = c.get("commit") or f"diff {c.get('diff')}"
        extra = ""
        if c["state"] == "refuted" and c.get("refuted"):
            extra = f"  refuted by {c['refuted'].get('by')}: {c['refuted'].get('reason')}"
        elif c["state"] == "tainted":
            extra = f"  built on refuted {', '.join(c.get('tainted_by', []))}"
        elif c.get("waiting_on"):
            extra = f"  waits on {', '.join(c['waiting_on'])}"
        return f"{c['id']:<6} {c['state']:<9} {c['task']:<6} {c['author']:<12} {str(what)[:12]}{extra}"

    def head_and_paths() -> tuple[str, list[str]]:
        repo = Repo.find()
        sha = repo.git("rev-parse", "HEAD").decode().strip()
        names = repo.git("diff-tree", "--root", "--no-commit-id", "--name-only", "-r", "-z", sha).decode(errors="replace")
        return sha, [n for n in names.split("\0") if n]

    # ------------------------------------------------------------------ change
    @cli.group("change")
    def change_group() -> None:
        """Changes: a unit of work with its provenance, accepted by policy, refuted with taint."""

    @command(change_group, "submit")
    @click.option("--task", required=True, metavar="ID", help="The task this change is for.")
    @click.option("--commit", metavar="SHA", help="The change's commit (default: HEAD of this repository).")
    @click.option("--diff", metavar="SHA256", help="Without a commit: the sha256 of the change's diff.")
    @click.option("--check", "checks", multiple=True, metavar="CMD", help="A shell command the change claims passes (repeatable).")
    @click.option("--on", "on", multiple=True, metavar="CHANGE", help="A change this one was built on (repeatable).")
    @click.option("--base", "commits", multiple=True, metavar="SHA", help="A commit this one was built on (repeatable).")
    @click.option("--read", "reads", multiple=True, metavar="KEY", help="A key the work was based on, at the context this session read it (repeatable).")
    @click.option("--path", "paths", multiple=True, metavar="PATH", help="A path the change touches (default: the commit's files, for path policies).")
    @click.option("--note", default="", help="What the change is.")
    @click.option("--request-id", metavar="ID", help=REQUEST_ID_HELP)
    def change_submit_cmd(obj: Ctx, task: str, commit: str | None, diff: str | None, checks: tuple[str, ...], on: tuple[str, ...],
                          commits: tuple[str, ...], reads: tuple[str, ...], paths: tuple[str, ...], note: str, request_id: str | None,
                          *, as_json: bool) -> None:
        """Submit a change for a task: its commit, the checks it claims pass, what it was built on."""
        path_list = list(paths)
        if commit is None and diff is None:
            try:
                commit, touched = head_and_paths()
            except (Invalid, GitFailed):
                raise Invalid("commit", "give --commit SHA (or --diff SHA256): this is not a git repository with a commit") from None
            path_list = path_list or touched
        c = verbs(obj).change_submit(task, commit=commit, diff=diff, checks=list(checks), on=list(on), commits=list(commits),
                                      reads=list(reads) if reads else None, paths=path_list, note=note,
                                      request_id=request_id)
        _news_of(c)
        if as_json:
            _print_json(c)
            return
        out.print(f"{c['id']} {c['state']}", markup=False)
        if c["state"] == "tainted":
            err.print(f"it is built on refuted work: {', '.join(c['tainted_by'])}", markup=False)

    @command(change_group, "show", reads=True)
    @click.argument("change_id", metavar="ID")
    def change_show_cmd(obj: Ctx, change_id: str, *, as_json: bool) -> None:
        """One change: state, provenance, verifications, attestations, what was built on it."""
        c = verbs(obj).change_show(change_id)
        _news_of(c)
        if as_json:
            _print_json(c)
            return
        out.print(change_line(c), markup=False)
        for k in c.get("checks", []):
            out.print(f"  claims: {k}", markup=False)
        if c["built_on"]["changes"] or c["built_on"]["commits"]:
            out.print(f"  built on: {', '.join(c['built_on']['changes'] + c['built_on']['commits'])}", markup=False)
        for k in c["built_on"]["keys"]:
            out.print(f"  read: {k['key']} (at pos {k['pos']})", markup=False)
        for v in c.get("verifications", []):
            out.print(f"  verified by {v['by']}: {v['outcome']} (output sha256 {v['output_sha256'][:12]})", markup=False)
        for a in c.get("attestations", []):
            out.print(f"  attested by {a['attester']} (key {a['keyid'][:12]})", markup=False)
        if c.get("dependents"):
            out.print(f"  built upon by: {', '.join(c['dependents'])}", markup=False)
        p = c.get("policy") or {}
        if p:
            out.print(f"  policy: {p['attestations']} attestation(s){', re-execution' if p['reexecute'] else ''}"
                      f" ({', '.join(p['scopes']) or 'built-in default'})", markup=False)

    @command(change_group, "list", reads=True)
    @click.option("--state", type=click.Choice(["submitted", "accepted", "refuted", "tainted"]), help="Only changes in this state.")
    @click.option("--task", metavar="ID", help="Only changes of this task.")
    def change_list_cmd(obj: Ctx, state: str | None, task: str | None, *, as_json: bool) -> None:
        """Every change with its state."""
        cs = verbs(obj).change_list(state=state, task=task)["changes"]
        if as_json:
            _print_json(cs)
            return
        for c in cs:
            out.print(change_line(c), markup=False)

    # ------------------------------------------------------------ verify, refute
    @command(cli, "verify")
    @click.argument("change_id", metavar="ID")
    @click.option("--timeout", type=float, default=None, help="Seconds each claimed check may run (default 600).")
    @click.option("--request-id", metavar="ID", help=REQUEST_ID_HELP)
    def verify_cmd(obj: Ctx, change_id: str, timeout: float | None, request_id: str | None, *, as_json: bool) -> None:
        """Re-run a change's claimed checks at its commit in a clean worktree; exit 0 passed, 3 failed (refuted), 5 could not check."""
        r = verbs(obj).verify(change_id, timeout=timeout, request_id=request_id)
        _news_of(r)
        if as_json:
            _print_json({"id": r["id"], "outcome": r["outcome"], "state": r["state"], "verification": r["verification"]})
        else:
            out.print(f"{r['id']} {r['outcome']}: {r['state']}", markup=False)
            for c in r["verification"].get("checks", []):
                code = "timed out" if c["timed_out"] else f"exit {c['exit_code']}"
                err.print(f"  {c['command']}: {code}, {c['seconds']:.1f}s, output sha256 {c['output_sha256'][:16]}", markup=False)
                if c["exit_code"] != 0 and c["tail"]:
                    err.print("  " + c["tail"].rstrip().replace("\n", "\n  "), markup=False)
            if r["verification"].get("error"):
                err.print(f"  could not check: {r['verification']['error']}", markup=False)
        if r["outcome"] == "failed":
            sys.exit(EXIT_REFUSED)
        if r["outcome"] == "error":
            sys.exit(EXIT_UNAVAILABLE)

    @command(cli, "refute")
    @click.argument("change_id", metavar="ID")
    @click.option("--reason", required=True, help="Why the change is wrong.")
    @click.option("--request-id", metavar="ID", help=REQUEST_ID_HELP)
    def refute_cmd(obj: Ctx, change_id: str, reason: str, request_id: str | None, *, as_json: bool) -> None:
        """Mark a change refuted: every change built on it is tainted and its task reopens."""
        c = verbs(obj).refute(change_id, reason, request_id=request_id)
        _news_of(c)
        if as_json:
            _print_json(c)
        else:
            out.print(change_line(c), markup=False)

    # ------------------------------------------------------------------ attest
    @cli.group("attest", cls=_AttestGroup)
    def attest_group() -> None:
        """Signed attestations: `comity attest ID` signs one as you; `comity attest verify FILE` checks them offline."""

    @command(attest_group, "sign")
    @click.argument("change_id", metavar="ID")
    @click.option("--envelope", "envelope_file", type=click.Path(dir_okay=False), help="Record this signed DSSE envelope instead of signing one.")
    @click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Also write the envelope to this file.")
    def attest_sign_cmd(obj: Ctx, change_id: str, envelope_file: str | None, out_file: str | None, *, as_json: bool) -> None:
        """Sign an approval of a change with your key (created in your key directory on first use) and record it."""
        import json

        from ..work.attestations import Keyring, sign_view

        agent = verbs(obj)
        envelope: dict[str, Any] | None = None
        if envelope_file is not None:
            try:
                envelope = json.loads(Path(envelope_file).read_text())
            except (OSError, ValueError) as e:
                raise Invalid("envelope", f"cannot read a JSON envelope from {envelope_file}: {e}") from None
        elif out_file is not None:
            # Sign here, where the key is, to keep the envelope; the store checks it.
            me = agent.whoami()["agent"]
            if not me:
                raise Invalid("agent", "attesting needs an agent name")
            envelope, public = sign_view(agent.change_show(change_id), agent.whoami()["store_id"], me, Keyring(), secrets.token_bytes(32))
            agent.key_register(public)
        c = agent.attest(change_id, envelope)
        if out_file is not None and envelope is not None:
            Path(out_file).write_text(json.dumps(envelope, indent=2) + "\n")
        _news_of(c)
        if as_json:
            _print_json(c)
        else:
            out.print(change_line(c), markup=False)

    @command(attest_group, "verify")
    @click.argument("file", type=click.Path(dir_okay=False))
    @click.option("--keys", "keys_dir", required=True, type=click.Path(file_okay=False), help="A directory of NAME.pub public keys (from `comity attest keys`).")
    @click.option("--commit", metavar="SHA", help="Also require each attestation's subject to be this commit.")
    def attest_verify_cmd(obj: Ctx, file: str, keys_dir: str, commit: str | None, *, as_json: bool) -> None:
        """Check attestations in FILE offline with only public keys; exit 0 when all hold, 3 when one is refused."""
        from ..work.attestations import load_public_keys, verify_file

        results = verify_file(file, load_public_keys(keys_dir), commit=commit)
        if as_json:
            _print_json({"ok": all(r["ok"] for r in results), "results": results})
        else:
            for r in results:
                if r["ok"]:
                    out.print(f"ok: {r['attester']} approves {r['change']} ({r['subject']})", markup=False)
                else:
                    out.print(f"refused: {r['reason']}", markup=False)
        if not all(r["ok"] for r in results):
            sys.exit(EXIT_REFUSED)

    # -------------------------------------------------------------------- keys
    @command(attest_group, "keys", reads=True)
    @click.argument("directory", type=click.Path(file_okay=False))
    def keys_export_cmd(obj: Ctx, directory: str, *, as_json: bool) -> None:
        """Write every registered public key to DIRECTORY as NAME.pub, for `comity attest verify`."""
        from ..work.attestations import public_pem
        from ..work.changes import Changes

        if obj.remote:
            raise Invalid("store", "exporting keys reads the store directly; give its path")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        written = []
        by_agent: dict[str, list[str]] = {}
        for k in Changes(obj.store().session()).public_keys():
            by_agent.setdefault(k.agent, []).append(public_pem(k.key))
        for agent, pems in sorted(by_agent.items()):
            (d / f"{agent}.pub").write_text(pems[-1])  # the latest key; older ones as NAME.N.pub
            for i, pem in enumerate(pems[:-1], 1):
                (d / f"{agent}.{i}.pub").write_text(pem)
            written.append(agent)
        if as_json:
            _print_json({"dir": str(d), "agents": written})
        else:
            out.print(f"wrote {len(written)} public key(s) to {d}", markup=False)

    # ------------------------------------------------------------------ policy
    @cli.group("policy")
    def policy_group() -> None:
        """Acceptance policies: how many attestations and whether re-execution accepts a change."""

    @command(policy_group, "set")
    @click.argument("scope")
    @click.option("--attestations", type=click.IntRange(0, 64), default=0, show_default=True, help="Signed approvals needed from distinct agents other than the author.")
    @click.option("--reexecute/--no-reexecute", default=True, show_default=True, help="Whether a passing re-execution of the claimed checks is needed.")
    def policy_set_cmd(obj: Ctx, scope: str, attestations: int, reexecute: bool, *, as_json: bool) -> None:
        """Set the policy of SCOPE: 'default', 'label:NAME' or 'path:GLOB'."""
        r = verbs(obj).policy_set(scope, attestations=attestations, reexecute=reexecute)
        _news_of(r)
        _print_json(r) if as_json else out.print(f"policy {scope}: {attestations} attestation(s){', re-execution' if reexecute else ''}", markup=False)

    @command(policy_group, "remove")
    @click.argument("scope")
    def policy_remove_cmd(obj: Ctx, scope: str, *, as_json: bool) -> None:
        """Remove the policy of SCOPE."""
        r = verbs(obj).policy_set(scope, remove=True)
        _news_of(r)
        _print_json(r) if as_json else out.print(f"removed policy {scope}", markup=False)

    @command(policy_group, "list", reads=True)
    def policy_list_cmd(obj: Ctx, *, as_json: bool) -> None:
        """Every stored policy (none: tasks complete as before; changes accept on re-execution)."""
        ps = verbs(obj).policy_list()["policies"]
        if as_json:
            _print_json(ps)
            return
        if not ps:
            err.print("no policies: a task is done when its holder says so", markup=False)
        for scope, p in sorted(ps.items()):
            out.print(f"{scope:<30} {p['attestations']} attestation(s){', re-execution' if p['reexecute'] else ''}", markup=False)
