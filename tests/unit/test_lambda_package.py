"""What `ses-relay lambda package` asks pip for: which platforms, which versions."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from relay.ops import lambda_package
from relay.ops.lambda_package import PackageError, pip_command, platforms, requirements


def test_python311_takes_wheels_up_to_amazon_linux_2s_glibc() -> None:
    tags = platforms("x86_64", "3.11")
    assert tags[0] == "manylinux2014_x86_64"
    assert tags[1:] == [f"manylinux_2_{m}_x86_64" for m in range(17, 27)]  # glibc 2.26: no 2_28 wheels


def test_python312_and_313_take_wheels_up_to_amazon_linux_2023s_glibc_on_arm() -> None:
    for python in ("3.12", "3.13"):
        tags = platforms("arm64", python)
        assert tags[0] == "manylinux2014_aarch64"
        assert tags[-1] == "manylinux_2_34_aarch64" and "manylinux_2_28_aarch64" in tags
        assert all(t.endswith("_aarch64") for t in tags)


def test_dependencies_are_pinned_to_the_versions_installed_here() -> None:
    wanted = requirements()
    version = importlib.metadata.version
    assert wanted == [
        f"psycopg[binary,pool]=={version('psycopg')}",
        f"psycopg-binary=={version('psycopg-binary')}",
        f"psycopg-pool=={version('psycopg-pool')}",
        f"pydantic=={version('pydantic')}",
        f"orjson=={version('orjson')}",
        "tzdata",
    ]
    assert not [w for w in wanted if w.split("[")[0].split("=")[0] in
                ("boto3", "aiosmtpd", "dkimpy", "openpyxl", "prometheus-client", "click")]  # fmt: skip


def test_a_dependency_that_is_not_installed_is_an_error() -> None:
    def version(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    with pytest.raises(PackageError, match="psycopg is not installed"):
        requirements(version)


def test_pip_installs_wheels_only_for_the_runtime() -> None:
    command = pip_command(Path("/tmp/pkg"), "arm64", "3.13", ["pydantic==2.0"])
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert command[command.index("--target") + 1] == "/tmp/pkg"
    assert "--only-binary=:all:" in command
    assert command[command.index("--implementation") + 1] == "cp"
    assert command[command.index("--python-version") + 1] == "3.13"
    given = [command[i + 1] for i, word in enumerate(command) if word == "--platform"]
    assert given == platforms("arm64", "3.13")
    assert command[-1] == "pydantic==2.0"


def test_the_runtimes_are_the_lambda_python_runtimes() -> None:
    assert {r.name for r in lambda_package.RUNTIMES.values()} == {"python3.11", "python3.12", "python3.13"}
    assert set(lambda_package.ARCHES) == {"x86_64", "arm64"}
