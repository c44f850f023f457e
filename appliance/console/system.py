"""CPU, memory, disk and temperatures read from /proc and /sys (psutil is not a dependency).

:class:`SystemMonitor` keeps the previous CPU counters so that each sample is the load since the
last one (the first is the average since boot) and the recent samples for the sparklines.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HISTORY = 60  # samples kept for the sparklines


@dataclass(frozen=True)
class Temperature:
    sensor: str
    celsius: float


@dataclass(frozen=True)
class SystemSample:
    """One look at the machine's load."""

    at: float
    cpu_percent: float
    memory_percent: float
    memory_total_gib: float
    disk_percent: float
    disk_free_gib: float
    temperatures: tuple[Temperature, ...]


def _cpu_counters(proc: Path) -> tuple[int, int]:
    """(busy, total) jiffies from the first line of /proc/stat."""
    fields = (proc / "stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait  # noqa: PLR2004
    total = sum(values[:8])
    return total - idle, total


def _memory(proc: Path) -> tuple[float, float]:
    """(percent used, total GiB) from /proc/meminfo."""
    info: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            info[key] = int(parts[0])
    total = info.get("MemTotal", 0)
    available = info.get("MemAvailable", info.get("MemFree", 0))
    percent = 100.0 * (total - available) / total if total else 0.0
    return percent, total / 1024**2


def temperatures(sys_root: Path) -> tuple[Temperature, ...]:
    """Every thermal zone's temperature (none in most containers and VMs)."""
    found: list[Temperature] = []
    for zone in sorted((sys_root / "class" / "thermal").glob("thermal_zone*")):
        try:
            milli = int((zone / "temp").read_text().strip())
            kind = (zone / "type").read_text().strip()
        except (OSError, ValueError):
            continue
        found.append(Temperature(kind or zone.name, milli / 1000.0))
    return tuple(found)


class SystemMonitor:
    """Samples the machine; not thread-safe (one health worker at a time uses it)."""

    def __init__(
        self,
        disk_path: Path,
        *,
        proc: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.disk_path = disk_path
        self.proc = proc
        self.sys_root = sys_root
        self.clock = clock
        self._last: tuple[int, int] | None = None
        self.history: deque[SystemSample] = deque(maxlen=HISTORY)

    def _cpu_percent(self) -> float:
        busy, total = _cpu_counters(self.proc)
        last_busy, last_total = self._last or (0, 0)
        self._last = (busy, total)
        span = total - last_total
        return max(0.0, min(100.0, 100.0 * (busy - last_busy) / span)) if span > 0 else 0.0

    def _disk_usage(self) -> tuple[float, float]:
        path = self.disk_path
        while not path.exists() and path != path.parent:
            path = path.parent
        usage = shutil.disk_usage(path)
        return 100.0 * usage.used / usage.total if usage.total else 0.0, usage.free / 1024**3

    def sample(self) -> tuple[SystemSample, ...]:
        """Take one sample; return the recent ones, oldest first."""
        memory, memory_total = _memory(self.proc)
        disk, free = self._disk_usage()
        self.history.append(
            SystemSample(
                at=self.clock(),
                cpu_percent=self._cpu_percent(),
                memory_percent=memory,
                memory_total_gib=memory_total,
                disk_percent=disk,
                disk_free_gib=free,
                temperatures=temperatures(self.sys_root),
            )
        )
        return tuple(self.history)
