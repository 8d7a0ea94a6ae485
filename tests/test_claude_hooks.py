"""Claude Code's hooks, installed by `comity hooks install --claude` and run exactly as Claude
Code runs them: the command from .claude/settings.json through a shell, in the project
directory, the event's JSON on stdin (the fields Claude Code sends), JSON on stdout."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from hosts_support import MIGRATIONS, scene
from test_repo_support import env, ok, run


def hooks_of(worktree: Path) -> dict[str, Any]:
    return dict(json.loads((worktree / ".claude" / "settings.json").read_text())["hooks"])


def fire(worktree: Path, event: str, payload: dict[str, Any], **extra: str) -> dict[str, Any] | None:
    """Run every comity hook command configured for ``event``, as Claude Code would."""
    groups = hooks_of(worktree)[event]
    outputs = []
    for g in groups:
        if "matcher" in g and payload.get("tool_name") and payload["tool_name"] not in g["matcher"].split("|"):
            continue
        for h in g["hooks"]:
            body = {"session_id": "0b9f3c1e-5d7a-4c2e-9f61-2a8e4b7c9d10", "transcript_path": str(worktree / ".t.jsonl"),
                    "cwd": str(worktree), "permission_mode": "default", "hook_event_name": event, **payload}  # fmt: skip
            p = subprocess.run(["sh", "-c", h["command"]], input=json.dumps(body), cwd=worktree, capture_output=True, text=True,
                               env=env(CLAUDE_PROJECT_DIR=str(worktree), **extra), timeout=60, check=False)  # fmt: skip
            assert p.returncode == 0, (p.stdout, p.stderr)
            if p.stdout.strip():
                outputs.append(json.loads(p.stdout))
    assert len(outputs) <= 1
    return outputs[0] if outputs else None


def write(path: Path, content: str = "CREATE TABLE t (id int);\n") -> dict[str, Any]:
    return {"tool_name": "Write", "tool_input": {"file_path": str(path), "content": content}, "tool_use_id": "toolu_01ABC"}


def test_install_merges_keeps_what_is_there_is_idempotent_and_uninstalls(tmp_path: Path) -> None:
    s = scene(tmp_path)
    settings = s.alice / ".claude" / "settings.json"
    settings.parent.mkdir()
    mine = {"permissions": {"allow": ["Bash(npm test)"]},
            "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "echo mine"}]}]}}  # fmt: skip
    settings.write_text(json.dumps(mine))
    first = json.loads(ok(run(s.alice, "hooks", "install", "--claude", "--json")).stdout)
    assert first["changed"] is True
    text = settings.read_text()
    again = json.loads(ok(run(s.alice, "hooks", "install", "--claude", "--json")).stdout)
    assert again["changed"] is False and settings.read_text() == text
    data = json.loads(text)
    assert data["permissions"] == mine["permissions"]
    pre = data["hooks"]["PreToolUse"]
    assert pre[0] == mine["hooks"]["PreToolUse"][0]
    assert set(pre[1]["matcher"].split("|")) == {"Write", "Edit", "MultiEdit", "NotebookEdit", "Bash"}
    assert {"SessionStart", "UserPromptSubmit"} <= set(data["hooks"])
    ok(run(s.alice, "hooks", "uninstall", "--claude"))
    assert json.loads(settings.read_text()) == mine


def test_pre_tool_use_refuses_a_colliding_or_unallocated_migration_and_lets_a_free_path_through(tmp_path: Path) -> None:
    s = scene(tmp_path)
    ok(run(s.alice, "hooks", "install", "--claude"))
    ok(run(s.bob, "hooks", "install", "--claude"))
    taken = json.loads(ok(run(s.alice, "migrations", "new", "add_users", "--json", agent="alice")).stdout)
    assert taken["number"] == 267

    # bob writes his own 0267 by hand: refused, naming alice's file and the tool to call.
    out = fire(s.bob, "PreToolUse", write(s.bob / MIGRATIONS / "0267_add_orders.sql"))
    assert out is not None
    h = out["hookSpecificOutput"]
    assert h["hookEventName"] == "PreToolUse" and h["permissionDecision"] == "deny"
    reason = h["permissionDecisionReason"]
    assert "0267_add_users.sql" in reason and "alice" in reason and 'migration_new(slug="add_orders", dir="db/migrations")' in reason

    # A number nobody took (0268, free on disk): refused too, it is not bob's.
    out = fire(s.bob, "PreToolUse", write(s.bob / MIGRATIONS / "0268_add_orders.sql"))
    assert out is not None and "not taken through comity" in out["hookSpecificOutput"]["permissionDecisionReason"]
    # The same through Bash: a heredoc into a new migration file.
    bash = {"tool_name": "Bash", "tool_input": {"command": f"cat > {MIGRATIONS}/0268_add_orders.sql <<'EOF'\nCREATE TABLE o (id int);\nEOF", "description": "write"}}
    out = fire(s.bob, "PreToolUse", bash)
    assert out is not None and out["hookSpecificOutput"]["permissionDecision"] == "deny"

    # The file migration_new gave alice, any other file, an edit of an existing migration: all pass.
    assert fire(s.alice, "PreToolUse", write(Path(taken["path"]))) is None
    assert fire(s.bob, "PreToolUse", write(s.bob / "src" / "app.py", "print(1)\n")) is None
    edit = {"tool_name": "Edit", "tool_input": {"file_path": str(s.bob / MIGRATIONS / "0266_add_audit.sql"), "old_string": "--", "new_string": "-- x"}}
    assert fire(s.bob, "PreToolUse", edit) is None
    assert fire(s.bob, "PreToolUse", {"tool_name": "Bash", "tool_input": {"command": "ls db/migrations > /tmp/listing.txt"}}) is None
    # bob takes his number through comity: that file passes.
    mine = json.loads(ok(run(s.bob, "migrations", "new", "add_orders", "--json", agent="bob")).stdout)
    assert mine["number"] == 268 and fire(s.bob, "PreToolUse", write(Path(mine["path"]))) is None


def test_pre_tool_use_refuses_a_write_inside_another_agents_reservation(tmp_path: Path) -> None:
    s = scene(tmp_path)
    ok(run(s.bob, "hooks", "install", "--claude"))
    ok(run(s.alice, "reserve", "src/billing/**", agent="alice"))
    out = fire(s.bob, "PreToolUse", {"tool_name": "MultiEdit", "tool_input": {"file_path": str(s.bob / "src/billing/tax.py"), "edits": []}})
    assert out is not None
    reason = out["hookSpecificOutput"]["permissionDecisionReason"]
    assert "alice" in reason and "src/billing/**" in reason and "release_paths" in reason
    assert fire(s.bob, "PreToolUse", write(s.bob / "src/shop/cart.py")) is None
    # alice's own reservation does not stop alice (COMITY_AGENT names her).
    assert fire(s.bob, "PreToolUse", write(s.bob / "src/billing/tax.py"), COMITY_AGENT="alice") is None


def test_session_start_and_each_prompt_bring_comity_news_into_the_context(tmp_path: Path) -> None:
    s = scene(tmp_path)
    ok(run(s.bob, "hooks", "install", "--claude"))
    ok(run(s.alice, "task", "add", "Add the users table", agent="alice"))
    ok(run(s.alice, "task", "claim", "T-1", agent="alice"))
    start = fire(s.bob, "SessionStart", {"source": "startup"})
    assert start is not None
    ctx = start["hookSpecificOutput"]["additionalContext"]
    assert start["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    assert "you are agent 'bob'" in ctx and "T-1" in ctx and "alice" in ctx and "migration_new" in ctx
    assert fire(s.bob, "UserPromptSubmit", {"prompt": "add the orders table"}) is None  # nothing new yet
    ok(run(s.alice, "migrations", "new", "add_users", "--json", agent="alice"))
    ok(run(s.alice, "put", "notes/schema", '"users: id"', agent="alice"))
    prompt = fire(s.bob, "UserPromptSubmit", {"prompt": "go on"})
    assert prompt is not None
    text = prompt["hookSpecificOutput"]["additionalContext"]
    assert prompt["hookSpecificOutput"]["hookEventName"] == "UserPromptSubmit"
    assert "alice" in text and "notes/schema" in text
    assert fire(s.bob, "UserPromptSubmit", {"prompt": "and again"}) is None  # shown once


def test_the_commit_msg_hook_says_what_happened_to_a_task_the_agent_never_held(tmp_path: Path) -> None:
    from test_repo_support import git

    s = scene(tmp_path)
    ok(run(s.alice, "task", "add", "Add the users table", agent="alice"))
    token = ok(run(s.alice, "task", "claim", "T-1", "--json", agent="alice")).stdout
    ok(run(s.alice, "task", "done", "T-1", "--token", str(json.loads(token)["token"]), agent="alice"))
    (s.bob / "orders.sql").write_text("CREATE TABLE orders (id int);\n")
    git(s.bob, "add", "orders.sql")
    p = git(s.bob, "commit", "-q", "-m", "orders\n\nComity-Task: T-1", check=False, COMITY_AGENT="bob")
    assert p.returncode != 0
    assert "task T-1" in p.stderr and "completed by alice" in p.stderr and "bob never claimed it" in p.stderr
    assert "no longer holds" not in p.stderr and "claim it again" not in p.stderr
