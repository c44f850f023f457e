"""What the console needs from the appliance, passed in whole so tests hand it real services."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.console.gather import HealthSource
from appliance.console.health import HealthReport
from appliance.identity.roles import Principal
from appliance.identity.service import IssuedToken
from appliance.identity.store import BreakGlassUse
from appliance.runtime import Runtime


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


def from_runtime(rt: Runtime, *, refresh_s: float = 5.0) -> ConsoleBackends:
    """The real backends of an opened runtime: its identity service, trust core, audit log."""

    @functools.cache
    def ov_core() -> Any:
        import openvino as ov

        return ov.Core()

    def devices() -> Sequence[str]:
        from appliance.inference import available_devices

        return available_devices(ov_core())

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
    )
