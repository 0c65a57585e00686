"""serve and worker run on uvloop's event loop when it is installed, on asyncio's otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from cli.processes import run_loop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def ran_on() -> str:
    seen: list[str] = []

    async def main() -> None:
        seen.append(await loop_module())

    run_loop(main())
    return seen[0]


@pytest.mark.skipif(sys.platform != "linux", reason="uvloop is a dependency on Linux only")
def test_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert ran_on().startswith("uvloop")


def test_asyncio_when_uvloop_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert ran_on().startswith("asyncio")
