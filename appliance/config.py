"""The appliance's configuration: one frozen, typed object built once at each entry point.

Sources, later ones winning: built-in defaults, a TOML file (``/etc/appliance/appliance.toml``
on the box, or the one named by ``--config`` / ``APPLIANCE_CONFIG``), ``APPLIANCE_*`` environment
variables, command-line flags. Nothing reads configuration anywhere else.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from appliance.errors import ConfigError
from appliance.trust.policy import normalize_pcrs

DEFAULT_CONFIG_FILE = Path("/etc/appliance/appliance.toml")
DEFAULT_STATE_DIR = Path("/var/lib/appliance")
TPM_DEVICE = Path("/dev/tpmrm0")
# Owner-defined NV index range (TPM 2.0 Part 2, 0x01000000-0x013FFFFF is owner space).
DEFAULT_COUNTER_INDEX = 0x01500020
# Written by the image's first boot (systemd-cryptenroll), shown once by the wizard, then deleted.
DEFAULT_LUKS_RECOVERY_FILE = Path("/run/appliance/luks-recovery-key")


@dataclass(frozen=True)
class Config:
    """Immutable settings of one appliance process."""

    state_dir: Path = DEFAULT_STATE_DIR
    # None: ``device:/dev/tpmrm0`` when it exists, otherwise a swtpm owned by this process.
    tcti: str | None = None
    pcrs: tuple[int, ...] = (7, 11)
    counter_index: int = DEFAULT_COUNTER_INDEX
    api_host: str = "127.0.0.1"
    api_port: int = 8443
    # A request's body must have arrived this long after its headers were accepted, or it is
    # refused (408): a client that announces a large body and sends it slowly, or never, holds
    # no connection and no buffered body for longer. 64 MiB, the largest body, takes about 6 s
    # at 100 Mbit/s.
    api_body_timeout_seconds: float = 30.0
    dicom_port: int = 11112
    # DICOM: a study closes when nothing arrived for this long; `appliance run` starts the
    # receiver itself unless appliance-dicom.service runs it (the image sets this to false).
    study_quiet_seconds: int = 120
    dicom_in_run: bool = True
    # DICOM: the most decoded pixel data one received instance may declare (Rows x Columns x
    # samples x bytes x frames), checked before any of it is decoded: a few kB of RLE or JPEG can
    # declare 65535 x 65535 pixels (8 GiB), and 16 associations may decode at once. Frames are
    # decoded one at a time, so the frame limit bounds what one association holds: the largest
    # frame of a class the box takes is a DR/CR detector (about 4300 x 3500 at 16 bits, 29 MiB)
    # or a colour SC (4096 x 4096 RGB, 48 MiB), and 16 x 64 MiB = 1 GiB leaves the smallest box
    # (8 GiB) its models. The instance limit bounds decoding time and what the worker loads:
    # 1 GiB is 2,000 frames of 512 x 512 at 16 bits, several times an enhanced CT or MR series.
    dicom_max_frame_bytes: int = 64 * 2**20
    dicom_max_instance_bytes: int = 2**30
    # DICOM: the most associations one address may hold at once, of the receiver's 16: a device
    # that opens connections and says nothing holds each for 30 s, and must not hold them all.
    dicom_max_associations_per_address: int = 8
    log_level: str = "INFO"
    box_id: str = "appliance"
    # Identity: HIPAA 164.312(a)(2)(iii) automatic logoff, and lockout after failed logins.
    session_ttl_minutes: int = 480
    session_idle_minutes: int = 15
    lockout_threshold: int = 5
    lockout_minutes: int = 15
    service_token_days: int = 365
    # Audit: HIPAA asks to keep documentation six years (164.316(b)(2)).
    audit_checkpoint_every: int = 100
    audit_retention_days: int = 6 * 365
    # Housekeeping (appliance/housekeeping.py, hourly): how long the box keeps what it made.
    # Results hold heat maps (about 90 kB a slice) and a finished study's images stay spooled
    # after their results went out; without limits a busy clinic's disk fills within months.
    results_retention_days: int = 90
    studies_retention_days: int = 30
    # Provisioning: systemd-networkd files (None: <state>/network; the image links
    # /etc/systemd/network to it) and the disk recovery key the wizard shows once.
    network_dir: Path | None = None
    luks_recovery_file: Path = DEFAULT_LUKS_RECOVERY_FILE

    @property
    def trust_dir(self) -> Path:
        """Sealed key blobs and the recovery wrap."""
        return self.state_dir / "trust"

    @property
    def identity_db(self) -> Path:
        """Accounts, hashed tokens, break-glass uses (SQLite, WAL)."""
        return self.state_dir / "identity.db"

    @property
    def audit_dir(self) -> Path:
        """The hash-chained audit log."""
        return self.state_dir / "audit"

    @property
    def updates_dir(self) -> Path:
        """The update agent's state, the trusted vendor metadata, staged metadata."""
        return self.state_dir / "updates"

    @property
    def models_dir(self) -> Path:
        """The encrypted model store (per-model A/B slots)."""
        return self.state_dir / "models"

    @property
    def network_folder(self) -> Path:
        """Where the wizard writes the systemd-networkd ``.network`` files."""
        return self.network_dir or self.state_dir / "network"

    @property
    def provisioning_dir(self) -> Path:
        """The wizard's progress, site identity, time zone and self-test results."""
        return self.state_dir / "provisioning"

    @property
    def swtpm_dir(self) -> Path:
        """State of the embedded software TPM, when one is used."""
        return self.state_dir / "swtpm"

    def uses_embedded_swtpm(self) -> bool:
        """Whether this process must start its own swtpm (no TCTI given and no TPM device)."""
        return self.tcti is None and not TPM_DEVICE.exists()

    def device_tcti(self) -> str:
        """The TCTI string when a TPM device or explicit TCTI is used."""
        return self.tcti or f"device:{TPM_DEVICE}"


_ENV = {
    "APPLIANCE_STATE_DIR": "state_dir",
    "APPLIANCE_TCTI": "tcti",
    "APPLIANCE_PCRS": "pcrs",
    "APPLIANCE_API_HOST": "api_host",
    "APPLIANCE_API_PORT": "api_port",
    "APPLIANCE_DICOM_PORT": "dicom_port",
    "APPLIANCE_STUDY_QUIET_SECONDS": "study_quiet_seconds",
    "APPLIANCE_DICOM_IN_RUN": "dicom_in_run",
    "APPLIANCE_LOG_LEVEL": "log_level",
    "APPLIANCE_BOX_ID": "box_id",
    "APPLIANCE_SESSION_IDLE_MINUTES": "session_idle_minutes",
}
_KNOWN = {f.name for f in fields(Config)}
_POSITIVE_INTS = {
    "session_ttl_minutes",
    "session_idle_minutes",
    "lockout_threshold",
    "lockout_minutes",
    "service_token_days",
    "audit_checkpoint_every",
    "audit_retention_days",
    "results_retention_days",
    "studies_retention_days",
    "study_quiet_seconds",
    "dicom_max_frame_bytes",
    "dicom_max_instance_bytes",
    "dicom_max_associations_per_address",
}


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:  # noqa: PLR2004
        raise ConfigError(f"{name} is '{value}', not a port number.", "Use 0 to 65535.")
    return port


def _positive(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise ConfigError(f"{name} is '{value}'; it must be a whole number above 0.")
    return number


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{name} is '{value}'; it must be a number of seconds above 0.")
    return seconds


def _path(name: str, value: Any) -> Path:
    # Path("") is the current folder: an empty setting would scatter state wherever one stands.
    if not str(value).strip():
        raise ConfigError(
            f"{name} is empty.", f"Give {name} a folder or file path, or leave it out."
        )
    return Path(value).expanduser().absolute()


def _pcrs(name: str, value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        return normalize_pcrs(int(p) for p in items if str(p).strip())
    except ValueError as exc:
        raise ConfigError(
            f"pcrs is '{value}', not a list of PCR numbers.", "Write it as 7,11."
        ) from exc


def _log_level(name: str, value: Any) -> str:
    level = str(value).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level '{value}' is unknown.", "Use DEBUG, INFO or WARNING.")
    return level


def _box_id(name: str, value: Any) -> str:
    # It names the box in exported audit messages (an RFC 5424 HOSTNAME): printable, no spaces.
    text = str(value)
    if not 0 < len(text) <= 255 or any(not 33 <= ord(c) <= 126 for c in text):  # noqa: PLR2004
        raise ConfigError(
            f"box_id '{value}' is not usable as a host name.",
            "Use letters, digits, dots and dashes, e.g. clinic-a-box1.",
        )
    return text


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("1", "0", "true", "false", "yes", "no"):
        raise ConfigError(f"{name} is '{value}', not true or false.", "Use true or false.")
    return text in ("1", "true", "yes")


_COERCE: dict[str, Callable[[str, Any], Any]] = {
    "state_dir": _path,
    "pcrs": _pcrs,
    "api_port": _port,
    "api_body_timeout_seconds": _seconds,
    "dicom_port": _port,
    "counter_index": lambda _, v: int(v, 0) if isinstance(v, str) else int(v),
    "log_level": _log_level,
    "box_id": _box_id,
    "dicom_in_run": _bool,
    "network_dir": _path,
    "luks_recovery_file": _path,
}


def _coerce(name: str, value: Any) -> Any:
    """Turn a raw value from TOML, the environment or a flag into the field's type."""
    if name in _POSITIVE_INTS:
        return _positive(name, value)
    if name in _COERCE:
        return _COERCE[name](name, value)
    return None if value in ("", None) else str(value)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc}.", "Fix or remove it.") from exc
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting '{unknown[0]}'.",
            f"Known settings: {', '.join(sorted(_KNOWN))}.",
        )
    return data


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config from the file, the environment and explicit overrides (in that order).

    Raises ConfigError naming the bad setting.
    """
    env = os.environ if env is None else env
    if file is None and env.get("APPLIANCE_CONFIG"):
        file = Path(env["APPLIANCE_CONFIG"])
    raw: dict[str, Any] = _read_file(file or DEFAULT_CONFIG_FILE)
    raw.update({key: env[var] for var, key in _ENV.items() if env.get(var)})
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return replace(Config(), **{k: _coerce(k, v) for k, v in raw.items()})
