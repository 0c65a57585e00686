"""The deployment files: docker/compose.yaml, docker/Dockerfile, docker/ses-relay.toml, systemd units.

No Docker engine runs here, so the image is never built in tests; what can be
checked without one is: compose.yaml is valid YAML with the relay service on the
data volume, taking AWS settings from the environment; its `several` profile adds
PostgreSQL and two relays on the state there, each with a named volume of its own;
compose and systemd start exactly one consumer of [feedback] queue_urls per state
(serve's worker); `docker compose config` agrees, when Docker Compose is installed;
the Dockerfile's
final stage runs as a numeric non-root user with a HEALTHCHECK on /healthz, and
everything it copies exists; the mounted configuration is one the relay accepts
(including the open-relay rule for a 0.0.0.0 listener) and allows exactly the
compose network; and systemd accepts the unit files (`systemd-analyze verify`,
when it is installed).
"""

from __future__ import annotations

import configparser
import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay import config as configuration
from tests.conftest import ROOT, free_port

DOCKER = ROOT / "docker"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def enabled(doc: dict[str, Any], *profiles: str) -> dict[str, Any]:
    """The services Compose runs with `profiles` active: those with no profile, and those
    in one of them."""
    return {
        name: service
        for name, service in doc["services"].items()
        if not service.get("profiles") or set(service["profiles"]) & set(profiles)
    }


def interpolate(text: str) -> str:
    """Compose's `${VAR:-default}` with VAR unset: what a first `docker compose up` gets."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    return dict(e.partition("=")[::2] for e in service["environment"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    return {v.split(":")[0]: v.split(":", 1)[1] for v in service["volumes"]}


def host_ports(service: dict[str, Any]) -> list[str]:
    """The published host address and port: 127.0.0.1:2526 of "127.0.0.1:2526:2525"."""
    return [p.rsplit(":", 1)[0] for p in service.get("ports", [])]


RELAYS = ("relay", "relay-a", "relay-b")
SEVERAL = ("relay-a", "relay-b")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


# -- compose.yaml -------------------------------------------------------------------------


def consumers(commands: dict[str, list[str]]) -> list[str]:
    """The services among `commands` that read [feedback] queue_urls: `serve` (through the
    worker it starts), `worker`, and `feedback consume`."""
    return [
        name
        for name, command in commands.items()
        if command[:1] in (["serve"], ["worker"]) or command[:2] == ["feedback", "consume"]
    ]


def test_compose_runs_the_relay_on_the_data_volume() -> None:
    doc = compose()
    assert set(enabled(doc)) == {"relay"}  # `docker compose up`: one relay, its own state
    services = doc["services"]
    assert services["relay"]["command"][:1] == ["serve"]
    for name in RELAYS:
        service = services[name]
        assert service["command"] == services["relay"]["command"], name
        volumes = mounts(service)
        assert volumes["./ses-relay.toml"] == "/etc/ses-relay/ses-relay.toml:ro", name  # read-only config
        env = environment(service)
        assert env["SES_RELAY_DATA_DIR"] == "/data"
        assert env["SES_RELAY_CONFIG"] == "/etc/ses-relay/ses-relay.toml"
        # AWS settings pass through from the environment: names only, no values in the file.
        for key in ("AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert env.get(key) == "", (name, key)
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        assert service["image"] == "ses-relay:latest"
    assert mounts(services["relay"])["data"] == "/data"
    assert "SES_RELAY_STATE_URL" not in environment(services["relay"])
    assert "data" in doc["volumes"]
    # SMTP and metrics are published on the host's loopback only.
    assert all(p.startswith("127.0.0.1:") for p in services["relay"]["ports"])


def test_the_several_profile_runs_two_relays_on_one_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = compose()
    services = enabled(doc, "several")
    assert set(services) == {"relay", "postgres", *SEVERAL}

    postgres = services["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"  # the official image
    [(pg_volume, pg_path)] = mounts(postgres).items()
    assert pg_volume in doc["volumes"] and pg_path == "/var/lib/postgresql"  # named, where 18+ keeps it
    assert postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "ports" not in postgres  # reachable from the relays only
    [state_net] = postgres["networks"]
    assert doc["networks"][state_net].get("internal") is True
    pg_env = {k: interpolate(v) for k, v in environment(postgres).items()}

    data_volumes = set()
    for name in SEVERAL:
        relay = services[name]
        assert relay["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name
        # Its own named volume (durable: the spool and the outbox), not the container's disk.
        volume = next(v for v, path in mounts(relay).items() if path == "/data")
        assert volume in doc["volumes"] and volume != "data", name
        data_volumes.add(volume)
        assert set(relay["networks"]) == {"mail", state_net}, name
        assert all(p.startswith("127.0.0.1:") for p in relay["ports"]), name

        raw_url = environment(relay)["SES_RELAY_STATE_URL"]
        # The same password variable (and default) as the server's.
        password = environment(postgres)["POSTGRES_PASSWORD"]
        assert password.startswith("${SES_RELAY_PG_PASSWORD:-") and password in raw_url, name
        url = interpolate(raw_url)
        assert url == (
            f"postgresql://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@postgres:5432/"
            f"{pg_env['POSTGRES_DB']}"
        ), name
        # The mounted configuration with that URL over its [state] url: accepted, and shared.
        monkeypatch.setenv("SES_RELAY_STATE_URL", url)
        config = configuration.load(DOCKER / "ses-relay.toml")
        assert config.state.shared and config.state.url == url
    assert len(data_volumes) == len(SEVERAL)

    # Every relay of the file can run at once: no published port twice.
    published = [p for name in RELAYS for p in host_ports(services[name])]
    assert len(published) == len(set(published)), published


def test_the_readme_starts_the_profile_by_naming_its_relays() -> None:
    """Services without a profile always run: `up` with the profile alone would start the
    one-host `relay` too, a second state whose worker takes events off the same queues."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running several relays") :]
    section = section[: section.index("\n## ", 1)]
    command = re.search(r"docker compose --profile several up [^\n]*", section)
    assert command, "the section gives no `docker compose --profile several up` command"
    assert command.group(0).split()[-len(SEVERAL) :] == list(SEVERAL)
    assert command.group(0) in (DOCKER / "compose.yaml").read_text()


def _compose_cli() -> list[str] | None:
    """`docker compose` when the Compose plugin is installed (no engine needed for config)."""
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    return [docker, "compose"] if probe.returncode == 0 else None


def test_docker_compose_reads_both_models_as_this_file_does() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("Docker Compose is not installed")
    for profiles in ((), ("several",)):
        args = [a for p in profiles for a in ("--profile", p)]
        result = subprocess.run(
            [*cli, "--project-directory", str(DOCKER), *args, "config", "--services"],
            capture_output=True, text=True, timeout=60, cwd=DOCKER,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert set(result.stdout.split()) == set(enabled(compose(), *profiles)), profiles


def test_the_mounted_config_is_accepted_and_allows_the_compose_network() -> None:
    config = configuration.load(DOCKER / "ses-relay.toml")
    # What the image's command does: --listen replaces the address, keeps the rest, and
    # the open-relay rule is checked again for the new address.
    listener = config.listeners[0].model_copy(update={"listen": "0.0.0.0:2525"})
    configuration.check_listeners(config.model_copy(update={"listeners": (listener,)}))
    subnet = compose()["networks"]["mail"]["ipam"]["config"][0]["subnet"]
    assert subnet in listener.allow_networks
    assert ipaddress.ip_network(subnet).is_private
    # The HEALTHCHECK polls the metrics listener's port.
    assert config.metrics.listen.endswith(":9108")
    healthcheck = dict(instructions(DOCKER / "Dockerfile"))["HEALTHCHECK"]
    assert "http://127.0.0.1:9108/healthz" in healthcheck


# -- Dockerfile ---------------------------------------------------------------------------


def test_the_image_runs_as_a_numeric_non_root_user_with_a_healthcheck() -> None:
    steps = instructions(DOCKER / "Dockerfile")
    final = final_stage(steps)
    assert final[0] == ("FROM", "python:3.11-slim")
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "the final stage has no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    # Nothing after USER switches back or needs root.
    after = final[[k for k, _ in final].index("USER") :]
    assert not [k for k, _ in after if k == "RUN"]
    created = [args for keyword, args in final if keyword == "RUN" and "useradd" in args]
    assert created and f"--uid {uid}" in created[0]
    assert ("VOLUME", '["/data"]') in final
    env = " ".join(args for keyword, args in final if keyword == "ENV")
    assert "SES_RELAY_DATA_DIR=/data" in env
    [healthcheck] = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "CMD" in healthcheck
    assert ("ENTRYPOINT", '["ses-relay"]') in final


def test_the_healthcheck_command_is_valid_python() -> None:
    healthcheck = dict(instructions(DOCKER / "Dockerfile"))["HEALTHCHECK"]
    match = re.search(r'"python", "-c", "(.*)"\]', healthcheck)
    assert match
    compile(match.group(1), "<healthcheck>", "exec")


def test_the_healthcheck_passes_against_a_running_relay(relay_factory: Any) -> None:
    """The image's exact HEALTHCHECK command, pointed at a real relay's metrics listener."""
    port = free_port()
    relay_factory(f'[metrics]\nlisten = "127.0.0.1:{port}"\n', sandbox=True)
    healthcheck = dict(instructions(DOCKER / "Dockerfile"))["HEALTHCHECK"]
    match = re.search(r'"python", "-c", "(.*)"\]', healthcheck)
    assert match
    code = match.group(1).replace("127.0.0.1:9108", f"127.0.0.1:{port}")
    ok = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    # And it fails when nothing answers, as Docker needs to see.
    down = code.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free_port()}")
    assert subprocess.run([sys.executable, "-c", down], capture_output=True, timeout=30).returncode != 0


def test_everything_the_dockerfile_copies_exists() -> None:
    for keyword, args in instructions(DOCKER / "Dockerfile"):
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source


# -- systemd ------------------------------------------------------------------------------

UNITS = {"ses-relay.service": ["serve"]}


def test_compose_and_systemd_run_exactly_one_consumer_of_the_queues() -> None:
    """serve's worker consumes [feedback] queue_urls; a second consumer on the same state
    beside it would race the first one's deletes. With the state in PostgreSQL every
    host's worker may consume (each event is applied once, whichever takes it)."""
    doc = compose()
    services = enabled(doc)
    assert consumers({name: s.get("command") or [] for name, s in services.items()}) == ["relay"]
    several = {name: doc["services"][name] for name in SEVERAL}
    assert consumers({name: s.get("command") or [] for name, s in several.items()}) == list(SEVERAL)
    assert all("SES_RELAY_STATE_URL" in environment(s) for s in several.values())
    units = {}
    for path in sorted((DOCKER / "systemd").glob("*.service")):
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(path)
        units[path.name] = parser["Service"]["ExecStart"].split()[1:]
    assert set(units) == set(UNITS)
    assert consumers(units) == ["ses-relay.service"]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_units(unit: str, tmp_path: Path) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DOCKER / "systemd" / unit)
    service = parser["Service"]
    assert service["User"] not in ("", "root")
    exec_start = service["ExecStart"].split()
    assert exec_start[0].endswith("/ses-relay") and exec_start[1:] == UNITS[unit]
    assert service["StateDirectory"] == "ses-relay"
    assert parser["Install"]["WantedBy"] == "multi-user.target"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify needs the ExecStart binary to exist: point it at this checkout's.
    copy = tmp_path / unit
    binary = str(Path(sys.executable).with_name("ses-relay"))
    copy.write_text((DOCKER / "systemd" / unit).read_text().replace("/opt/ses-relay/bin/ses-relay", binary))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if unit in line]
    assert result.returncode == 0 and complaints == [], result.stdout + result.stderr
