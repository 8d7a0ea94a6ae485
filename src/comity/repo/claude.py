"""Claude Code's hooks: comity acts *before* a file is written, not at ``git commit``.

``comity hooks install --claude`` merges three hooks into the repository's
``.claude/settings.json`` (keeping everything there; installing again changes nothing;
``comity hooks uninstall --claude`` takes only comity's out).  Each runs
``python -m comity.repo.claude``, which reads the event Claude Code sends on stdin
(``session_id``, ``cwd``, ``hook_event_name``, and for tools ``tool_name`` and
``tool_input`` with absolute paths) and answers JSON on stdout:

- ``PreToolUse`` on Write, Edit, MultiEdit, NotebookEdit and Bash: ``permissionDecision:
  deny`` with a reason the model reads (the holder, and the tool to call instead) for a
  new migration file whose number another file has in any worktree or branch, or whose
  number nobody took through comity (``migration_new``), and for a write inside another
  agent's live exclusive reservation.  Bash commands are read for the files they create:
  redirections (``>``, ``>>``), ``tee``, ``touch``, ``cp``, ``mv``, ``install``,
  ``git mv``; a file written some other way (a script, an editor) is left to the git hook.
- ``SessionStart``: who the agent is, where the store is, and what others are doing now
  (claims, reservations, the latest migration numbers), as ``additionalContext``.
- ``UserPromptSubmit``: comity's news since the previous prompt of this Claude session
  (a comity session named after it), as ``additionalContext``; nothing when there is none.

The agent is ``COMITY_AGENT``, else the worktree's name (as ``comity mcp`` names it).  A
hook that cannot reach the store lets the tool run and says why on stderr: comity never
blocks work because it is down.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from ..errors import ComityError, Invalid
from ..store import Session
from ._git import Repo
from .migrations import CONVENTIONAL, _guess, record_of, registered_dirs, survey

__all__ = ["install", "uninstall", "pre_tool_use", "session_start", "prompt_news", "written_paths", "main", "MARK", "WRITERS"]

MARK = "comity.repo.claude"  # how comity's hook commands are recognised in settings.json
WRITERS = ("Write", "Edit", "MultiEdit", "NotebookEdit", "Bash")
EVENTS = {
    "PreToolUse": "|".join(WRITERS),
    "SessionStart": None,
    "UserPromptSubmit": None,
}
_NEWS_MAX = 30


# ------------------------------------------------------------------ settings.json


def _command(python: str | None) -> str:
    return f"{shlex.quote(python or sys.executable)} -m {MARK}"


def _ours(hook: Any) -> bool:
    return isinstance(hook, dict) and MARK in str(hook.get("command", ""))


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except json.JSONDecodeError as e:
        raise Invalid(str(path), f"is not valid JSON ({e}); fix it, then install again") from None
    if not isinstance(data, dict) or not isinstance(data.get("hooks", {}), dict):
        raise Invalid(str(path), "must be a JSON object whose hooks is an object")
    return data


def _without_ours(groups: Any) -> list[Any]:
    out = []
    for g in groups if isinstance(groups, list) else []:
        if isinstance(g, dict) and isinstance(g.get("hooks"), list):
            kept = [h for h in g["hooks"] if not _ours(h)]
            if not kept and any(_ours(h) for h in g["hooks"]):
                continue  # a group that was only comity's
            g = {**g, "hooks": kept}
        out.append(g)
    return out


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.comity-tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def install(repo: Repo, *, python: str | None = None) -> dict[str, Any]:
    """Merge comity's hooks into ``.claude/settings.json`` at the top of this worktree."""
    path = repo.top / ".claude" / "settings.json"
    data = _load(path)
    before = json.dumps(data, sort_keys=True)
    hooks = data.setdefault("hooks", {})
    entry = {"type": "command", "command": _command(python), "timeout": 30}
    for event, matcher in EVENTS.items():
        groups = _without_ours(hooks.get(event))
        group: dict[str, Any] = {"hooks": [entry]}
        if matcher is not None:
            group = {"matcher": matcher, **group}
        groups.append(group)
        hooks[event] = groups
    changed = json.dumps(data, sort_keys=True) != before
    if changed:
        _write(path, data)
    return {"path": str(path), "changed": changed, "events": list(EVENTS), "command": entry["command"]}


def uninstall(repo: Repo) -> dict[str, Any]:
    """Take comity's hooks out of ``.claude/settings.json``, keeping everything else."""
    path = repo.top / ".claude" / "settings.json"
    data = _load(path)
    hooks = data.get("hooks")
    removed = []
    if isinstance(hooks, dict):
        for event in list(hooks):
            kept = _without_ours(hooks[event])
            if kept != hooks[event]:
                removed.append(event)
            if kept:
                hooks[event] = kept
            else:
                del hooks[event]
        if not hooks:
            del data["hooks"]
    if removed:
        _write(path, data)
    return {"path": str(path), "removed": removed}


# ------------------------------------------------------------------ what a tool writes


def _bash_targets(command: str, cwd: Path) -> list[Path]:
    """Files a shell command creates or overwrites, as far as reading it can tell."""
    try:
        lex = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:
        return []
    out: list[str] = []
    words: list[str] = []
    i = 0

    def flush() -> None:
        if not words:
            return
        prog, args = os.path.basename(words[0]), [w for w in words[1:] if not w.startswith("-")]
        if prog == "git" and words[1:2] == ["mv"]:
            prog, args = "mv", [w for w in words[2:] if not w.startswith("-")]
        if prog in ("tee", "touch"):
            out.extend(args)
        elif prog in ("cp", "mv", "install", "ln") and len(args) >= 2:
            dst = args[-1]
            if len(args) > 2 or (cwd / dst).is_dir():
                out.extend(os.path.join(dst, os.path.basename(a)) for a in args[:-1])
            else:
                out.append(dst)
        words.clear()

    while i < len(tokens):
        t = tokens[i]
        if t in (">", ">>", ">|", "&>", ">&") or (t.endswith(">") and t.rstrip(">").isdigit() is False and set(t) <= {">", "&", "|"}):
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("&"):
                out.append(tokens[i + 1])
            i += 2
            continue
        if t and set(t) <= set(";&|<>"):
            flush()
            i += 1
            continue
        if t.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in (">", ">>"):
            i += 1  # 2> file: the fd number is not a word
            continue
        words.append(t)
        i += 1
    flush()
    return [(cwd / os.path.expanduser(p)).resolve() if not os.path.isabs(p) else Path(p) for p in out if p and p != "/dev/null"]


def written_paths(tool: str, tool_input: dict[str, Any], cwd: Path) -> list[Path]:
    """The absolute paths a tool call writes (Claude Code gives absolute ``file_path``s)."""
    if tool in ("Write", "Edit", "MultiEdit"):
        p = tool_input.get("file_path")
        return [Path(p)] if isinstance(p, str) and p else []
    if tool == "NotebookEdit":
        p = tool_input.get("notebook_path")
        return [Path(p)] if isinstance(p, str) and p else []
    if tool == "Bash":
        c = tool_input.get("command")
        return _bash_targets(c, cwd) if isinstance(c, str) else []
    return []


# ------------------------------------------------------------------ the checks


def _repo_of(path: Path, fallback: Repo) -> Repo:
    """The worktree holding ``path`` (its nearest existing directory)."""
    d = path.parent
    while not d.exists() and d != d.parent:
        d = d.parent
    try:
        return Repo.find(d)
    except (Invalid, ComityError):
        return fallback


def _migration_dir(session: Session, repo: Repo, rel: str) -> Any:
    d = os.path.dirname(rel)
    reg = registered_dirs(session)
    if d in reg:
        return d, reg[d]
    if os.path.basename(d) in CONVENTIONAL:
        return d, _guess(repo.top / d, d)
    return None


def _slug_of(name: str) -> str:
    stem = name.split(".", 1)[0]
    parts = stem.split("_", 1)
    return parts[1] if len(parts) == 2 and parts[0].isdigit() else stem


def check_migration(session: Session, repo: Repo, path: Path, agent: str | None) -> str | None:
    """Why writing ``path`` (a new file of a migrations directory) must not happen, if it must not."""
    if path.exists():
        return None  # an existing file: editing it takes no number
    try:
        rel = repo.rel(path)
    except Invalid:
        return None
    found = _migration_dir(session, repo, rel)
    if found is None:
        return None
    d, tpl = found
    name = os.path.basename(rel)
    n = tpl.number_of(name)
    if n is None:
        return None
    call = f'migration_new(slug="{_slug_of(name)}", dir="{d}")'
    instead = (f"Call the comity tool {call} instead: it takes the next free number for every worktree and branch, "
               "creates the file, and answers its path; write your content into that path.")  # fmt: skip
    others = [m for m in survey(repo, d, tpl, numbers={n}).values() if m.name != name]
    if others:
        m = others[0]
        rec = record_of(session, d, n)
        holder = ""
        if rec is not None and os.path.basename(str(rec.get("file", ""))) == m.name:
            task = f" for task {rec['task']}" if rec.get("task") else ""
            holder = f"; comity gave that number to {rec.get('agent')}{task} (worktree {rec.get('worktree')})"
        return f"comity: {rel} would reuse number {n}: {m.path} already has it in {'; '.join(m.places)}{holder}. {instead}"
    rec = record_of(session, d, n)
    if rec is None or os.path.basename(str(rec.get("file", ""))) != name:
        taken = ""
        if rec is not None:
            taken = f" (comity gave {n} to {rec.get('agent')} for {rec.get('file')})"
        return f"comity: {rel} takes number {n}, which was not taken through comity{taken}, so another agent may be taking it too. {instead}"
    if rec.get("agent") != agent and rec.get("worktree") not in (None, str(repo.top)):
        return (f"comity: number {n} ({rel}) belongs to {rec.get('agent')}, for worktree {rec.get('worktree')}. {instead}")
    return None


def check_reserved(session: Session, repo: Repo, path: Path, agent: str | None) -> str | None:
    from ..coord.reservations import overlaps, reservations

    try:
        rel = repo.rel(path)
    except Invalid:
        return None
    now = session.now()
    for r in reservations(session):
        if not r.shared and r.holder != agent and overlaps(rel, r.pattern):
            return (f"comity: {rel} is inside {r.holder}'s exclusive reservation {r.pattern!r} ({r.expires - now:.0f}s left). "
                    f"Leave it to {r.holder}: work elsewhere, see reservations(), or ask {r.holder} to call "
                    f"release_paths(paths=[\"{r.pattern}\"]); reserve what you edit with reserve_paths.")  # fmt: skip
    return None


def pre_tool_use(session: Session, repo: Repo, event: dict[str, Any], agent: str | None) -> str | None:
    """The reason to refuse this tool call, or None to let it run."""
    tool = str(event.get("tool_name", ""))
    tool_input = event.get("tool_input") if isinstance(event.get("tool_input"), dict) else {}
    cwd = Path(str(event.get("cwd") or repo.top))
    reasons = []
    for path in written_paths(tool, tool_input or {}, cwd):
        where = _repo_of(path, repo)
        for check in (check_migration, check_reserved):
            why = check(session, where, path, agent)
            if why is not None:
                reasons.append(why)
                break
    return "\n".join(reasons) or None


def session_start(session: Session, repo: Repo, agent: str | None, about: str) -> str:
    """What a new Claude session should know before it starts: who, where, and others' work now."""
    from ..coord.reservations import reservations
    from ..work.tasks import Board

    lines = [f"comity: you are agent {agent!r} ({about}); comity's store is {session.store.location}."]
    lines.append("Use comity's MCP tools: migration_new for any numbered file (never pick a number yourself), "
                 "task_ready/task_claim before working on a task, reserve_paths before editing shared files, "
                 "read before write.")  # fmt: skip
    now = session.now()
    claims = [t for t in Board(session).tasks() if t.get("lease") and t["lease"].get("holder")]
    for t in claims[:10]:
        lease = t["lease"]
        lines.append(f"- task {t['id']} ({t['title']}) is claimed by {lease['holder']}")
    for r in reservations(session)[:10]:
        if r.holder != agent:
            lines.append(f"- {r.holder} holds {'a shared' if r.shared else 'an exclusive'} reservation of {r.pattern} ({r.expires - now:.0f}s left)")
    recent = [e for e in session.log(None, after=max(0, session.head() - 500), limit=500) if e.get("op") == "migration"]
    for e in recent[-5:]:
        v = e.get("value")
        v = v if isinstance(v, dict) else {}
        lines.append(f"- {e.get('agent')} took migration {v.get('number')}: {v.get('file')}")
    # A resumed session first hears what happened while it was away; from now on each
    # prompt brings what changed since the previous one (the session is kept by name).
    news = prompt_news(session, agent)
    return "\n".join(lines) + ("\n" + news if news else "")


def prompt_news(session: Session, agent: str | None) -> str:
    """What others changed since this Claude session's previous prompt, one line each."""
    from ..render import news_line

    n = session.news(limit=_NEWS_MAX)
    lines = [news_line(e) for e in n.events if e.get("agent") != agent]
    if not lines:
        return ""
    more = "\n(more: call news())" if n.truncated else ""
    return "comity news since your last prompt:\n" + "\n".join(f"- {x}" for x in lines) + more


# ------------------------------------------------------------------ the command


def _out(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"hookSpecificOutput": {"hookEventName": event, **fields}}, ensure_ascii=False) + "\n")


def main() -> int:
    try:
        event = json.loads(sys.stdin.read() or "{}")
    except json.JSONDecodeError as e:
        sys.stderr.write(f"comity: the hook's input is not JSON ({e}); letting it through\n")
        return 0
    if not isinstance(event, dict):
        return 0
    name = str(event.get("hook_event_name", ""))
    if name not in EVENTS:
        return 0
    from ..store import open as open_store
    from .worktree import agent_from_worktree

    try:
        repo = Repo.find(event.get("cwd") or None)
        if os.environ.get("COMITY_AGENT"):
            agent, about = os.environ["COMITY_AGENT"], "from COMITY_AGENT"
        else:
            agent, about = agent_from_worktree(repo), f"named after the worktree {repo.top}; set COMITY_AGENT to choose another"
        location = os.environ.get("COMITY_STORE") or str(repo.store_path)
        if location.lower().startswith(("http://", "https://")):
            sys.stderr.write("comity: the Claude Code hooks read the store directly, and COMITY_STORE is a server; skipping\n")
            return 0
        if not Path(location).exists() and "://" not in location:
            return 0  # no store yet: nothing to check against
        store = open_store(location)
        try:
            sid = str(event.get("session_id") or "")
            session_name = ("claude-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in sid))[:128] if sid else None
            session = store.session(agent, name=session_name)
            if name == "PreToolUse":
                why = pre_tool_use(session, repo, event, agent)
                if why is not None:
                    _out("PreToolUse", permissionDecision="deny", permissionDecisionReason=why)
            elif name == "SessionStart":
                _out("SessionStart", additionalContext=session_start(session, repo, agent, about))
            else:
                text = prompt_news(session, agent)
                if text:
                    _out("UserPromptSubmit", additionalContext=text)
            session.close()
        finally:
            store.close()
    except ComityError as e:
        sys.stderr.write(f"comity {name} hook: {e.message} (letting the tool run)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
