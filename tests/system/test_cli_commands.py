"""Every command and subcommand answers --help, whether started as `ses-relay` or `python -m cli`.

The command line is a package of modules, each adding its commands to one group
when imported; these tests see it from outside, as real processes, so a module that
fails to import or a command that is no longer registered shows up here.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import SES_RELAY, child_env

# The whole command line: each group and its subcommands, every other command with none.
COMMANDS: dict[str, list[str]] = {
    "class": ["pause", "resume", "status"],
    "dkim": ["keygen"],
    "events": ["list"],
    "feedback": ["consume", "dead-letters", "http", "replay", "review", "verify"],
    "lambda": ["package"],
    "notices": ["list"],
    "report": [],
    "serve": [],
    "setup-aws": [],
    "state": ["check", "migrate"],
    "stats": [],
    "submission": ["list", "show"],
    "suppression": ["add", "clear", "export", "import", "list", "show", "sync-ses"],
    "user": ["add", "list", "remove"],
    "worker": [],
}


def commands_in_help(text: str) -> list[str]:
    """The names listed under "Commands:" in click's help output."""
    lines = text.splitlines()
    return [line.split()[0] for line in lines[lines.index("Commands:") + 1 :] if line.startswith("  ")]


def run(*cmd: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, env=child_env(), timeout=60, cwd=cwd)


def help_of(*words: str) -> str:
    """`ses-relay WORDS --help`, which must succeed, print only to stdout, and name the command."""
    result = run(SES_RELAY, *words, "--help")
    assert result.returncode == 0, (words, result.stderr)
    assert result.stderr == "", words
    assert result.stdout.startswith(f"Usage: {' '.join(['ses-relay', *words])} [OPTIONS]"), result.stdout
    return result.stdout


def helps_of(commands: list[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """help_of each, a few processes at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(commands, pool.map(lambda words: help_of(*words), commands), strict=True))


def test_every_command_and_subcommand_answers_help() -> None:
    top = helps_of([(command,) for command in commands_in_help(help_of())])
    found = {words[0]: commands_in_help(text) if "Commands:" in text else [] for words, text in top.items()}
    assert found == COMMANDS
    leaves = helps_of([(command, sub) for command, subs in found.items() for sub in subs])
    leaves.update((words, text) for words, text in top.items() if not found[words[0]])
    for words, text in leaves.items():
        assert "Commands:" not in text, words
        # The options the group takes before any command, every command takes after itself too.
        for option in ("--config", "--data-dir", "--log-level", "--log-format"):
            assert option in text, (words, option)

    worker = leaves[("worker",)]
    assert "--wake-fd" not in worker and "--parent-pid" not in worker  # serve's plumbing stays hidden
    assert "--json" in leaves[("suppression", "list")] and "--json" in leaves[("events", "list")]


def test_python_dash_m_cli_lists_the_same_subcommands_in_every_group(tmp_path: Path) -> None:
    for group, subcommands in COMMANDS.items():
        if not subcommands:
            continue
        # From another directory, as serve starts its worker: the installed package, not a file here.
        module = run(sys.executable, "-m", "cli", group, "--help", cwd=tmp_path)
        assert module.returncode == 0, (group, module.stderr)
        assert commands_in_help(module.stdout) == subcommands, group
        assert module.stdout.startswith(f"Usage: ses-relay {group} [OPTIONS]"), module.stdout


def test_an_unknown_command_or_subcommand_is_a_usage_error() -> None:
    for words in (["nosuch"], ["suppression", "nosuch"], ["class", "pause"]):
        result = run(SES_RELAY, *words)
        assert result.returncode == 2, (words, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "Usage: ses-relay" in result.stderr and "Error:" in result.stderr, words
    assert "No such command 'nosuch'" in run(SES_RELAY, "suppression", "nosuch").stderr
    assert "Missing argument 'CLASS'" in run(SES_RELAY, "class", "pause").stderr


def test_importing_the_command_line_loads_no_metrics_client() -> None:
    """serve chooses where the multiprocess counters go before prometheus_client is imported."""
    probe = "import sys, cli; print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))"
    result = run(sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
