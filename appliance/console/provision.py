"""The wizard's backend: each provisioning step as one call on the real services of a runtime.

No Textual here: the wizard's panes call these from thread workers. Every call either completes
durably (atomic writes, fsync, audit) or raises an ApplianceError with what to do; the pane
records its step only afterwards, so a power cut repeats at most the step it interrupted.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from appliance.audit.records import AuditEvent, Outcome
from appliance.dicom import peers as dicom
from appliance.errors import ConfigError
from appliance.fsutil import fsync_dir
from appliance.identity.roles import Principal
from appliance.identity.store import IdentityStore
from appliance.runtime import Runtime
from appliance.setup import clock, network, progress, selftest, site
from appliance.setup.progress import Step, WizardProgress
from appliance.trust import core
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm
from appliance.updates.verify import TrustedState, load_trusted_state

ClockSetter = Callable[[datetime], None]


@dataclass(frozen=True)
class RootInfo:
    """A vendor root file offered for trust, with what the technician compares."""

    path: Path
    sha256: str
    version: int
    expires: str
    roles: str  # "root 2 of 3, targets 2 of 3, ..."

    @property
    def grouped(self) -> str:
        """The fingerprint in groups of four, to read out against the vendor's letter."""
        return " ".join(self.sha256[i : i + 4] for i in range(0, len(self.sha256), 4))


def last_group(code: str) -> str:
    """The last dash- or space-separated group of a code, as the technician types it back."""
    return code.replace(" ", "-").rstrip("-").rsplit("-", 1)[-1].upper()


class Provisioning:
    """The provisioning steps over one runtime. ``set_clock`` is None off the box."""

    def __init__(self, rt: Runtime, usb_dir: Path, set_clock: ClockSetter | None) -> None:
        self.rt = rt
        self.config = rt.config
        self.usb_dir = usb_dir
        self.set_clock = set_clock

    # --- progress -------------------------------------------------------------------------

    def progress(self) -> WizardProgress:
        return progress.load_progress(self.config)

    def record(self, step: Step, note: str) -> WizardProgress:
        return progress.record_step(self.config, step, note)

    def needs_admin(self) -> bool:
        """No account exists yet (read without the audit key, so it works before enrollment)."""
        if not self.config.identity_db.exists():
            return True
        store = IdentityStore(self.config.identity_db)
        try:
            return store.count_accounts() == 0
        finally:
            store.close()

    def wizard_pending(self) -> bool:
        """The wizard must run: it started and did not finish, or the box has no admin yet."""
        state = self.progress()
        return not state.finished and (state.started or self.needs_admin())

    # --- site, network, time --------------------------------------------------------------

    def save_site(self, name: str, box_id: str) -> site.SiteIdentity:
        identity = site.SiteIdentity(name.strip(), box_id.strip())
        site.save_site(self.config, identity)
        return identity

    def site(self) -> site.SiteIdentity | None:
        return site.load_site(self.config)

    def write_network(self, settings: network.NetworkSettings) -> Path:
        return network.write_network(self.config.network_folder, settings)

    def save_timezone(self, name: str) -> None:
        clock.save_timezone(self.config, name)

    def timezone(self) -> str:
        return clock.saved_timezone(self.config) or "UTC"

    def set_time(self, when: datetime) -> None:
        """Set the system clock to ``when`` (wall time in the box's zone), and record it.

        A clock set wrong moves retention, sessions and certificates, so every change is in the
        audit trail: at once on an enrolled box; before enrollment, when the trail has no key
        yet, in the provisioning folder, from which :meth:`enroll` moves it into the trail.
        """
        if self.set_clock is None:
            raise ConfigError("the clock can be set only on the box itself.",
                              "Set it in the box's console.")  # fmt: skip
        before = datetime.now(UTC)
        self.set_clock(when)
        change = {"action": "set-clock", "from": f"{before:%Y-%m-%d %H:%M:%S} UTC",
                  "to": f"{when:%Y-%m-%d %H:%M:%S} {self.timezone()}"}  # fmt: skip
        if self.enrolled():
            self._clock_record(change)
        else:
            clock.note_clock_set(self.config, change)

    # --- trust ----------------------------------------------------------------------------

    def enrolled(self) -> bool:
        return core.key_store(self.config).is_enrolled()

    def enroll(self) -> str:
        """Seal fresh keys and return the recovery code; on a box enrolled by an interrupted
        wizard, a new code for the same keys (the unconfirmed one stops working). Audited."""
        with open_tpm(self.rt.tcti) as tpm:
            if self.enrolled():
                code = core.key_store(self.config).new_recovery_code(tpm)
                action = "new-recovery-code"
            else:
                code = core.enroll(tpm, self.config)
                action = "enroll"
        self.rt.audit.append(
            AuditEvent.TRUST_CHANGE, actor="provisioning", outcome=Outcome.SUCCESS,
            detail={"action": action, "pcrs": ",".join(map(str, self.config.pcrs))},
        )  # fmt: skip
        # The clock changes made before the trail had its key.
        for change in clock.noted_clock_sets(self.config):
            self._clock_record({**change, "recorded": "at enrollment"})
        clock.forget_clock_sets(self.config)
        return code

    def _clock_record(self, change: dict[str, str]) -> None:
        self.rt.audit.append(AuditEvent.CONFIG_CHANGE, actor="provisioning",
                             outcome=Outcome.SUCCESS, detail=change)  # fmt: skip

    def luks_key(self) -> str | None:
        """The disk's recovery key left by the image's first boot, if still there."""
        try:
            return self.config.luks_recovery_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def forget_luks_key(self) -> None:
        """Delete the disk recovery key once the technician confirmed recording it."""
        path = self.config.luks_recovery_file
        path.unlink(missing_ok=True)
        fsync_dir(path.parent)

    # --- the first admin ------------------------------------------------------------------

    def create_admin(self, username: str, password: str) -> Principal:
        """Create the first admin and open its session (both audited)."""
        identity = self.rt.identity
        if identity.needs_bootstrap():
            identity.bootstrap_admin(username, password)
        principal, _token = identity.login(username, password)
        return principal

    # --- vendor root ----------------------------------------------------------------------

    def usb_roots(self) -> list[Path]:
        try:
            return sorted(p for p in self.usb_dir.iterdir() if p.suffix == ".json" and p.is_file())
        except OSError:
            return []

    def root_info(self, path: Path) -> RootInfo:
        """Read and check (self-signed, well formed) a vendor root; ConfigError if unreadable."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}.", "Check the stick.") from exc
        return _describe(path, data, TrustedState.from_root(data))

    def trusted_root(self) -> RootInfo | None:
        folder = self.config.updates_dir / "trusted"
        if not (folder / "root.json").exists():
            return None
        state = load_trusted_state(folder)
        return _describe(folder / "root.json", state.root, state)

    def trust_root(self, path: Path, actor: str) -> str:
        from appliance.updates.wiring import trust_vendor_root

        return trust_vendor_root(self.rt, path.read_bytes(), actor)

    # --- PACS peers -----------------------------------------------------------------------

    def peers(self) -> list[dicom.Peer]:
        return dicom.load_peers(self.config)

    def save_peers(self, peers: Sequence[dicom.Peer]) -> None:
        dicom.save_peers(self.config, list(peers))

    def echo(self, peer: dicom.Peer) -> None:
        dicom.echo(peer, timeout=5.0)

    # --- self-test ------------------------------------------------------------------------

    def models(self) -> list[str]:
        from appliance.store.slots import ModelStore

        return ModelStore(self.config.models_dir).models()

    def selftest(self) -> selftest.SelfTest:
        from appliance.store.slots import ModelStore

        with open_tpm(self.rt.tcti) as tpm:
            key = core.key_store(self.config).unseal(tpm, KeyName.MODEL_STORE)
        result = selftest.run_selftest(ModelStore(self.config.models_dir), key, _ov_core())
        selftest.save_selftest(self.config, result)
        return result


@functools.cache
def _ov_core() -> Any:
    import openvino as ov

    return ov.Core()


def _describe(path: Path, data: bytes, state: TrustedState) -> RootInfo:
    signed = json.loads(state.root)["signed"]
    roles = ", ".join(
        f"{name} {role['threshold']} of {len(role['keyids'])}"
        for name, role in sorted(signed["roles"].items())
    )
    return RootInfo(path, hashlib.sha256(data).hexdigest(), int(signed["version"]),
                    str(signed["expires"]), roles)  # fmt: skip
