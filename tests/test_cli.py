"""The command line as a newcomer meets it, run as real processes.

However it is started (`ses-relay`, `python -m cli`), the same commands answer; the
common options work before the subcommand as well as after it; a read command
pointed at the wrong data dir says so instead of answering from a new, empty store.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import SES_RELAY, child_env


def commands_in_help(text: str) -> list[str]:
    """The names listed under "Commands:" in click's help output."""
    lines = text.splitlines()
    start = lines.index("Commands:") + 1
    return [line.split()[0] for line in lines[start:] if line.startswith("  ") and line.split()]


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None):
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(env), timeout=60, cwd=cwd)


def test_python_dash_m_cli_lists_every_command_the_entry_point_lists(tmp_path: Path) -> None:
    entry = run([SES_RELAY, "--help"])
    assert entry.returncode == 0, entry.stderr
    expected = commands_in_help(entry.stdout)
    assert {"serve", "worker", "suppression", "submission", "user", "class", "stats"} <= set(expected)

    # From another directory, as serve starts its worker: the installed module, not a file here.
    module = run([sys.executable, "-m", "cli", "--help"], cwd=tmp_path)
    assert module.returncode == 0, module.stderr
    assert commands_in_help(module.stdout) == expected

    for group in ("user", "suppression", "class"):
        via_entry = run([SES_RELAY, group, "--help"])
        via_module = run([sys.executable, "-m", "cli", group, "--help"], cwd=tmp_path)
        assert via_module.returncode == 0, via_module.stderr
        assert commands_in_help(via_module.stdout) == commands_in_help(via_entry.stdout), group
    assert {"add", "list", "remove"} <= set(commands_in_help(run([SES_RELAY, "user", "--help"]).stdout))
