"""Hardware profiles: the box models a profile describes, read from ``hardware/*.toml``.

Parsing is pure; each error names the file and the dotted key that is wrong.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from appliance.errors import ConfigError
from appliance.inference.errors import InferenceError
from appliance.updates.manifest import DeviceKind

# The profiles folder, first match wins: $APPLIANCE_HARDWARE_DIR, the checkout's hardware/ beside
# the package (development), the image's copy (the wheel does not carry data folders).
HARDWARE_DIR_ENV = "APPLIANCE_HARDWARE_DIR"
INSTALLED_PROFILES = Path("/opt/appliance/hardware")
GIB = 1 << 30

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FLAG = re.compile(r"[a-z0-9_]{1,32}")
_KINDS = re.compile("|".join(DeviceKind))
_TOP = ("name", "description", "int8_preferred", "devices", "tpm", "memory", "disk", "cpu")
PROFILE_HINT = "Fix the profile; the format is described in hardware/README.md."

T = TypeVar("T")


class NoDeviceError(InferenceError):
    """The model's manifest allows no inference device this box offers."""


class Severity(StrEnum):
    ERROR = "error"  # the box is not the one the profile describes, or is unsafe to use
    WARNING = "warning"  # works, but someone should look


@dataclass(frozen=True)
class Mismatch:
    """One difference between a profile and the machine: what is wrong and what to do."""

    severity: Severity
    subject: str  # "NPU", "GPU", "CPU", "cpu:avx2", "TPM", "memory", "disk", "openvino"
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.message}. {self.hint}"


@dataclass(frozen=True)
class HardwareProfile:
    """One supported box model, as its ``hardware/<name>.toml`` describes it."""

    name: str
    description: str
    expected_devices: tuple[DeviceKind, ...]
    interactive_order: tuple[DeviceKind, ...]
    batch_order: tuple[DeviceKind, ...]
    tpm_required: bool
    min_memory_gib: float
    min_disk_gib: float
    cpu_flags: tuple[str, ...]
    int8_preferred: bool  # run a model's int8 build when it ships one beside the f32 build
    source: Path

    def order(self, *, interactive: bool) -> tuple[DeviceKind, ...]:
        return self.interactive_order if interactive else self.batch_order


@dataclass(frozen=True)
class _Table:
    """One table of a profile file; its errors name the file and the dotted key."""

    path: Path
    prefix: str
    data: Mapping[str, Any]

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(
            f"hardware profile {self.path}: '{self.prefix}{key}' {problem}.", PROFILE_HINT
        )

    def only(self, keys: Collection[str]) -> None:
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            raise self.fail(unknown[0], f"is not a known key; known: {', '.join(keys)}")
        missing = [k for k in keys if k not in self.data]
        if missing:
            raise self.fail(missing[0], "is missing")

    def get(self, key: str, kind: type[T], what: str) -> T:
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"must be {what}, not {value!r}")
        return value

    def table(self, key: str, keys: Collection[str]) -> _Table:
        table = _Table(self.path, f"{self.prefix}{key}.", self.get(key, dict, "a table"))
        table.only(keys)
        return table

    def gib(self, key: str) -> float:
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(key, f"must be a positive number of GiB, not {value!r}")
        return float(value)

    def strings(self, key: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
        value = self.get(key, list, f"a list of {what}")
        if not value or len(set(map(str, value))) != len(value):
            raise self.fail(key, f"must list distinct {what}, not {value!r}")
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise self.fail(key, f"has the entry {item!r}; it must list {what}")
        return tuple(value)

    def kinds(self, key: str) -> tuple[DeviceKind, ...]:
        names = self.strings(key, _KINDS, "OpenVINO device kinds (CPU, GPU, NPU)")
        return tuple(map(DeviceKind, names))


def load_profile(path: Path) -> HardwareProfile:
    """Read one profile; raise ConfigError naming the file and the key that is wrong."""
    try:
        with path.open("rb") as fh:
            top = _Table(path, "", tomllib.load(fh))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read hardware profile {path}: {exc}.", PROFILE_HINT) from exc
    top.only(_TOP)
    devices = top.table("devices", ("expected", "preferred_order"))
    order = devices.table("preferred_order", ("interactive", "batch"))
    name = top.get("name", str, "a string")
    if not _NAME.fullmatch(name) or name != path.stem:
        raise top.fail("name", f"is '{name}'; it must be the file's name, '{path.stem}'")
    expected = devices.kinds("expected")
    if DeviceKind.CPU not in expected:
        raise devices.fail("expected", "must include CPU, OpenVINO's fallback on every box")
    for key in ("interactive", "batch"):
        if not set(order.kinds(key)) <= set(expected):
            raise order.fail(key, f"may only name devices in devices.expected {list(expected)}")
    return HardwareProfile(
        name=name,
        description=top.get("description", str, "a string"),
        expected_devices=expected,
        interactive_order=order.kinds("interactive"),
        batch_order=order.kinds("batch"),
        tpm_required=top.table("tpm", ("required",)).get("required", bool, "true or false"),
        min_memory_gib=top.table("memory", ("min_gib",)).gib("min_gib"),
        min_disk_gib=top.table("disk", ("min_gib",)).gib("min_gib"),
        cpu_flags=top.table("cpu", ("flags",)).strings("flags", _FLAG, "/proc/cpuinfo flags"),
        int8_preferred=top.get("int8_preferred", bool, "true or false"),
        source=path,
    )


def load_profiles(folder: Path) -> dict[str, HardwareProfile]:
    """Every ``*.toml`` profile in ``folder`` by name; ConfigError if none or one is invalid."""
    paths = sorted(folder.glob("*.toml")) if folder.is_dir() else []
    if not paths:
        raise ConfigError(
            f"no hardware profiles in {folder}.",
            f"Install the image's hardware/ folder there, or point {HARDWARE_DIR_ENV} at one.",
        )
    return {profile.name: profile for profile in map(load_profile, paths)}


def profiles_dir(env: Mapping[str, str] | None = None) -> Path:
    """The profiles folder: ``$APPLIANCE_HARDWARE_DIR``, the checkout's, or the installed one."""
    env = os.environ if env is None else env
    if env.get(HARDWARE_DIR_ENV):
        return Path(env[HARDWARE_DIR_ENV])
    checkout = Path(__file__).resolve().parent.parent.parent / "hardware"
    return checkout if checkout.is_dir() else INSTALLED_PROFILES
