"""Every CLI command has help text and is documented in the README."""

from __future__ import annotations

from pathlib import Path

import click

from comity.cli import cli

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _commands(group: click.Group, prefix: str = "comity") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        path = f"{prefix} {name}"
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, path)
    return out


def test_every_command_has_help_and_is_in_the_readme() -> None:
    commands = _commands(cli)
    assert len(commands) >= 9
    for path, cmd in commands:
        assert (cmd.help or "").strip(), f"{path} has no help text"
        assert f"`{path}" in README, f"{path} is not documented in README.md"


def test_exit_codes_are_in_help_and_readme() -> None:
    help_text = cli.get_help(click.Context(cli))
    for code in range(6):
        assert f"  {code}  " in help_text
        assert f"| {code} |" in README
