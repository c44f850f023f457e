"""The appliance's configuration: one frozen, typed object built once at each entry point.

Sources, later ones winning: built-in defaults, a TOML file (``/etc/appliance/appliance.toml``
on the box, or the one named by ``--config`` / ``APPLIANCE_CONFIG``), ``APPLIANCE_*`` environment
variables, command-line flags. Nothing reads configuration anywhere else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
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
    dicom_port: int = 11112
    log_level: str = "INFO"

    @property
    def trust_dir(self) -> Path:
        """Sealed key blobs and the recovery wrap."""
        return self.state_dir / "trust"

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
    "APPLIANCE_LOG_LEVEL": "log_level",
}
_KNOWN = {f.name for f in fields(Config)}


def _port(name: str, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = -1
    if not 0 <= port <= 65535:  # noqa: PLR2004
        raise ConfigError(f"{name} is '{value}', not a port number.", "Use 0 to 65535.")
    return port


def _coerce(name: str, value: Any) -> Any:
    """Turn a raw value from TOML, the environment or a flag into the field's type."""
    if name == "state_dir":
        return Path(value).expanduser().absolute()
    if name == "pcrs":
        items = value.split(",") if isinstance(value, str) else value
        try:
            return normalize_pcrs(int(p) for p in items if str(p).strip())
        except ValueError as exc:
            raise ConfigError(
                f"pcrs is '{value}', not a list of PCR numbers.", "Write it as 7,11."
            ) from exc
    if name in ("api_port", "dicom_port"):
        return _port(name, value)
    if name == "counter_index":
        return int(value, 0) if isinstance(value, str) else int(value)
    if name == "log_level":
        level = str(value).upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log_level '{value}' is unknown.", "Use DEBUG, INFO or WARNING.")
        return level
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
