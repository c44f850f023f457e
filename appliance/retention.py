"""The time retention counts from: the wall clock, but never faster than twice real time.

The box has no trusted clock (ADR 0004): anyone at the console may set it, and the wizard does.
Housekeeping deletes by age, so a clock set ten years ahead by one wrong digit would delete
every result, every finished study and the whole audit trail (kept six years) at the next
round. :class:`RetentionClock` keeps the time it last trusted in ``<state>/retention.json`` and
lets it advance by at most twice the real time elapsed since (``CLOCK_BOOTTIME``: since the last
round in this boot, or, after a restart, at least since the boot). So a forward jump is spent
at that pace: a clock put right within days costs days of retention, and a box that was off
catches up with the wall clock in as long as it was off. It never moves back; a clock behind it
makes retention count from the clock (deleting less, never more). A new box starts it no
earlier than this release's date (:data:`RELEASED`), so that a clock behind at first boot and set
right in the wizard is not taken for a jump. Why so: ADR 0010.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from appliance.fsutil import atomic_write
from appliance.setup.clock import SET_CLOCK_HINT

log = logging.getLogger(__name__)

CATCH_UP = 2.0  # how much faster than real time the trusted time may advance
# No clock on a box running this release can be right before this day (move it on at each
# release): a new box whose clock is behind starts its retention clock here, not in the past, so
# that the technician who sets the clock right in the wizard does not look like a jump forward
# (systemd's own floor, TIME_EPOCH, is the date systemd was built: years behind).
RELEASED = datetime(2026, 11, 29, tzinfo=UTC).timestamp()
_DAY = 86400.0
FILE_NAME = "retention.json"  # in the state folder
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def uptime() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME: no one can set it)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""  # no /proc: every round counts as a first one after a boot, which is safe


def _read_state(path: Path) -> dict[str, float | str]:
    """``retention.json`` as :class:`RetentionClock` saves it; raises OSError, ValueError,
    KeyError or TypeError when it is missing or damaged."""
    data = json.loads(path.read_bytes())
    return {"trusted": float(data["trusted"]), "boot": str(data["boot"]),
            "uptime": float(data["uptime"])}  # fmt: skip


@dataclass
class RetentionClock:
    """:meth:`now` for housekeeping; the clocks are parameters so that tests can move them."""

    path: Path
    wall: Callable[[], float] = time.time
    uptime: Callable[[], float] = uptime
    boot_id: Callable[[], str] = _boot_id
    floor: float = RELEASED

    def now(self) -> float:
        """The time retention counts from at this round (remembered for the next)."""
        wall, up, boot = self.wall(), self.uptime(), self.boot_id()
        saved = self._load()
        if saved is None:  # a new box: its clock may be behind (a dead RTC), never before this
            trusted = max(wall, self.floor)
        else:
            elapsed = up - float(saved["uptime"]) if saved["boot"] == boot and boot else up
            ahead = float(saved["trusted"]) + CATCH_UP * max(elapsed, 0.0)
            trusted = max(float(saved["trusted"]), min(wall, ahead))
        self._save({"trusted": trusted, "boot": boot, "uptime": up})
        if wall < self.floor - _DAY:
            log.warning(
                "housekeeping: the clock shows %s, before this software was made (%s): nothing is "
                "deleted until it is right. %s", _utc(wall), _utc(self.floor), SET_CLOCK_HINT,
            )  # fmt: skip
        elif wall - trusted > _DAY:
            log.warning(
                "housekeeping: the clock is %.0f days ahead of the time retention counts from "
                "(%s); nothing is deleted before its time: retention catches up at twice real "
                "time. %s", (wall - trusted) / _DAY, _utc(trusted), SET_CLOCK_HINT,
            )  # fmt: skip
        return min(trusted, wall)

    def _load(self) -> dict[str, float | str] | None:
        try:
            return _read_state(self.path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("housekeeping: %s unreadable (%s); retention counts from the clock",
                        self.path, exc)  # fmt: skip
            return None

    def _save(self, state: dict[str, float | str]) -> None:
        atomic_write(self.path, json.dumps(state).encode())


@dataclass
class StampClock:
    """The time a new record's retention counts from (``created``): the wall clock, but never
    behind the retention clock's trusted time plus the real time since it was saved.

    A result made while the clock is behind (a dead RTC, a wrong date typed in) would otherwise
    look as old as the clock is wrong, and go at the first round after the clock is set right:
    months early, or at once. The floor is never ahead of real time (the trusted time never is,
    and only ``CLOCK_BOOTTIME`` is added to it), so a right clock always wins; a clock set ahead
    stamps ahead, as before (kept longer, never deleted early). ``retention.json`` is read again
    every ``reload_s`` seconds; between reads the floor advances with the time since boot.
    """

    path: Path
    wall: Callable[[], float] = time.time
    uptime: Callable[[], float] = uptime
    boot_id: Callable[[], str] = _boot_id
    reload_s: float = 300.0
    _floor: tuple[float, float] | None = None  # (trusted time, uptime it stands for)
    _read_at: float | None = None

    def __call__(self) -> float:
        up = self.uptime()
        if self._read_at is None or up - self._read_at >= self.reload_s or up < self._read_at:
            self._read_at, self._floor = up, self._read(up)
        if self._floor is None:
            return self.wall()
        trusted, at = self._floor
        return max(self.wall(), trusted + max(up - at, 0.0))

    def _read(self, up: float) -> tuple[float, float] | None:
        try:
            saved = _read_state(self.path)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # none yet, or damaged (housekeeping says so): the wall clock alone
        boot, trusted, saved_up = saved["boot"], float(saved["trusted"]), float(saved["uptime"])
        # Saved in another boot: how long ago is unknown, so it counts from now (never ahead).
        return trusted, (saved_up if boot == self.boot_id() and boot else up)
