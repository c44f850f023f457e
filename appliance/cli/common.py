"""What every command module shares: the handler type, registration, prompts, session file."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.config import Config
from appliance.errors import ConfigError, StorageError
from appliance.fsutil import atomic_write
from appliance.identity.roles import Principal
from appliance.runtime import Runtime
from appliance.trust.policy import DIGEST_SIZE

# A handler gets the parsed arguments, the runtime and the logged-in principal (None for the
# few public entry points), and returns the exit code.
Handler = Callable[[argparse.Namespace, Runtime, Principal | None], int]
Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"
_STATE_DIR_HINT = (
    "Name a folder this user may create or write with --state-dir (or APPLIANCE_STATE_DIR, "
    "or state_dir in the settings file)."
)


def command(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_: str,
    func: Handler,
    entry: str,
) -> argparse.ArgumentParser:
    """Add a subcommand whose entry-point name (for the permission table) is ``entry``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    parser.set_defaults(func=func, entry=entry)
    return parser


def ensure_state_dir(config: Config) -> None:
    """Create the state folder if it is missing; raise StorageError when it cannot be one."""
    path = config.state_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # exist_ok covers folders only
        raise StorageError(
            f"cannot use {path} as the state folder: it is a file.", _STATE_DIR_HINT
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"cannot use {path} as the state folder: {exc.strerror}.", _STATE_DIR_HINT
        ) from exc


def read_secret(
    prompt: str, file: str | None = None, what: str = "password", option: str = "--password-file"
) -> str:
    """A secret from ``file``, the terminal (not echoed) or one line of standard input.

    Raises ConfigError when ``file`` cannot be read as text, or when there is no terminal and
    standard input is empty or closed.
    """
    if file:
        try:
            return Path(file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not text"
            raise ConfigError(
                f"cannot read the {what} from {file}: {why}.",
                f"Name a readable text file that holds the {what}.",
            ) from exc
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass(prompt)
    # Without a terminal, an empty or closed standard input would pass "" on as the secret
    # (a failed login that counts towards the lockout): say what is missing instead.
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise ConfigError(
            f"no {what} to read: standard input is not a terminal and is empty.",
            f"Run the command on a terminal, pipe the {what} in, or name a file with {option}.",
        )
    return line.rstrip("\n")


def pcr_assignments(items: Sequence[str], what: str) -> dict[int, bytes]:
    """Parse ``PCR=SHA256`` arguments; raise ConfigError naming the bad one."""
    out: dict[int, bytes] = {}
    for item in items:
        pcr, sep, value = item.partition("=")
        try:
            digest, index = bytes.fromhex(value), int(pcr)
        except ValueError:
            digest, index = b"", -1
        if not sep or len(digest) != DIGEST_SIZE or index < 0:
            raise ConfigError(
                f"--{what} '{item}' is not PCR=SHA256.", "Write it as 7=<64 hex digits>."
            )
        out[index] = digest
    return out


def session_file(config: Config) -> Path:
    """Where `appliance login` keeps this user's session token for this state folder."""
    tag = hashlib.sha256(str(config.state_dir).encode()).hexdigest()[:10]
    return Path.home() / ".config" / "appliance" / f"session-{tag}"


def save_session(config: Config, token: str) -> Path:
    path = session_file(config)
    atomic_write(path, token.encode(), mode=0o600)
    return path


def load_session(config: Config) -> str | None:
    """The token from APPLIANCE_TOKEN or the session file, if any."""
    if os.environ.get("APPLIANCE_TOKEN"):
        return os.environ["APPLIANCE_TOKEN"]
    try:
        return session_file(config).read_text().strip() or None
    except FileNotFoundError:
        return None
