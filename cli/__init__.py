"""ses-relay's command line: the one place that wires the parts together.

Verbs are nouns then verbs (`ses-relay suppression list`). Every command takes
--config and --data-dir (also from SES_RELAY_CONFIG / SES_RELAY_DATA_DIR); a bad
configuration exits with status 2 and names the key; every listing has --json.

`main` (cli/app.py) is the group; each module imported below adds its commands to
it, so importing the package gives the whole command line, whether it is started as
`ses-relay` or as `python -m cli` (how serve starts its worker).
"""

from cli import (  # noqa: F401  (imported for the commands they add to main)
    aws,
    aws_lambda,
    classes,
    dkim,
    feedback,
    notices,
    reports,
    serve,
    state,
    submission,
    suppression,
    users,
    worker,
)
from cli.app import main

__all__ = ["main"]
