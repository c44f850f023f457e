"""The real console in a real terminal: `appliance console` inside tmux, driven by send-keys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.runtime import open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm
from tests.console.conftest import ADMIN_PASSWORD

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt install tmux)")


@pytest.fixture
def enrolled(config: Config) -> Config:
    """An enrolled box with an admin, closed again so the console process opens it alone."""
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        rt.identity.bootstrap_admin("alice", ADMIN_PASSWORD)
    return config


@pytest.fixture
def session() -> Iterator[str]:
    name = f"console-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    yield name
    subprocess.run([str(TMUX), "kill-session", "-t", name], capture_output=True, check=False)


def tmux(*args: str) -> str:
    return subprocess.run(
        [str(TMUX), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def wait_for(session: str, needle: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if needle in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} never appeared; the screen was:\n{screen}")


def test_admin_logs_in_sees_the_dashboard_and_quits(
    enrolled: Config, session: str, tmp_path: Path
) -> None:
    done = tmp_path / "exit-code"
    command = (
        f"{sys.executable} -m appliance.cli --state-dir {enrolled.state_dir} "
        f"--tcti {enrolled.tcti} console; echo $? > {done}"
    )
    env = {"APPLIANCE_CONFIG": "/nonexistent", "HOME": str(tmp_path / "home")}
    env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", *env_args, command)
    wait_for(session, "Log in")
    # Typed text goes literally (-l); key names (Tab, Enter) do not.
    for keys in (["-l", "alice"], ["Tab"], ["-l", ADMIN_PASSWORD], ["Enter"]):
        tmux("send-keys", "-t", session, *keys)
        time.sleep(0.3)
    wait_for(session, "Trust / TPM")
    tmux("send-keys", "-t", session, "C-q")
    deadline = time.monotonic() + 20  # the shell writes the exit code once the console ends
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done.exists(), "the console did not end after ctrl+q"
    assert done.read_text().strip() == "0"


def test_a_fresh_box_opens_the_wizard_in_a_real_terminal(
    config: Config, session: str, tmp_path: Path
) -> None:
    """`appliance console` on a box with no keys and no account: the wizard, not the login."""
    command = (
        f"{sys.executable} -m appliance.cli --state-dir {config.state_dir} "
        f"--tcti {config.tcti} console"
    )
    env_args = ["-e", "APPLIANCE_CONFIG=/nonexistent", "-e", f"HOME={tmp_path / 'home'}"]
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", *env_args, command)
    wait_for(session, "step 1 of 8, Site and box identity")
    for keys in (["-l", "Clinic A"], ["Tab"], ["C-u"], ["-l", "clinic-a-box1"], ["Tab"],
                 ["Enter"]):  # fmt: skip
        tmux("send-keys", "-t", session, *keys)
        time.sleep(0.3)
    screen = wait_for(session, "step 2 of 8, Network")
    assert "Clinic A / clinic-a-box1" in screen
    tmux("send-keys", "-t", session, "C-q")
