"""The rules that turn what was gathered into problems, and the two host probes (systemd units,
disk encryption) that need no appliance service."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.config import Config
from appliance.console.health import (
    Level,
    ModelSummary,
    Problem,
    ServiceLine,
    TrustSummary,
)
from appliance.console.system import SystemSample
from appliance.errors import CommandError
from appliance.run import run
from appliance.updates.agent import AgentState, Phase

DISK_ERROR, DISK_WARNING, MEMORY_WARNING, HOT = 95.0, 85.0, 90.0, 90.0
_FREE_DISK = (
    "Housekeeping deletes results and finished studies hourly after their retention: lower "
    "results_retention_days or studies_retention_days in /etc/appliance/appliance.toml, and "
    "check for studies whose results cannot be sent (PACS peers)."
)


def services(units: Sequence[str]) -> tuple[ServiceLine, ...]:
    """Each unit's ActiveState; "unknown" for all when systemd cannot be asked."""
    try:
        proc = run(["systemctl", "show", "-p", "ActiveState", "--value", *units], timeout=5)
    except CommandError:
        return tuple(ServiceLine(u, "unknown") for u in units)
    states = proc.stdout.decode().split()
    return tuple(ServiceLine(u, s) for u, s in zip(units, states, strict=False))


def disk_encryption(
    config: Config, mountinfo: Path = Path("/proc/self/mountinfo")
) -> tuple[bool, str]:
    """(encrypted?, a description) of the filesystem holding the state folder."""
    path = config.state_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    best, source, fstype = "", "", ""
    for line in mountinfo.read_text().splitlines():
        left, _, right = line.partition(" - ")
        point = left.split()[4]
        target = str(path.resolve())
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(
            best
        ):
            best, (fstype, source) = point, right.split()[:2]
    device = Path(source).resolve() if source.startswith("/dev/") else None
    if device and device.name.startswith("dm-"):
        uuid = Path("/sys/class/block") / device.name / "dm" / "uuid"
        if uuid.exists() and uuid.read_text().startswith("CRYPT-"):
            return True, f"encrypted (dm-crypt {source} on {best})"
    return False, f"NOT encrypted ({fstype} {source or '?'} on {best or '?'})"


def trust_problems(trust: TrustSummary) -> list[Problem]:
    out = []
    if not trust.enrolled:
        out.append(
            Problem(
                Level.ERROR,
                "TPM",
                "the box is not enrolled: it has no sealed keys.",
                "Enroll it: `appliance trust enroll` (provisioning).",
            )
        )
    if trust.in_lockout:
        out.append(
            Problem(
                Level.ERROR,
                "TPM",
                f"the TPM is in dictionary-attack lockout "
                f"({trust.failed_tries} of {trust.max_tries} failures).",
                "Clear it with the lockout authorization "
                "(`tpm2_dictionarylockout --clear-lockout`).",
            )
        )
    elif trust.failed_tries:
        out.append(
            Problem(
                Level.WARNING,
                "TPM",
                f"the TPM counted {trust.failed_tries} of "
                f"{trust.max_tries} authorization failures or unclean shutdowns.",
                "Find who is trying TPM authorizations; shut the box down cleanly.",
            )
        )
    for key in trust.keys:
        if not key.unsealable:
            pcrs = ", ".join(map(str, key.differing))
            out.append(
                Problem(
                    Level.ERROR,
                    "TPM",
                    f"the {key.name} key will not unseal: "
                    f"PCR {pcrs} changed (firmware, Secure Boot or boot chain).",
                    "Run `appliance trust recover` with the recovery code.",
                )
            )
    if trust.enrolled and trust.floor is None:
        out.append(
            Problem(
                Level.ERROR,
                "TPM",
                "the anti-rollback counter is missing.",
                "Re-enroll the box (`appliance trust enroll`) or call support.",
            )
        )
    return out


def model_problems(models: tuple[ModelSummary, ...]) -> list[Problem]:
    if not models:
        return [
            Problem(
                Level.WARNING,
                "models",
                "no models installed.",
                "Import a signed model bundle from USB (`appliance update install`).",
            )
        ]
    return [
        Problem(
            Level.ERROR,
            "models",
            f"model '{m.name}' has no active slot.",
            "Install its bundle again, or `appliance update rollback " + m.name + "`.",
        )
        for m in models
        if m.active_version is None
    ]


def update_problems(update: AgentState, running: bool) -> list[Problem]:
    """A failed update, or a commit left pending: ``update`` in COMMIT while no update process
    (``running``: one holds the agent lock) is at work on it; the TPM stopped it, or the box."""
    if update.phase is Phase.FAILURE:
        return [
            Problem(
                Level.ERROR,
                "update",
                f"the last update failed: {update.reason or '?'}",
                "See `appliance update status`; retry with a valid signed bundle.",
            )
        ]
    if update.phase is Phase.COMMIT and not running:
        return [
            Problem(
                Level.ERROR,
                "update",
                f"{update.model} {update.version} passed validation but its commit did not "
                "finish (the TPM did not answer); no other update installs until it does.",
                "Once the TPM answers, `appliance update status` finishes it (never undone).",
            )
        ]
    return []


def break_glass_problems(pending: int) -> list[Problem]:
    if not pending:
        return []
    return [
        Problem(
            Level.WARNING,
            "break-glass",
            f"{pending} break-glass use(s) not reviewed.",
            "An admin reviews each: `appliance audit ack-break-glass ID`.",
        )
    ]


def service_problems(lines: Sequence[ServiceLine]) -> list[Problem]:
    out = []
    for line in lines:
        if line.state == "unknown":
            out.append(
                Problem(
                    Level.WARNING,
                    "services",
                    f"{line.unit}: systemd not reachable.",
                    "Run the console on the appliance itself to see unit states.",
                )
            )
        elif line.state != "active":
            out.append(
                Problem(
                    Level.ERROR,
                    "services",
                    f"{line.unit} is {line.state}.",
                    f"See `journalctl -u {line.unit}`; `systemctl restart {line.unit}`.",
                )
            )
    return out


def encryption_problems(encryption: tuple[bool, str]) -> list[Problem]:
    if encryption[0]:
        return []
    return [
        Problem(
            Level.WARNING,
            "encryption",
            f"the state partition is {encryption[1]}.",
            "Production images put /var/lib/appliance on LUKS; reinstall from the image.",
        )
    ]


def system_problems(sample: SystemSample) -> list[Problem]:
    out = []
    if sample.disk_percent >= DISK_WARNING:
        level = Level.ERROR if sample.disk_percent >= DISK_ERROR else Level.WARNING
        out.append(
            Problem(
                level,
                "disk",
                f"the state partition is {sample.disk_percent:.0f}% " "full.",
                _FREE_DISK,
            )
        )
    if sample.memory_percent >= MEMORY_WARNING:
        out.append(
            Problem(
                Level.WARNING,
                "memory",
                f"memory is {sample.memory_percent:.0f}% used.",
                "Check for a stuck process; fewer models loaded at once.",
            )
        )
    out += [
        Problem(
            Level.ERROR,
            "temperature",
            f"{t.sensor} is at {t.celsius:.0f} °C.",
            "Check the fan and the air flow around the box.",
        )
        for t in sample.temperatures
        if t.celsius >= HOT
    ]
    return out
