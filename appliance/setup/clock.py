"""Time zone and clock: the zone is checked against the zoneinfo database and kept in the state
folder (the image links ``/etc/localtime`` to ``<state>/provisioning/localtime``); the system clock
is set with ``timedatectl set-time``, only on the box itself."""

from __future__ import annotations

import json
import os
import zoneinfo
from datetime import datetime
from pathlib import Path

from appliance.config import DEFAULT_STATE_DIR, Config
from appliance.errors import ConfigError
from appliance.fsutil import atomic_write, fsync_dir
from appliance.run import run

ZONEINFO = Path("/usr/share/zoneinfo")
# What every warning about a clock that jumped tells the reader to do (the wizard's step name).
SET_CLOCK_HINT = (
    "If the clock is wrong, set it in the console (Provisioning > Time zone and clock)."
)
CLOCK_FORMAT = "%Y-%m-%d %H:%M:%S"


def check_timezone(name: str) -> str:
    """``name`` if it is a zone of the zoneinfo database; ConfigError otherwise."""
    name = name.strip()
    if name not in zoneinfo.available_timezones():
        close = sorted(z for z in zoneinfo.available_timezones() if name and name.lower()
                       in z.lower())[:3]  # fmt: skip
        hint = f"Did you mean {', '.join(close)}?" if close else "Use a name like Europe/Berlin."
        raise ConfigError(f"{name!r} is not a time zone of the zoneinfo database.", hint)
    return name


def save_timezone(config: Config, name: str) -> Path:
    """Record the zone: ``timezone`` (its name) and ``localtime`` (a link into zoneinfo)."""
    name = check_timezone(name)
    folder = config.provisioning_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(folder / "timezone", f"{name}\n".encode(), mode=0o644)
    link, tmp = folder / "localtime", folder / ".localtime.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(ZONEINFO / name, tmp)
    tmp.replace(link)  # a link is swapped in one rename, like a file
    fsync_dir(folder)
    return link


def saved_timezone(config: Config) -> str | None:
    try:
        return (config.provisioning_dir / "timezone").read_text().strip() or None
    except FileNotFoundError:
        return None


def parse_clock(text: str) -> datetime:
    """A wall-clock time typed as ``YYYY-MM-DD HH:MM[:SS]`` (in the box's time zone)."""
    text = " ".join(text.split())
    for fmt in (CLOCK_FORMAT, "%Y-%m-%d %H:%M"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise ConfigError(f"{text!r} is not a date and time.", "Write it as 2026-11-27 14:05.")


def _noted(config: Config) -> Path:
    return config.provisioning_dir / "clock-sets.json"


def note_clock_set(config: Config, change: dict[str, str]) -> None:
    """Keep a clock change made before enrollment (the audit trail has no key yet) until
    enrollment records it in the trail (see console.provision)."""
    changes = [*noted_clock_sets(config), change]
    config.provisioning_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(_noted(config), json.dumps(changes).encode(), mode=0o600)


def noted_clock_sets(config: Config) -> list[dict[str, str]]:
    """The clock changes :func:`note_clock_set` kept, oldest first (none when unreadable: the
    file is written atomically, so only tampering leaves it so)."""
    try:
        changes = json.loads(_noted(config).read_bytes())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(changes, list):
        return []
    return [{str(k): str(v) for k, v in c.items()} for c in changes if isinstance(c, dict)]


def forget_clock_sets(config: Config) -> None:
    if _noted(config).exists():
        _noted(config).unlink()
        fsync_dir(config.provisioning_dir)


def set_clock_command(when: datetime) -> list[str]:
    return ["timedatectl", "set-time", when.strftime(CLOCK_FORMAT)]


def on_the_box(config: Config) -> bool:
    """Whether this process runs on the appliance itself (its state folder, a TPM device), the
    only place the wizard may set the system clock: never a developer's or a test machine's."""
    hardware_tpm = not config.uses_embedded_swtpm() and config.device_tcti().startswith("device:")
    return config.state_dir == DEFAULT_STATE_DIR and hardware_tpm


def set_system_clock(when: datetime) -> None:
    """Set the clock through systemd (raises CommandError, e.g. while NTP sync is on)."""
    run(set_clock_command(when), timeout=10)
