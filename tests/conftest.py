"""Fixtures that start real components: one swtpm per test on a short unix socket path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.identity.roles import Role
from appliance.identity.service import IdentityService
from appliance.runtime import Runtime
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import Tpm, open_tpm


@pytest.fixture
def swtpm() -> Iterator[Swtpm]:
    """A fresh software TPM, stopped orderly after the test."""
    with running_swtpm() as instance:
        yield instance


@contextlib.contextmanager
def running_swtpm() -> Iterator[Swtpm]:
    """A fresh software TPM for the block (a test that needs a second TPM calls this)."""
    # Unix socket paths are limited to 108 bytes: keep it short, outside pytest's tmp_path.
    top = Path(tempfile.mkdtemp(prefix="tpm", dir="/tmp"))
    instance = Swtpm(top / "state", sock=top / "s")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def config(tmp_path: Path, swtpm: Swtpm) -> Config:
    """A Config whose state lives in tmp_path and whose TPM is the test's swtpm."""
    return Config(state_dir=tmp_path / "state", tcti=swtpm.tcti)


@pytest.fixture
def tpm(swtpm: Swtpm) -> Iterator[Tpm]:
    """An open connection to the test's swtpm (closed before the swtpm stops)."""
    with open_tpm(swtpm.tcti) as conn:
        yield conn


ADMIN_PASSWORD = "correct horse battery staple"
USER_PASSWORD = "a long enough passphrase"


def accounts_for_every_role(identity: IdentityService) -> dict[Role, str]:
    """Provision admin 'alice' and one account per other role; return each role's bearer token.

    Service accounts get a service token; the others log in (break-glass with a reason).
    """
    identity.bootstrap_admin("alice", ADMIN_PASSWORD)
    admin, issued = identity.login("alice", ADMIN_PASSWORD)
    tokens = {Role.ADMIN: issued.token}
    for role in Role:
        name = f"user-{role.value}"
        if role is Role.SERVICE:
            identity.add_account(admin, name, role, None)
            tokens[role] = identity.issue_service_token(admin, name).token
        elif role is not Role.ADMIN:
            identity.add_account(admin, name, role, USER_PASSWORD)
            tokens[role] = identity.login(name, USER_PASSWORD, reason="test")[1].token
    return tokens


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Figures tests report (``name: value``, e.g. the boot test's boot_to_ready_s), printed at
    the end of the run past pytest's output capture, so that `make test` shows them."""
    figures: list[str] = getattr(terminalreporter.config, "appliance_figures", [])
    if figures:
        terminalreporter.section("figures")
        for line in figures:
            terminalreporter.write_line(line)


# The prefix of a command a test interrupts with SIGINT, as Ctrl-C in a terminal would. A run of
# the suite started as a background job (`make test &`, a CI runner) has SIGINT ignored, and
# commands inherit that: the signal would never arrive. `env --default-signal` restores it.
CTRL_C_REACHES = ["env", "--default-signal=INT"]


def wait_for_reader(fifo: Path) -> int:
    """Open ``fifo`` for writing once a process has it open for reading (it then blocks)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: no reader yet
            time.sleep(0.05)
    pytest.fail(f"nothing opened {fifo}")


@contextlib.contextmanager
def broken_trail(runtime: Runtime) -> Iterator[None]:
    """The audit log's folder replaced by a file, as a failing disk leaves it: no append can
    take its lock. Put back afterwards."""
    folder = runtime.audit.directory
    aside = folder.with_name(folder.name + ".aside")
    folder.rename(aside)
    folder.write_text("not a folder")
    try:
        yield
    finally:
        folder.unlink()
        aside.rename(folder)


class SmallDisk:
    """A small tmpfs mounted at ``path``: real writes there fail with ENOSPC once it is full."""

    FILLER = ".filler"

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self, leave: int = 0) -> None:
        """Take every free byte but ``leave`` (in whole pages) with a filler file: the next write
        that needs more space fails."""
        fd = os.open(self.path / self.FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                chunk = b"\0" * size
                with contextlib.suppress(OSError):
                    while os.write(fd, chunk):
                        pass
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give the space back (the filler goes)."""
        (self.path / self.FILLER).unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int = 64) -> Iterator[SmallDisk]:
    """A tmpfs of ``size_mb`` at ``path`` (created) for the block, unmounted afterwards; skips the
    test, saying why, where mounting is not allowed (not root, or in a container without it)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a tmpfs mount, and mounting needs root")
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", os.fspath(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full disk: {mount.stderr.strip()}")
    try:
        yield SmallDisk(path)
    finally:
        # Lazily: a thread of the test may still hold a file open there.
        subprocess.run(["umount", "-l", os.fspath(path)], check=False)


def run_until_ready(state: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``appliance run`` on ``state`` (``args`` before the command: ``--tcti``), read its
    report up to the ready line; return the process and the lines read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_CONFIG"] = "/nonexistent"
    env["APPLIANCE_DICOM_PORT"] = "0"
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "--state-dir", str(state), *args, "run"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ready; press Ctrl-C" in line:
            return proc, lines
    proc.kill()
    pytest.fail("appliance run did not become ready:\n" + "".join(lines))
