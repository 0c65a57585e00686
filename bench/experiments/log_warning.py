"""Experiment: serve and its worker at --log-level warning, whatever the command line says.

At info the relay writes two lines a message (accepted, sent) and one per refused
recipient, each formatted, redacted and written to stderr. This shows what those
lines cost; the real change is not to drop them but to make them cheaper (one
pre-formatted line, no redaction pass on lines that cannot hold a secret).
"""

from relay import logsetup

_configure = logsetup.configure


def configure(level="info", fmt="text", stream=None):  # type: ignore[no-untyped-def]
    _configure("warning", fmt, stream)


logsetup.configure = configure
