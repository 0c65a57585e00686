"""Experiment: aiosmtpd's per-command info records not made at all unless at debug.

relay/logsetup.py demotes aiosmtpd's "mail.log" info records to debug with a filter,
but a logger's filters run after the record is made: every command still builds a
LogRecord (findCaller, the message's %-formatting of the repr) to drop it. Setting
the logger's own level to WARNING (unless the relay runs at debug) drops them before
any of that. The real change: one line in logsetup.configure.
"""

import logging

from relay import logsetup

_configure = logsetup.configure


def configure(level="info", fmt="text", stream=None):  # type: ignore[no-untyped-def]
    _configure(level, fmt, stream)
    if level.lower() != "debug":
        for name in logsetup.CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


logsetup.configure = configure
