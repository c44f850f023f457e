"""Logging set-up: journald through systemd-python when it is there, stderr otherwise.

Log lines never carry PHI: modules log identifiers that are hashed or synthetic, never patient
names, IDs or note text.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
IDENTIFIER = "appliance"


def _journal_handler() -> logging.Handler | None:
    if not JOURNAL_SOCKET.exists():
        return None
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=IDENTIFIER)
    return handler


def setup_logging(level: str = "INFO", *, stderr: bool = False) -> str:
    """Route the root logger to journald (or stderr) at ``level``; return where it goes.

    ``stderr`` forces stderr even where journald exists (interactive CLI use).
    """
    handler = None if stderr else _journal_handler()
    target = "journald"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        target = "stderr"
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return target
