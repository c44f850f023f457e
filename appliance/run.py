"""The one road to external commands (tpm2-tools, swtpm, systemctl, cryptsetup and friends).

Commands are checked by default, logged with their full command line, and a missing binary or a
non-zero exit becomes a CommandError that says which command failed and how.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import CommandError

log = logging.getLogger(__name__)

Arg = str | Path


def _argv(cmd: Sequence[Arg]) -> list[str]:
    return [os.fspath(c) for c in cmd]


def run(
    cmd: Sequence[Arg],
    *,
    check: bool = True,
    input_: bytes | None = None,
    timeout: float | None = 60,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``cmd`` to completion, capturing its output.

    Raises CommandError when the binary is missing, the command times out, or (with ``check``)
    it exits non-zero; the error carries the command line and the tail of its stderr.
    """
    argv = _argv(cmd)
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(
            argv, input=input_, capture_output=True, timeout=timeout, env=env, check=False
        )
    except FileNotFoundError as exc:
        raise CommandError(
            f"command not found: {argv[0]}.", "Install it (`make deps` installs what we need)."
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"`{shlex.join(argv)}` did not finish within {timeout} s.") from exc
    if check and proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip()[-500:]
        raise CommandError(f"`{shlex.join(argv)}` failed with exit code {proc.returncode}: {tail}")
    return proc


def spawn(
    cmd: Sequence[Arg], *, log_file: Path | None = None, own_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in the background, its output going to ``log_file`` (or discarded).

    ``own_session`` keeps it out of the terminal's process group, so that Ctrl-C reaches only
    the caller, which then stops it in order.
    """
    argv = _argv(cmd)
    log.debug("spawn: %s", shlex.join(argv))
    out = log_file.open("ab") if log_file else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=own_session
        )
    except FileNotFoundError as exc:
        raise CommandError(
            f"command not found: {argv[0]}.", "Install it (`make deps` installs what we need)."
        ) from exc
    finally:
        if log_file and not isinstance(out, int):
            out.close()
