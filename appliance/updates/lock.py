"""``updates/agent.lock``: one update agent works at a time, and others can tell that one does.

The CLI, the USB service and the console each run their own agent; an flock on this file keeps
them apart (ADR 0004). Whoever only looks (the console's dashboard) asks :func:`update_running`,
so that the state of an update in progress is not taken for one a power cut or the TPM stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from appliance.fsutil import flocked

LOCK_NAME = "agent.lock"


@contextlib.contextmanager
def agent_lock(updates: Path, *, wait: bool, waiting: Callable[[], None]) -> Iterator[bool]:
    """Hold ``updates/agent.lock`` for the block.

    Yields False, without the lock, when ``wait`` is off and another process holds it; with
    ``wait`` on, calls ``waiting`` once before it waits for that process. Raises StorageError
    when the folder or the lock file cannot be made.
    """
    updates.mkdir(parents=True, exist_ok=True)
    path = updates / LOCK_NAME
    with flocked(path, wait=False) as fd:
        if fd is not None:
            yield True
            return
    if not wait:
        yield False
        return
    waiting()
    with flocked(path):
        yield True


def update_running(updates: Path) -> bool:
    """Whether an update agent (of any process, this one included) holds the lock now.

    Never waits and never creates the folder: a box that never updated runs no update.
    """
    if not updates.is_dir():
        return False
    with flocked(updates / LOCK_NAME, wait=False) as fd:
        return fd is None
