"""What the console needs from the appliance, passed in whole so tests hand it real services."""

from __future__ import annotations

import collections
import functools
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.audit.log import VerifyReport
from appliance.audit.records import AuditRecord
from appliance.console.gather import HealthSource
from appliance.console.health import HealthReport
from appliance.errors import ApplianceError
from appliance.identity.roles import Principal, Role
from appliance.identity.service import IssuedToken
from appliance.identity.store import Account, BreakGlassUse
from appliance.runtime import Runtime
from appliance.updates.agent import AgentState, Phase, ProgressEvent
from appliance.updates.preview import BundlePreview

if TYPE_CHECKING:
    from appliance.console.provision import Provisioning

USB_DIR = Path("/run/appliance-usb")  # where the USB stick's bundles appear
RECENT = 500  # how many of the newest audit records the audit view lists
Progress = Callable[[ProgressEvent], None]
Installer = Callable[[Path, str, Progress], AgentState]
"""Install ``bundle`` as ``actor``, reporting progress; slow: called in a thread worker."""
NO_AGENT = AgentState(Phase.FAILURE, reason="this console has no update agent")
AuditExporter = Callable[[Principal, Path], tuple[Path, int]]
"""Write the audit trail as JSON lines into the folder for ``principal`` (audited); returns the
file written and the record count; slow: called in a thread worker."""


class Identity(Protocol):
    """The part of :class:`appliance.identity.service.IdentityService` the console uses."""

    def login(
        self, username: str, password: str, *, reason: str | None = None
    ) -> tuple[Principal, IssuedToken]: ...

    def authenticate(self, token: str) -> Principal: ...

    def logout(self, principal: Principal, why: str = "logout") -> None: ...

    def unacknowledged_break_glass(self) -> list[BreakGlassUse]: ...

    def acknowledge_break_glass(self, by: Principal, use_id: int) -> None: ...

    def accounts(self) -> list[Account]: ...

    def add_account(
        self, by: Principal, username: str, role: Role, password: str | None
    ) -> None: ...

    def disable(self, by: Principal, username: str) -> None: ...

    def enable(self, by: Principal, username: str) -> None: ...

    def unlock(self, by: Principal, username: str) -> None: ...

    def set_password(self, by: Principal, username: str, password: str) -> None: ...

    def change_password(self, by: Principal, current: str, password: str) -> None: ...


def _no_verify() -> VerifyReport:
    raise NotImplementedError("this console has no audit log")


def _no_export(_who: Principal, _folder: Path) -> tuple[Path, int]:
    raise NotImplementedError("this console has no audit log")


def _no_report(_who: Principal, _folder: Path) -> tuple[Path, str]:
    raise NotImplementedError("this console has no TPM to sign a health report")


def _no_preview(bundle: Path) -> BundlePreview:
    return BundlePreview(bundle.name, 0, problem="this console cannot look inside bundles")


class _RuntimeIdentity:
    """The runtime's identity service, opened at first use: it writes to the audit log, whose
    key exists only once the wizard's TPM step has sealed it."""

    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def login(
        self, username: str, password: str, *, reason: str | None = None
    ) -> tuple[Principal, IssuedToken]:
        return self._rt.identity.login(username, password, reason=reason)

    def authenticate(self, token: str) -> Principal:
        return self._rt.identity.authenticate(token)

    def logout(self, principal: Principal, why: str = "logout") -> None:
        self._rt.identity.logout(principal, why)

    def unacknowledged_break_glass(self) -> list[BreakGlassUse]:
        return self._rt.identity.unacknowledged_break_glass()

    def acknowledge_break_glass(self, by: Principal, use_id: int) -> None:
        self._rt.identity.acknowledge_break_glass(by, use_id)

    def accounts(self) -> list[Account]:
        return self._rt.identity.accounts()

    def add_account(self, by: Principal, username: str, role: Role, password: str | None) -> None:
        self._rt.identity.add_account(by, username, role, password)

    def disable(self, by: Principal, username: str) -> None:
        self._rt.identity.disable(by, username)

    def enable(self, by: Principal, username: str) -> None:
        self._rt.identity.enable(by, username)

    def unlock(self, by: Principal, username: str) -> None:
        self._rt.identity.unlock(by, username)

    def set_password(self, by: Principal, username: str, password: str) -> None:
        self._rt.identity.set_password(by, username, password)

    def change_password(self, by: Principal, current: str, password: str) -> None:
        self._rt.identity.change_password(by, current, password)


@dataclass(frozen=True)
class ConsoleBackends:
    identity: Identity
    health: Callable[[], HealthReport]  # slow (TPM, OpenVINO, disk): called in a thread worker
    idle_timeout: float = 15 * 60.0  # seconds without a key or mouse event before logoff
    refresh_s: float = 5.0  # dashboard refresh period
    clock: Callable[[], float] = time.monotonic  # for idleness only
    usb_dir: Path = USB_DIR  # the update screen lists the bundles found here
    installer: Installer = field(default=lambda _b, _a, _p: NO_AGENT)
    # The audit view's sources; slow (disk, TPM): called in thread workers.
    audit_records: Callable[[], list[AuditRecord]] = field(default=lambda: [])
    audit_verify: Callable[[], VerifyReport] = _no_verify
    audit_export: AuditExporter = _no_export
    # Provisioning (the wizard), bundle preview and the signed health report; slow: in workers.
    provisioning: Provisioning | None = None
    preview: Callable[[Path], BundlePreview] = _no_preview
    health_export: Callable[[Principal, Path], tuple[Path, str]] = _no_report


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

    def recent_records() -> list[AuditRecord]:
        return list(collections.deque(rt.audit.records(), maxlen=RECENT))

    def verify_chain() -> VerifyReport:
        from appliance.audit.log import verify

        return verify(rt.config.audit_dir, rt.audit_key, rt.audit_anchor)

    def export(who: Principal, folder: Path) -> tuple[Path, int]:
        return export_audit(rt, who, folder)

    def preview(bundle: Path) -> BundlePreview:
        import openvino as ov

        from appliance.trust.counter import TpmCounter
        from appliance.updates.manifest import BoxProfile
        from appliance.updates.preview import preview_bundle
        from appliance.updates.verify import load_trusted_state

        try:
            trusted = load_trusted_state(rt.config.updates_dir / "trusted")
            floor = TpmCounter(rt.tcti, rt.config.counter_index).read()
        except ApplianceError as exc:
            return BundlePreview(bundle.name, 0, problem=str(exc))
        box = BoxProfile(ov.get_version(), frozenset(devices()))
        return preview_bundle(bundle, trusted, floor, box)

    def health_report(who: Principal, folder: Path) -> tuple[Path, str]:
        from appliance.support.report import export_report

        return export_report(rt, who.username, who.role.value, folder, devices=devices())

    source = HealthSource(
        config=rt.config,
        tcti=rt.tcti,
        tpm_description=rt.endpoint.description,
        audit=lambda: rt.audit,
        identity=lambda: rt.identity,
        devices=devices,
    )
    from appliance.console.provision import Provisioning
    from appliance.setup import clock

    setter = clock.set_system_clock if clock.on_the_box(rt.config) else None
    return ConsoleBackends(
        identity=_RuntimeIdentity(rt),
        health=source,
        idle_timeout=rt.config.session_idle_minutes * 60.0,
        refresh_s=refresh_s,
        usb_dir=usb_dir,
        installer=install,
        audit_records=recent_records,
        audit_verify=verify_chain,
        audit_export=export,
        provisioning=Provisioning(rt, usb_dir, setter),
        preview=preview,
        health_export=health_report,
    )


def export_audit(rt: Runtime, who: Principal, folder: Path) -> tuple[Path, int]:
    """Write the whole trail as JSON lines to ``folder/audit-<box>-<date>.jsonl`` atomically and
    audit the export (as ``appliance audit export`` does). Raises StorageError if unwritable."""
    from appliance.audit.export import export_json
    from appliance.audit.records import AuditEvent, Outcome
    from appliance.fsutil import atomic_write
    from appliance.setup.site import box_name

    text = io.StringIO()
    count = export_json(rt.audit.records(), text)
    date = datetime.now(UTC).date().isoformat()
    path = folder / f"audit-{box_name(rt.config)}-{date}.jsonl"
    atomic_write(path, text.getvalue().encode(), mode=0o640)
    rt.audit.append(
        AuditEvent.EXPORT, actor=who.username, role=who.role.value, outcome=Outcome.SUCCESS,
        detail={"what": "audit", "format": "json", "records": count, "to": str(path)},
    )  # fmt: skip
    return path, count
