"""Start, own and stop a software TPM (swtpm) on a unix socket.

The embedded default when the machine has no ``/dev/tpmrm0``: development machines, CI and the
tests (one instance per test). swtpm is started with absolute paths and
``--flags not-need-init,startup-clear`` so it is ready at once; :meth:`Swtpm.stop` sends
TPM2_Shutdown before the process ends so that the stop is orderly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from appliance.errors import TpmUnavailableError, TrustError
from appliance.run import spawn
from appliance.trust.tpm import open_tpm

log = logging.getLogger(__name__)

# sun_path holds 108 bytes; leave room for swtpm's ".ctrl" suffix.
_MAX_SOCKET_PATH = 100


def socket_path_for(state_dir: Path) -> Path:
    """Where the swtpm for ``state_dir`` listens: inside it, or under /tmp if that is too long."""
    path = state_dir.resolve() / "tpm.sock"
    if len(str(path)) + len(".ctrl") <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/tmp") / f"appliance-swtpm-{digest}" / "tpm.sock"  # noqa: S108


class Swtpm:
    """One swtpm process whose TPM state lives in ``state_dir``."""

    def __init__(self, state_dir: Path, sock: Path | None = None) -> None:
        self.state_dir = state_dir.resolve()
        self.sock = (sock or socket_path_for(self.state_dir)).resolve()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:path={self.sock}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "swtpm.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> None:
        """Start swtpm and wait until its socket accepts connections."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.sock.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in (self.sock, Path(f"{self.sock}.ctrl")):
            stale.unlink(missing_ok=True)
        self._proc = spawn(
            [
                "swtpm", "socket", "--tpm2",
                "--tpmstate", f"dir={self.state_dir}",
                "--server", f"type=unixio,path={self.sock}",
                "--ctrl", f"type=unixio,path={self.sock}.ctrl",
                "--flags", "not-need-init,startup-clear",
                "--pid", f"file={self.pid_file}",
            ],
            log_file=self.state_dir / "swtpm.log",
            own_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.accepts():
            if self._proc.poll() is not None:
                raise TpmUnavailableError(
                    f"swtpm exited with code {self._proc.returncode} at start.",
                    f"See {self.state_dir / 'swtpm.log'}.",
                )
            if time.monotonic() > deadline:
                self.kill()
                raise TpmUnavailableError(f"swtpm did not open {self.sock} in {timeout} s.")
            time.sleep(0.02)
        log.info("swtpm started (pid %s) on %s, state in %s", self.pid, self.sock, self.state_dir)

    def accepts(self) -> bool:
        """Whether a swtpm (this one or another process's) listens on the socket."""
        if not self.sock.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self.sock))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        """Orderly stop: TPM2_Shutdown(CLEAR), then SIGTERM."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            with open_tpm(self.tcti) as tpm:
                tpm.shutdown()
        except TrustError as exc:
            log.warning("swtpm: TPM2_Shutdown failed (%s); stopping anyway", exc)
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        log.info("swtpm stopped")

    def kill(self) -> None:
        """Unclean stop (SIGKILL), as a power cut would do; also of a swtpm another process
        started on this state (found by its pid file), for example after that process died."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            return
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pid_file.read_text().strip()), signal.SIGKILL)

    def __enter__(self) -> Swtpm:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
