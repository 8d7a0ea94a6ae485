"""The repository face's commands: ``comity migrations``, ``hooks``, ``decide``,
``decisions`` and ``doctor`` (``comity bench hooks`` is in :mod:`comity.bench`).  Registered by ``comity.cli``."""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["register"]


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to ``default``:
    ``comity decide "TEXT" --paths P`` is ``comity decide record "TEXT" --paths P``."""

    default = "record"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default, *args]
        return super().parse_args(ctx, args)


def register(cli: click.Group) -> None:  # noqa: C901 - one place that lists every command
    from ..clikit import Ctx, command, err, news_of, out
    from ..clikit import print_json as _print_json
    from ..errors import EXIT_REFUSED, Invalid
    from ..store import Session
    from ._git import Repo

    def session(obj: Ctx) -> Session:
        if obj.remote:
            raise Invalid("store", "repository commands use this repository's embedded store; leave --store out (or give a path)")
        s: Session = obj.store().session(obj.agent_name, name=obj.session_name)
        return s

    def problems_out(problems: list[dict[str, Any]], as_json: bool, body: dict[str, Any] | None = None) -> None:
        if as_json:
            _print_json(body if body is not None else {"ok": not problems, "problems": problems})
        elif not problems:
            out.print("ok: nothing found", markup=False)
        for p in problems if not as_json else []:
            out.print(f"{p['kind']}: {p['message']}", markup=False)
            out.print(f"  fix: {p['fix']}", markup=False)
        if problems:
            sys.exit(EXIT_REFUSED)

    # ------------------------------------------------------------ migrations
    @cli.group("migrations")
    def migrations_group() -> None:
        """Migration numbers shared by every worktree and branch: take one, check, renumber."""

    @command(migrations_group, "new")
    @click.argument("slug")
    @click.option("--dir", "directory", metavar="DIR", help="The migrations directory (relative to here; default: the only one known).")
    @click.option("--template", metavar="T", help="sql (default: {n:04d}_{slug}.sql), rails ({ts}_{slug}.rb), django ({n:04d}_{slug}.py), alembic ({rev}_{slug}.py), or a pattern.")
    @click.option("--task", envvar="COMITY_TASK", metavar="ID", help="The task this migration is for [env COMITY_TASK].")
    def migrations_new_cmd(obj: Ctx, slug: str, directory: str | None, template: str | None, task: str | None, *, as_json: bool) -> None:
        """Take the next migration number of DIR (above every worktree's and branch's) and create the file."""
        args: dict[str, Any] = {"slug": slug}
        if directory is not None:
            args["dir"] = Repo.find().rel(directory)
        if template is not None:
            args["template"] = template
        if task is not None:
            args["task"] = task
        rec = obj.call("migration_new", args)  # the number from the store, or the server; the file here
        news_of(rec)
        if as_json:
            _print_json({k: v for k, v in rec.items() if k not in ("news", "stale")})
        else:
            out.print(rec["file"], markup=False)
            err.print(f"migration {rec['number']} is {rec['agent']}'s (recorded in the store)", markup=False)

    @command(migrations_group, "check", reads=True)
    @click.option("--dir", "directory", metavar="DIR", help="Only this directory (default: every known migrations directory).")
    @click.option("--template", metavar="T", help="The layout of DIR, if comity does not know it yet.")
    def migrations_check_cmd(obj: Ctx, directory: str | None, template: str | None, *, as_json: bool) -> None:
        """Duplicate numbers (and several heads, for Django and Alembic) across worktrees and branches; exit 3 if any."""
        args: dict[str, Any] = {}
        if directory is not None:
            args["dir"] = Repo.find().rel(directory)
        if template is not None:
            args["template"] = template
        found = obj.call("migration_check", args)
        problems_out(list(found["problems"]), as_json)

    @command(migrations_group, "renumber")
    @click.option("--dir", "directory", required=True, metavar="DIR", help="The migrations directory.")
    @click.option("--onto", default="main", show_default=True, metavar="BRANCH", help="The branch yours will merge into.")
    @click.option("--template", metavar="T", help="The layout of DIR, if comity does not know it yet.")
    @click.option("--dry-run", is_flag=True, help="Say what would move; change nothing.")
    def migrations_renumber_cmd(obj: Ctx, directory: str, onto: str, template: str | None, dry_run: bool, *, as_json: bool) -> None:
        """Move this branch's new migrations past BRANCH's (git mv; Alembic: rewrite down_revision)."""
        from .migrations import renumber

        repo = Repo.find()
        r = renumber(session(obj), repo, repo.rel(directory), onto=onto, template=template, dry_run=dry_run)
        if as_json:
            _print_json(r)
            return
        if not r["moves"]:
            out.print(r.get("message", "nothing to move"), markup=False)
        for m in r["moves"]:
            if "to" in m:
                out.print(f"{m['from']} -> {m['to']}", markup=False)
            else:
                out.print(f"{m['file']}: down_revision {m['down_revision'][0]} -> {m['down_revision'][1]}", markup=False)

    # ----------------------------------------------------------------- hooks
    @cli.group("hooks")
    def hooks_group() -> None:
        """Git hooks that refuse commits which collide with other agents' work."""

    @command(hooks_group, "install")
    @click.option("--python", "python", metavar="PATH", help="The Python that runs the hook (default: this one).")
    @click.option("--claude", is_flag=True, help="Claude Code's hooks instead: merge comity into .claude/settings.json (PreToolUse, SessionStart, UserPromptSubmit).")
    def hooks_install_cmd(obj: Ctx, python: str | None, claude: bool, *, as_json: bool) -> None:
        """Install the pre-commit and commit-msg hooks (honours core.hooksPath; chains an existing hook); --claude: Claude Code's."""
        if claude:
            from .claude import install as install_claude

            c = install_claude(Repo.find(), python=python)
            if as_json:
                _print_json(c)
                return
            out.print(f"{'wrote' if c['changed'] else 'unchanged:'} {c['path']} (Claude Code hooks: {', '.join(c['events'])})", markup=False)
            err.print(f"each runs {c['command']}; commit .claude/settings.json so every worktree has them", markup=False)
            return
        from .hooks import install

        r = install(Repo.find(), python=python)
        if as_json:
            _print_json(r)
            return
        for h in r["hooks"]:
            chained = f" (runs {h['chained']} first)" if h["chained"] else ""
            out.print(f"installed {h['hook']}{chained}", markup=False)

    @command(hooks_group, "uninstall")
    @click.option("--claude", is_flag=True, help="Take comity's hooks out of .claude/settings.json instead, keeping the rest.")
    def hooks_uninstall_cmd(obj: Ctx, claude: bool, *, as_json: bool) -> None:
        """Remove comity's hooks and put back the hooks they chained; --claude: Claude Code's."""
        if claude:
            from .claude import uninstall as uninstall_claude

            c = uninstall_claude(Repo.find())
            if as_json:
                _print_json(c)
                return
            out.print(f"removed comity's {', '.join(c['removed'])} hooks from {c['path']}" if c["removed"] else "no comity hooks in .claude/settings.json", markup=False)
            return
        from .hooks import uninstall

        r = uninstall(Repo.find())
        if as_json:
            _print_json(r)
            return
        if not r["removed"]:
            out.print("no comity hooks here", markup=False)
        for h in r["removed"]:
            out.print(f"removed {h['hook']}" + (" (restored the previous hook)" if h["restored"] else ""), markup=False)

    # ------------------------------------------------------------- decisions
    @cli.group("decide", cls=_DefaultGroup)
    def decide_group() -> None:
        """Record a decision on paths (`comity decide "TEXT" --paths P ...`), or acknowledge one."""

    def _decision_line(d: dict[str, Any]) -> str:
        acks = f" (acknowledged by {', '.join(d['acks'])})" if d.get("acks") else ""
        commit = f" @{d['commit'][:10]}" if d.get("commit") else ""
        return f"{d['id']:<6} {d['agent']:<12} {', '.join(d['paths'])}{commit}: {d['text']}{acks}"

    @command(decide_group, "record")
    @click.argument("text")
    @click.argument("more_paths", nargs=-1, metavar="[PATH...]")
    @click.option("--paths", "-p", "paths", multiple=True, metavar="P", help="A path or glob (relative to the repository root) the decision is about; more may follow.")
    @click.option("--commit", metavar="SHA", help="The commit that carried it out (default HEAD): its added and removed lines are kept.")
    def decide_record_cmd(obj: Ctx, text: str, more_paths: tuple[str, ...], paths: tuple[str, ...], commit: str | None, *, as_json: bool) -> None:
        """Record TEXT as a decision on the paths; prints its id (the same as `comity decide TEXT`)."""
        from .intent import decide_on_commit

        every = [*paths, *more_paths]
        if not every:
            raise Invalid("paths", "give the paths the decision is about: --paths P ...")
        d, untouched = decide_on_commit(session(obj), Repo.find(), text, every, commit)
        if untouched:
            err.print(
                f"note: {d.commit[:10] if d.commit else 'no commit'} did not change {', '.join(untouched)}: "
                "the decision records intent there, but no lines to protect (pass --commit SHA)",
                markup=False,
            )
        if as_json:
            _print_json(d.to_json())
        else:
            out.print(d.id, markup=False)

    @command(decide_group, "ack")
    @click.argument("decision_id", metavar="ID")
    @click.option("--commit", metavar="SHA", help="Also accept this commit that undid it (clears it from `comity doctor`).")
    def decide_ack_cmd(obj: Ctx, decision_id: str, commit: str | None, *, as_json: bool) -> None:
        """Acknowledge decision ID: your commits that undo it are no longer refused."""
        from ..work.decisions import acknowledge

        tree = None
        if commit is not None:
            repo = Repo.find()
            tree = repo.git("rev-parse", "--verify", "-q", f"{commit}^{{tree}}", check=False).decode().strip()
            if not tree:
                raise Invalid("commit", f"{commit!r} is not a commit of this repository")
        d = acknowledge(session(obj), decision_id, tree=tree)
        if as_json:
            _print_json(d.to_json())
        else:
            out.print(f"acknowledged {d.id}: {d.text}", markup=False)

    @command(cli, "decisions", reads=True)
    @click.argument("path", required=False)
    def decisions_cmd(obj: Ctx, path: str | None, *, as_json: bool) -> None:
        """Decisions recorded (on PATH, if given), with who acknowledged each."""
        from ..work.decisions import decisions

        ds = [d.to_json() for d in decisions(session(obj), path)]
        if as_json:
            _print_json(ds)
            return
        if not ds:
            err.print("no decisions" + (f" on {path}" if path else ""), markup=False)
        for d in ds:
            out.print(_decision_line(d), markup=False)

    # ---------------------------------------------------------------- doctor
    @command(cli, "doctor", reads=True)
    @click.option("--silent", "silent_s", type=float, default=1800.0, show_default=True, help="Report reservations of agents silent for longer than this many seconds.")
    def doctor_cmd(obj: Ctx, silent_s: float, *, as_json: bool) -> None:
        """Find what slipped past the hooks; says how to fix each; exit 0 when clean, 3 when not."""
        from .doctor import doctor

        r = doctor(session(obj), Repo.find(), silent_s=silent_s)
        if not as_json:
            s = r["scanned"]
            err.print(f"scanned {len(s['worktrees'])} worktrees, {s['branches']} branches, migration dirs: {', '.join(s['migration_dirs']) or 'none'}", markup=False)
        problems_out(r["problems"], as_json, r)

    from .verify_commands import register as register_verification

    register_verification(cli)
