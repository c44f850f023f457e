"""What the console needs from the appliance, passed in whole so tests hand it real services."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from appliance.console.gather import HealthSource
from appliance.console.health import HealthReport
from appliance.identity.roles import Principal
from appliance.identity.service import IssuedToken
from appliance.identity.store import BreakGlassUse
from appliance.runtime import Runtime
from appliance.updates.agent import AgentState, Phase, ProgressEvent

USB_DIR = Path("/run/appliance-usb")  # where the USB stick's bundles appear
Progress = Callable[[ProgressEvent], None]
Installer = Callable[[Path, str, Progress], AgentState]
"""Install ``bundle`` as ``actor``, reporting progress; slow: called in a thread worker."""
NO_AGENT = AgentState(Phase.FAILURE, reason="this console has no update agent")


class Identity(Protocol):
    """The part of :class:`appliance.identity.service.IdentityService` the console uses."""

    def login(
        self, username: str, password: str, *, reason: str | None = None
    ) -> tuple[Principal, IssuedToken]: ...

    def authenticate(self, token: str) -> Principal: ...

    def logout(self, principal: Principal, why: str = "logout") -> None: ...

    def unacknowledged_break_glass(self) -> list[BreakGlassUse]: ...


@dataclass(frozen=True)
class ConsoleBackends:
    identity: Identity
    health: Callable[[], HealthReport]  # slow (TPM, OpenVINO, disk): called in a thread worker
    idle_timeout: float = 15 * 60.0  # seconds without a key or mouse event before logoff
    refresh_s: float = 5.0  # dashboard refresh period
    clock: Callable[[], float] = time.monotonic  # for idleness only
    usb_dir: Path = USB_DIR  # the update screen lists the bundles found here
    installer: Installer = field(default=lambda _b, _a, _p: NO_AGENT)


def from_runtime(
    rt: Runtime, *, refresh_s: float = 5.0, usb_dir: Path = USB_DIR
) -> ConsoleBackends:
    """The real backends of an opened runtime: its identity service, trust core, audit log,
    update agent (built per install, so OpenVINO loads only when an update runs)."""

    @functools.cache
    def ov_core() -> Any:
        import openvino as ov

        return ov.Core()

    def devices() -> Sequence[str]:
        from appliance.inference import available_devices

        return available_devices(ov_core())

    def install(bundle: Path, actor: str, on_progress: Progress) -> AgentState:
        from appliance.updates.wiring import make_agent

        return make_agent(rt, actor, on_progress).install(bundle)

    source = HealthSource(
        config=rt.config,
        tcti=rt.tcti,
        tpm_description=rt.endpoint.description,
        audit=lambda: rt.audit,
        identity=lambda: rt.identity,
        devices=devices,
    )
    return ConsoleBackends(
        identity=rt.identity,
        health=source,
        idle_timeout=rt.config.session_idle_minutes * 60.0,
        refresh_s=refresh_s,
        usb_dir=usb_dir,
        installer=install,
    )
