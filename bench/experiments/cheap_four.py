"""Experiment: the four patches of this directory together (not uvloop).

lean_getaddr, quiet_aiosmtpd_log, from_once and lean_ses: what they give at once.
"""

from bench.experiments import from_once, lean_getaddr, lean_ses, quiet_aiosmtpd_log  # noqa: F401
