"""`ses-relay feedback verify` and `ses-relay feedback http` as real processes.

The commands are pasted into cli.py from notes/cli_sns.py; until then this module
skips itself. Certificates are local and sit in the cert dir, so the processes
never fetch anything (`--no-fetch` where a certificate is meant to be missing).
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SES_RELAY, child_env, free_port, run_cli, spawn_until
from tests.support.relaydb import count_rows
from tests.support.sns_signing import (
    CERT_NAME,
    OTHER_TOPIC,
    TOPIC,
    Signer,
    make_signer,
    notification,
    ses_bounce,
)


def _has_commands() -> bool:
    try:
        result = subprocess.run(
            [SES_RELAY, "feedback", "verify", "--help"], capture_output=True, env=child_env(), timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


pytestmark = pytest.mark.skipif(
    not _has_commands(), reason="`ses-relay feedback verify` is not in cli.py yet"
)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture
def certs(tmp_path: Path, signer: Signer) -> Path:
    return signer.install(tmp_path / "certs").parent


def save(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=2))
    return path


# --------------------------------------------------------------------------- feedback verify


def test_verify_prints_one_line_per_file_and_fails_if_any_fails(
    tmp_path: Path, certs: Path, signer: Signer
) -> None:
    good1 = save(tmp_path / "v1.json", signer.sign(notification(), "1"))
    good2 = save(tmp_path / "v2.json", signer.sign(notification(), "2"))
    tampered_doc = signer.sign(notification(), "2")
    tampered_doc["Message"] = tampered_doc["Message"].replace("NoEmail", "General")
    tampered = save(tmp_path / "tampered.json", tampered_doc)
    off_host = save(
        tmp_path / "evil.json",
        signer.sign(notification(), cert_url=f"https://sns.eu-west-1.amazonaws.com.evil.com/{CERT_NAME}"),
    )
    missing = tmp_path / "missing.json"
    other_topic = save(tmp_path / "topic.json", signer.sign(notification(topic=OTHER_TOPIC)))

    files = [good1, good2, tampered, off_host, missing, other_topic]
    result = run_cli("feedback", "verify", *map(str, files), "--cert-dir", str(certs), "--no-fetch",
                     data_dir=tmp_path / "data")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        f"{good1}: verified",
        f"{good2}: verified",
        f"{tampered}: signature does not match (SignatureVersion 2, SHA256withRSA, certificate {CERT_NAME})",
        f"{off_host}: SigningCertURL host 'sns.eu-west-1.amazonaws.com.evil.com' is not "
        "sns.<region>.amazonaws.com",
        f"{missing}: no such file",
        f"{other_topic}: verified",  # the allow list is the endpoint's business
    ]


def test_verify_exits_0_when_all_verify_and_reads_the_configured_cert_dir(
    tmp_path: Path, certs: Path, signer: Signer
) -> None:
    config = tmp_path / "ses-relay.toml"
    config.write_text(f'[feedback]\nsns_cert_dir = "{certs}"\n')
    saved = save(
        tmp_path / "lambda.json",
        {"Records": [{"EventSource": "aws:sns", "Sns": signer.sign(notification())}]},
    )
    result = run_cli(
        "feedback", "verify", str(saved), "--no-fetch", data_dir=tmp_path / "data", config=config
    )
    assert (result.returncode, result.stdout) == (0, f"{saved}: verified\n"), result.stderr


def test_verify_without_the_certificate_and_without_fetching_says_so(tmp_path: Path, signer: Signer) -> None:
    saved = save(tmp_path / "m.json", signer.sign(notification()))
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("feedback", "verify", str(saved), "--cert-dir", str(empty), "--no-fetch",
                     data_dir=tmp_path / "data")  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == f"{saved}: certificate {CERT_NAME} is not in {empty} and fetching is off\n"


# --------------------------------------------------------------------------- feedback http


@dataclass
class Endpoint:
    proc: subprocess.Popen[str]
    port: int
    data_dir: Path
    output: list[str] = field(default_factory=list)

    def post(self, doc: Any) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/", body=json.dumps(doc).encode(), headers={"Content-Type": "text/plain"})
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return "".join(self.output)


@pytest.fixture
def start_http(tmp_path: Path) -> Iterator[Any]:
    started: list[Endpoint] = []

    def start(config_text: str) -> Endpoint:
        config = tmp_path / "ses-relay.toml"
        config.write_text(config_text)
        port = free_port()
        cmd = [SES_RELAY, "feedback", "http", "--listen", f"127.0.0.1:{port}"]
        cmd += ["--data-dir", str(tmp_path / "data"), "--config", str(config)]
        proc, output = spawn_until(cmd, "listening on", what="feedback http")
        endpoint = Endpoint(proc, port, tmp_path / "data", output)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def test_http_applies_signed_events_refuses_forgeries_and_stops_on_sigterm(
    start_http: Any, certs: Path, signer: Signer
) -> None:
    ep = start_http(f'[feedback]\nsns_topic_arns = ["{TOPIC}"]\nsns_cert_dir = "{certs}"\n')
    assert f"http://127.0.0.1:{ep.port}/ for topics: {TOPIC}" in ep.log()

    assert ep.post(signer.sign(notification(), "1")) == (200, "applied 1 event(s), 0 duplicate(s)\n")
    assert ep.post(signer.sign(notification(ses_bounce("second@example.com")), "2"))[0] == 200
    before = (count_rows(ep.data_dir, "events"), count_rows(ep.data_dir, "suppressions"))
    assert before == (2, 2)

    tampered = signer.sign(notification(ses_bounce("third@example.com")))
    tampered["Message"] = tampered["Message"].replace("third", "fourth")
    assert ep.post(tampered)[0] == 403
    assert ep.post(signer.sign(notification(topic=OTHER_TOPIC)))[0] == 403
    off_host = signer.sign(
        notification(), cert_url=f"https://sns.eu-west-1.amazonaws.com.evil.com/{CERT_NAME}"
    )
    assert ep.post(off_host)[0] == 403
    assert (count_rows(ep.data_dir, "events"), count_rows(ep.data_dir, "suppressions")) == before

    assert ep.stop() == 0
    assert "refused SNS POST" in ep.log()


def test_http_with_no_allowed_topic_starts_but_refuses_everything(
    start_http: Any, certs: Path, signer: Signer
) -> None:
    ep = start_http(f'[feedback]\nsns_cert_dir = "{certs}"\n')
    assert "for topics: NONE (every message is refused)" in ep.log()
    assert ep.post(signer.sign(notification()))[0] == 403
    assert count_rows(ep.data_dir, "events") == 0
    ep.stop()
    assert "[feedback] sns_topic_arns is empty" in ep.log()


def test_http_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    result = run_cli("feedback", "http", "--listen", "nowhere", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "--listen: 'nowhere' is not HOST:PORT" in result.stderr


def test_http_tls_without_configured_files_is_a_configuration_error(tmp_path: Path) -> None:
    result = run_cli("feedback", "http", "--tls", data_dir=tmp_path / "data")
    assert result.returncode == 2
    assert "--tls needs [tls] cert_file and key_file" in result.stderr
