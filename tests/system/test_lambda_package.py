"""The Lambda deployment: the zip `ses-relay lambda package` builds, and deploy/template.yaml.

The zip is built once for the module by the CLI as a subprocess, from a folder of
wheels made from this virtualenv's own distributions (`--wheels`,
tests/support/wheelhouse.py): pip's index is off, so nothing reaches beyond this
machine. The zip is unpacked and its handler imported and run in a clean interpreter
(`python -I -S`: no site-packages, only the unpacked zip on sys.path) against the
session's PostgreSQL, as Lambda's runtime would run it on this machine's platform
(Linux x86_64). Wheels for another architecture or Python cannot be made here: that
pip is asked for exactly those is tests/unit/test_lambda_package.py's to check.
"""

from __future__ import annotations

import json
import marshal
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from feedback import lambda_handler
from relay.ops import lambda_package
from tests.conftest import FIXTURES, ROOT, SES_RELAY, child_env
from tests.support.lambda_events import sqs_event
from tests.support.wheelhouse import wheelhouse

TEMPLATE = ROOT / "deploy" / "template.yaml"
ELF_MACHINES = {"x86_64": 0x3E, "arm64": 0xB7}
NOT_SHIPPED = ("boto3", "botocore", "aiosmtpd", "dkim", "openpyxl", "prometheus_client", "click",
               "cryptography", "cli", "tests", "bench")  # fmt: skip
SHIPPED = ("relay", "feedback", "psycopg", "psycopg_binary", "psycopg_pool", "pydantic", "pydantic_core",
           "annotated_types", "typing_inspection", "orjson", "tzdata")  # fmt: skip
CONFIG_TEXT = '# policy for the function\n[policy]\nsoft_bounce_expiry = "2h"\n'

CLEAN_RUN = r"""
import json, logging, sys, sysconfig
package, event_file, result_file = sys.argv[1:4]
sys.path.insert(0, package)
# What Lambda's Python runtime does before it loads the function: a text handler on the root.
runtime = logging.StreamHandler(sys.stderr)
runtime.setFormatter(logging.Formatter("RUNTIME %(message)s"))
logging.getLogger().addHandler(runtime)

class Context:
    aws_request_id = "7c1f-request"
    def get_remaining_time_in_millis(self):
        return 30_000

before = set(sys.modules)
import feedback.lambda_handler as function
answer = function.handler(json.load(open(event_file)), Context())
allowed = (package, sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])
outside = sorted(name for name, module in list(sys.modules.items()) if name != "__main__"
                 and getattr(module, "__file__", None) and not module.__file__.startswith(allowed))
loaded = sorted({name.split(".")[0] for name in set(sys.modules) - before})
with open(result_file, "w") as out:
    json.dump({"answer": answer, "outside": outside, "loaded": loaded, "handler": function.__file__,
               "config": str(function.config_path())}, out)
function.shutdown()
"""


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheelhouse(tmp_path_factory.mktemp("wheels"))


def package(
    out: Path, *args: str, config: Path | None = None, wheels: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [SES_RELAY, "lambda", "package", "--out", str(out), *args, "--data-dir", str(out.parent / "data")]
    if wheels is not None:
        cmd += ["--wheels", str(wheels)]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=600)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheels: Path) -> tuple[Path, str]:
    """The zip for python3.11 on x86_64 with a config file (this machine runs what it holds)."""
    tmp = tmp_path_factory.mktemp("lambda-zip")
    config = tmp / "relay.toml"
    config.write_text(CONFIG_TEXT)
    result = package(tmp / "build" / "ses-relay-lambda.zip", "--python", "3.11", "--include-config",
                     config=config, wheels=wheels)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tmp / "build" / "ses-relay-lambda.zip", result.stdout


def elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF shared object"
    return int.from_bytes(data[18:20], "little")


def test_the_zip_holds_the_handler_and_only_its_dependencies(built: tuple[Path, str]) -> None:
    path, output = built
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        tops = {name.split("/")[0] for name in names}
        assert {t for t in tops if not t.endswith(".dist-info")} >= set(SHIPPED)
        assert not {t.split(".")[0] for t in tops} & set(NOT_SHIPPED)
        assert "feedback/lambda_handler.py" in names and "relay/store/postgres.py" in names
        assert zf.read("ses-relay.toml").decode() == CONFIG_TEXT
        # compiled for the runtime (this interpreter's version), so a cold start does not compile
        assert "pydantic/__pycache__/main.cpython-311.pyc" in names
        pyc = zf.read("feedback/__pycache__/lambda_handler.cpython-311.pyc")
        assert marshal.loads(pyc[16:]).co_filename == "/var/task/feedback/lambda_handler.py"
        # libpq and the drivers' extensions are manylinux builds for x86_64
        shared = [n for n in names if ".so" in n.rsplit("/", 1)[-1]]
        assert any(n.startswith("psycopg_binary/") for n in shared)
        assert {elf_machine(zf.read(n)[:20]) for n in shared} == {ELF_MACHINES["x86_64"]}
        # reproducible and readable by the function's user
        assert {i.date_time for i in infos} == {lambda_package.ZIP_TIME}
        assert {i.external_attr >> 16 for i in infos} == {0o100644}
        assert names == sorted(names)
    assert "for python3.11 on x86_64; handler feedback.lambda_handler.handler" in output
    assert "psycopg_binary " in output and "boto3" not in output


def test_the_handler_runs_from_the_unpacked_zip_in_a_clean_interpreter(
    built: tuple[Path, str], tmp_path: Path, pg_url: str
) -> None:
    path, _ = built
    unpacked = tmp_path / "task"
    with zipfile.ZipFile(path) as zf:
        zf.extractall(unpacked)
    text = (FIXTURES / "event_bounce_permanent.json").read_text()
    (tmp_path / "event.json").write_text(json.dumps(sqs_event([text])))
    (tmp_path / "run.py").write_text(CLEAN_RUN)
    password = "zip-Secret-42"
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SES_RELAY_STATE_URL": url,
           "AWS_LAMBDA_FUNCTION_NAME": "ses-relay-feedback", "LANG": "C.UTF-8"}  # fmt: skip

    run = subprocess.run(
        [sys.executable, "-I", "-S", str(tmp_path / "run.py"), str(unpacked), str(tmp_path / "event.json"),
         str(tmp_path / "result.json")],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )  # fmt: skip

    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["answer"] == {"batchItemFailures": []}
    assert result["outside"] == []  # every module came from the zip or the standard library
    assert Path(result["handler"]).is_relative_to(unpacked)
    assert result["config"] == str(unpacked / "ses-relay.toml")  # the packaged config, found unasked
    assert not set(result["loaded"]) & set(NOT_SHIPPED)
    # The state got the event (the packaged [policy]: a permanent bounce is suppressed in every class).
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT kind FROM events").fetchall()
        suppressed = conn.execute("SELECT class FROM suppressions").fetchall()
    assert rows == [("bounce",)] and suppressed == [("*",)]
    # Logs: JSON lines on stdout with the request id, the runtime's text handler gone, no password.
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert any(entry["message"].startswith("committed 1 of 1 record(s)") and
               entry.get("aws_request_id") == "7c1f-request" for entry in lines)  # fmt: skip
    assert any("cold start" in entry["message"] and "********" in entry["message"] for entry in lines)
    assert "RUNTIME" not in run.stderr
    assert password not in run.stdout + run.stderr


def test_the_handler_loads_nothing_the_zip_leaves_out(tmp_path: Path, pg_url: str) -> None:
    """The same run from the checkout, with every library of the relay installed: the handler
    (and what its call loads lazily) takes only what the zip ships. Needs no package index."""
    event = sqs_event([(FIXTURES / "event_delivery.json").read_text()])
    (tmp_path / "event.json").write_text(json.dumps(event))
    (tmp_path / "run.py").write_text(CLEAN_RUN)
    run = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "run.py"), str(ROOT), str(tmp_path / "event.json"),
         str(tmp_path / "result.json")],
        capture_output=True, text=True, env={**child_env(), "SES_RELAY_STATE_URL": pg_url}, timeout=120,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["answer"] == {"batchItemFailures": []}
    native = ("_cython", "cython_runtime", "_sysconfigdata")  # made by extension modules as they load
    third_party = {n for n in result["loaded"] if not (n in sys.stdlib_module_names or n.startswith(native))}
    assert third_party <= {*SHIPPED, "typing_extensions"}, third_party - {*SHIPPED, "typing_extensions"}


def test_the_same_inputs_give_the_same_zip(tmp_path: Path, wheels: Path) -> None:
    out = tmp_path / "f.zip"
    assert package(out, "--python", "3.11", wheels=wheels).returncode == 0
    first = out.read_bytes()
    assert package(out, "--python", "3.11", wheels=wheels).returncode == 0
    assert out.read_bytes() == first


def test_wheels_that_do_not_fit_the_runtime_are_an_error_that_says_so(tmp_path: Path, wheels: Path) -> None:
    out = tmp_path / "arm.zip"
    result = package(out, "--arch", "arm64", "--python", "3.13", wheels=wheels)
    assert result.returncode == 1
    assert "pip could not install the dependencies for python3.13 on arm64" in result.stderr
    assert f"{wheels} lacks it" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.partial"))

    result = package(out, wheels=tmp_path / "no-such-folder")
    assert result.returncode == 1 and "no folder of wheels at" in result.stderr


def test_a_config_with_a_password_is_not_packaged(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[state]\nurl = "postgresql://relay:hunter2-pw@db.internal/ses_relay"\n')
    out = tmp_path / "f.zip"
    result = package(out, "--include-config", config=config)
    assert result.returncode == 1
    assert "password in [state] url" in result.stderr and "hunter2-pw" not in result.stderr
    assert not out.exists()

    result = package(out, "--include-config")  # and no config file to include
    assert result.returncode == 2 and "--include-config needs a config file" in result.stderr


# -- deploy/template.yaml -----------------------------------------------------------------------


class CloudFormationLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short forms (!Ref, !Sub, !If, ...) read as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CloudFormationLoader)  # a SafeLoader


def test_the_template_creates_the_function_for_the_handler() -> None:
    doc = template()
    resources = doc["Resources"]
    function = resources["FeedbackFunction"]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert props["Handler"] == lambda_package.HANDLER
    module, _, name = props["Handler"].rpartition(".")
    assert module == lambda_handler.__name__ and callable(getattr(lambda_handler, name))
    # the runtimes and architectures the template offers are those the zip can be built for
    params = doc["Parameters"]
    assert props["Runtime"] == {"Ref": "PythonVersion"}
    assert set(params["PythonVersion"]["AllowedValues"]) == {r.name for r in lambda_package.RUNTIMES.values()}
    assert props["Architectures"] == [{"Ref": "Architecture"}]
    assert set(params["Architecture"]["AllowedValues"]) == set(lambda_package.ARCHES)
    assert (TEMPLATE.parent / props["CodeUri"]).resolve() == ROOT / "build" / "ses-relay-lambda.zip"
    variables = props["Environment"]["Variables"]
    assert variables["SES_RELAY_STATE_URL"] == {"Fn::Sub": "{{resolve:secretsmanager:${StateUrlSecret}}}"}
    assert set(variables) == {"SES_RELAY_STATE_URL", "SES_RELAY_CONFIG", "SES_RELAY_LOG_LEVEL"}
    assert props["VpcConfig"]["Fn::If"][0] == "InVpc"
    assert props["Role"] == {"Fn::GetAtt": ["FeedbackRole", "Arn"]}


def test_the_template_maps_each_queue_with_batch_item_failures() -> None:
    resources = template()["Resources"]
    mappings = {k: v for k, v in resources.items() if v["Type"] == "AWS::Lambda::EventSourceMapping"}
    assert set(mappings) == {"QueueMapping", "QueueMapping2", "QueueMapping3"}
    for name, mapping in mappings.items():
        props = mapping["Properties"]
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"], name
        assert props["FunctionName"] == {"Ref": "FeedbackFunction"}
        assert {"BatchSize", "MaximumBatchingWindowInSeconds", "ScalingConfig"} <= set(props)
    assert [mappings[f"QueueMapping{n}"].get("Condition") for n in ("", "2", "3")] == [
        None, "HasQueue2", "HasQueue3",
    ]  # fmt: skip


def test_the_role_may_read_the_queues_and_write_its_logs_only() -> None:
    role = template()["Resources"]["FeedbackRole"]
    assert role["Type"] == "AWS::IAM::Role"
    statements = {
        p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in role["Properties"]["Policies"]
    }
    [sqs] = statements["read-ses-event-queues"]
    assert set(sqs["Action"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                  "sqs:ChangeMessageVisibility"}  # fmt: skip
    assert sqs["Resource"][0] == {"Ref": "QueueArn"}
    [logs] = statements["write-own-logs"]
    assert logs["Resource"] == {"Fn::GetAtt": ["FeedbackLogGroup", "Arn"]}
    [vpc] = role["Properties"]["ManagedPolicyArns"]
    assert vpc["Fn::If"][0] == "InVpc" and "AWSLambdaENIManagementAccess" in vpc["Fn::If"][1]["Fn::Sub"]
    assert not any("*" == s.get("Resource") for st in statements.values() for s in st)
