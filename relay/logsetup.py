"""Logging for every ses-relay process: what a person reads, or what a log shipper parses.

At info a message costs two lines, as with Postfix: `accepted ...` when the intake
commits it and one SES outcome (`sent to ...`, `SES refused ...`, ...) from the
sender; refusals, lockouts and faults add a line each. aiosmtpd logs every command
line, every envelope address, "Available AUTH mechanisms" on each connection and
"Connection lost" on every ordinary QUIT, all at info. Below debug its logger is set to
WARNING, so those records are never built (a logger's filters run only after the
record is made: LogRecord, findCaller and the repr formatting were a tenth of the
intake's CPU); at debug `DemoteChatter` turns them into debug records. Its warnings
(unrecognised commands, aborted AUTH) stay warnings either way.

`text` is one human line a record; `json` is one JSON object a line (time, level,
logger, message, and the exception's traceback when there is one) for log
shippers. Either way every handler carries the secret-redaction filter
(relay/logredact.py). In AWS Lambda (`configure_lambda`) the lines are JSON on
standard output, each with the invocation's request id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Literal

from relay.logredact import install as install_redaction

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHATTY_LOGGERS = ("mail.log",)  # aiosmtpd's per-command protocol log


class DemoteChatter(logging.Filter):
    """Info records of a per-command protocol log become debug records.

    A logger's own filters run after its level check, so the record is dropped here
    unless the logger would have taken a debug record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message[, exception]."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        request_id = getattr(record, "aws_request_id", None)
        if request_id:
            entry["aws_request_id"] = request_id
        return json.dumps(entry, ensure_ascii=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str = "info", fmt: LogFormat = "text", stream: IO[str] | None = None) -> None:
    """Log to standard error at `level` in `fmt`; aiosmtpd's protocol log only at debug; redact secrets.

    As logging.basicConfig, the root handler is only added when the root logger has
    none yet (an embedding program, or a test runner, keeps its own).
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if not logging.getLogger().handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(formatter(fmt))
        logging.basicConfig(level=level.upper(), handlers=[handler])
        logging.captureWarnings(True)  # Python warnings as log records, in the same format
    debug = logging.getLevelName(level.upper()) == logging.DEBUG
    for name in CHATTY_LOGGERS:
        chatty = logging.getLogger(name)
        chatty.setLevel(logging.NOTSET if debug else logging.WARNING)
        if not any(isinstance(f, DemoteChatter) for f in chatty.filters):
            chatty.addFilter(DemoteChatter())
    install_redaction()  # no password, AUTH exchange or AWS secret in any log line


class LambdaRequest(logging.Filter):
    """Stamps each record with the request id of the Lambda invocation under way (`current`)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.current
        return True


LAMBDA_REQUEST = LambdaRequest()


def configure_lambda(level: str = "info", stream: IO[str] | None = None) -> None:
    """In AWS Lambda: each record one JSON line on standard output, where Lambda collects it.

    Lambda's Python runtime puts a handler of its own on the root logger before it
    loads the function (text lines with the level, time and request id); it is
    replaced, so that every line, the libraries' included, is JSON with the request
    id. Outside Lambda (AWS_LAMBDA_FUNCTION_NAME unset: a test runner, a script) the
    root's handlers are kept and one is added only when there is none, as `configure`
    does. Secrets are redacted either way.
    """
    root = logging.getLogger()
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        for handler in list(root.handlers):
            root.removeHandler(handler)
    if not root.handlers:
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(level.upper())
        logging.captureWarnings(True)
    for handler in root.handlers:
        if LAMBDA_REQUEST not in handler.filters:
            handler.addFilter(LAMBDA_REQUEST)
    install_redaction()
