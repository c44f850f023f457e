"""Hardware profiles of the supported boxes, what this machine really has, and the device choice.

A profile (``hardware/<name>.toml``, format in ``hardware/README.md``) names the OpenVINO devices a
box model should have, their order of preference for interactive and batch work, the TPM, memory,
the state partition's size and the CPU flags OpenVINO's CPU plugin relies on. :func:`detect` is
the only part that touches the machine (OpenVINO, ``/dev``, ``/proc``, ``os.statvfs``); parsing,
:func:`compare`, :func:`best_profile`, :func:`report` and :func:`choose_device` are pure.

Device choice (:func:`choose_device`): the first kind in the profile's order for the work at hand
that the model's manifest allows and OpenVINO offers; kinds the order leaves out come after it, in
the default order (interactive GPU, NPU, CPU; batch NPU, GPU, CPU). The answer is always a concrete
device name: the NPU is used only when the manifest names it, because OpenVINO's ``AUTO`` leaves it
out of its candidates by default, and a manifest entry ``AUTO`` means GPU or CPU for that reason.
"""

from __future__ import annotations

import os
import re
import textwrap
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from appliance.config import TPM_DEVICE
from appliance.errors import ConfigError
from appliance.inference.engine import available_devices
from appliance.inference.errors import InferenceError
from appliance.updates.manifest import DeviceKind

# The profiles folder, first match wins: $APPLIANCE_HARDWARE_DIR, the checkout's hardware/ beside
# the package (development), the image's copy (the wheel does not carry data folders).
HARDWARE_DIR_ENV = "APPLIANCE_HARDWARE_DIR"
INSTALLED_PROFILES = Path("/opt/appliance/hardware")
GIB = 1 << 30
# MemTotal lacks what firmware and the kernel reserve (2-6 %): a 16 GiB box reports about 15.3.
MEMORY_SLACK = 0.9
# Below this share of the profile's partition size left free, the box warns (spool, new models).
LOW_DISK_SHARE = 0.1
DEFAULT_ORDER = {
    True: (DeviceKind.GPU, DeviceKind.NPU, DeviceKind.CPU),
    False: (DeviceKind.NPU, DeviceKind.GPU, DeviceKind.CPU),
}
# OpenVINO's AUTO device picks among these; the NPU joins only when named explicitly.
AUTO_KINDS = (DeviceKind.GPU, DeviceKind.CPU)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FLAG = re.compile(r"[a-z0-9_]{1,32}")
_KINDS = re.compile("|".join(DeviceKind))
_TOP = ("name", "description", "int8_preferred", "devices", "tpm", "memory", "disk", "cpu")
_HINT = "Fix the profile; the format is described in hardware/README.md."
_FLAG_USE = {
    "sse4_2": "OpenVINO's CPU plugin needs to run at all",
    "avx2": "OpenVINO's CPU plugin needs for its fast f32 and int8 kernels",
    "fma": "OpenVINO's CPU plugin uses for its f32 kernels",
    "avx_vnni": "OpenVINO's CPU plugin uses for int8 dot products on Core CPUs",
    "avx512f": "OpenVINO's CPU plugin uses for its wide kernels on Xeon",
    "avx512_vnni": "OpenVINO's CPU plugin uses for int8 dot products on Xeon",
    "amx_tile": "OpenVINO's CPU plugin uses for int8 and bf16 matrix work on Xeon",
}
T = TypeVar("T")

# What each mismatch says and what to do about it. {node} is the device node that is present.
_MISSING = {
    (DeviceKind.NPU, True): (
        "the profile expects an NPU but OpenVINO sees none though {node} exists",
        "Install the NPU user-space driver (intel-level-zero-npu from linux-npu-driver) and let "
        "the service user open /dev/accel (render group).",
    ),
    (DeviceKind.NPU, False): (
        "the profile expects an NPU but OpenVINO sees none and /dev/accel is empty",
        "Install the intel-npu driver (linux-npu-driver; the kernel's intel_vpu module needs "
        "Linux 6.3 or newer) and check `dmesg | grep intel_vpu`.",
    ),
    (DeviceKind.GPU, True): (
        "the profile expects a GPU but OpenVINO sees none though {node} exists",
        "Install Intel's compute runtime (intel-opencl-icd) and add the service user to the "
        "render group.",
    ),
    (DeviceKind.GPU, False): (
        "the profile expects a GPU but OpenVINO sees none and /dev/dri has no render node",
        "Enable the integrated GPU in the firmware setup and check that the i915 or xe driver "
        "loaded: `dmesg | grep -E 'i915|xe'`.",
    ),
    (DeviceKind.CPU, False): (
        "OpenVINO offers no CPU device: its CPU plugin is missing",
        "Reinstall the system image; its OpenVINO runtime is incomplete.",
    ),
}
_REINSTALL = "Reinstall the system image; its OpenVINO runtime is damaged."
_OTHER_BOX = (
    "This may be another box model: `appliance hardware` names the best-fitting profile; "
    "choose it in the configuration."
)
_OTHER_CPU = (
    "This is not the CPU the profile describes: choose the profile that fits this box, or let "
    "the hypervisor pass the host CPU's features through (`-cpu host`)."
)
_NO_TPM = (
    "no TPM device: the box runs on the embedded software TPM, which protects nothing at rest "
    "— development only"
)
_ENABLE_TPM = (
    "Enable the TPM (Intel PTT) in the firmware setup, then check `ls /dev/tpmrm0` and "
    "`dmesg | grep -i tpm`."
)
_GROW_DISK = "Install the image on a larger disk, or grow the state partition."
_FREE_DISK = (
    "Export and remove old results and studies before the DICOM spool and model updates fail."
)


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
class DetectedHardware:
    """What :func:`detect` found on this machine."""

    openvino_devices: tuple[str, ...]  # as OpenVINO names them: "CPU", "GPU.0", "NPU"
    openvino_error: str | None  # why OpenVINO could not list its devices, if it could not
    accel_nodes: tuple[str, ...]  # /dev/accel/accel* (the NPU's kernel driver, intel_vpu)
    render_nodes: tuple[str, ...]  # /dev/dri/renderD* (the iGPU's kernel driver, i915 or xe)
    cpu_model: str
    cpu_flags: frozenset[str]
    tpm_device: Path | None  # the TPM resource manager's node when it exists
    swtpm_state: Path | None  # the embedded swtpm's state folder when one was used
    memory_gib: float | None  # MemTotal; None when /proc/meminfo could not be read
    disk_path: Path  # where the state partition was measured (the state folder or its parent)
    disk_total_gib: float
    disk_free_gib: float

    def device_kinds(self) -> frozenset[DeviceKind]:
        return frozenset(k for k in map(_kind, self.openvino_devices) if k is not None)


@dataclass(frozen=True)
class _Table:
    """One table of a profile file; its errors name the file and the dotted key."""

    path: Path
    prefix: str
    data: Mapping[str, Any]

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"hardware profile {self.path}: '{self.prefix}{key}' {problem}.", _HINT)

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
        raise ConfigError(f"cannot read hardware profile {path}: {exc}.", _HINT) from exc
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
    checkout = Path(__file__).resolve().parent.parent / "hardware"
    return checkout if checkout.is_dir() else INSTALLED_PROFILES


def detect(
    core: Any | None,
    state_dir: Path,
    *,
    available: Sequence[str] | None = None,
    tpm_device: Path = TPM_DEVICE,
    proc: Path = Path("/proc"),
    dev: Path = Path("/dev"),
) -> DetectedHardware:
    """Look at this machine: OpenVINO's devices (from ``core``, or ``available`` when given),
    the NPU and GPU nodes under ``dev``, the CPU and memory from ``proc``, the TPM node, the
    embedded swtpm's state and the state partition holding ``state_dir``.

    Raises ValueError when given neither ``core`` nor ``available``; an OpenVINO failure is
    recorded in ``openvino_error`` instead, so that the report still shows everything else.
    """
    devices, error = _openvino_devices(core, available)
    cpu_model, flags = _cpuinfo(proc / "cpuinfo")
    disk_path, total, free = _disk(state_dir)
    swtpm = state_dir / "swtpm"  # Config.swtpm_dir
    return DetectedHardware(
        openvino_devices=devices,
        openvino_error=error,
        accel_nodes=_nodes(dev / "accel", "accel"),
        render_nodes=_nodes(dev / "dri", "renderD"),
        cpu_model=cpu_model,
        cpu_flags=flags,
        tpm_device=tpm_device if tpm_device.exists() else None,
        swtpm_state=swtpm if swtpm.is_dir() else None,
        memory_gib=_memory_gib(proc / "meminfo"),
        disk_path=disk_path,
        disk_total_gib=total,
        disk_free_gib=free,
    )


def _openvino_devices(
    core: Any | None, available: Sequence[str] | None
) -> tuple[tuple[str, ...], str | None]:
    if available is not None:
        return tuple(map(str, available)), None
    if core is None:
        raise ValueError("detect() needs an OpenVINO core or the list of available devices")
    try:
        return tuple(available_devices(core)), None
    except InferenceError as exc:
        return (), exc.message


def _nodes(folder: Path, prefix: str) -> tuple[str, ...]:
    return tuple(sorted(p.name for p in folder.glob(f"{prefix}*"))) if folder.is_dir() else ()


def _cpuinfo(path: Path) -> tuple[str, frozenset[str]]:
    """The first CPU's model name and flags (hybrid Core parts report the same flags per core)."""
    fields: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name", "unknown CPU"), frozenset(fields.get("flags", "").split())


def _memory_gib(path: Path) -> float | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "MemTotal:" and parts[1].isdigit():  # noqa: PLR2004
            return int(parts[1]) * 1024 / GIB
    return None


def _disk(state_dir: Path) -> tuple[Path, float, float]:
    path = state_dir.absolute()
    while not path.exists():  # before the first start: measure where it will be created
        path = path.parent
    st = os.statvfs(path)
    return path, st.f_blocks * st.f_frsize / GIB, st.f_bavail * st.f_frsize / GIB


def compare(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    """Every difference between ``profile`` and ``detected``, errors first."""
    found = [
        *_devices(profile, detected),
        *_cpu(profile, detected),
        *_tpm(profile, detected),
        *_memory(profile, detected),
        *_disk_space(profile, detected),
    ]
    return sorted(found, key=lambda m: m.severity != Severity.ERROR)


def _devices(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    if detected.openvino_error:
        reason = f"OpenVINO could not list its devices: {detected.openvino_error}"
        return [Mismatch(Severity.ERROR, "openvino", reason, _REINSTALL)]
    kinds = detected.device_kinds()
    found = [_missing(k, detected) for k in profile.expected_devices if k not in kinds]
    for kind in sorted(kinds - set(profile.expected_devices)):
        reason = f"OpenVINO offers a {kind} the profile does not expect"
        found.append(Mismatch(Severity.WARNING, kind, reason, _OTHER_BOX))
    return found


def _missing(kind: DeviceKind, detected: DetectedHardware) -> Mismatch:
    nodes = {
        DeviceKind.NPU: [f"/dev/accel/{n}" for n in detected.accel_nodes],
        DeviceKind.GPU: [f"/dev/dri/{n}" for n in detected.render_nodes],
    }.get(kind, [])
    message, hint = _MISSING[kind, bool(nodes)]
    return Mismatch(Severity.ERROR, kind, message.format(node=nodes[0] if nodes else ""), hint)


def _cpu(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    missing = [f for f in profile.cpu_flags if f not in detected.cpu_flags]
    return [
        Mismatch(
            Severity.ERROR,
            f"cpu:{flag}",
            f"the CPU lacks {flag}, which {_FLAG_USE.get(flag, 'the profile expects')}",
            _OTHER_CPU,
        )
        for flag in missing
    ]


def _tpm(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    if detected.tpm_device is not None:
        return []
    severity = Severity.ERROR if profile.tpm_required else Severity.WARNING
    return [Mismatch(severity, "TPM", _NO_TPM, _ENABLE_TPM)]


def _memory(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    have, need = detected.memory_gib, _num(profile.min_memory_gib)
    if have is None:
        reason = "the memory size could not be read from /proc/meminfo"
        return [Mismatch(Severity.WARNING, "memory", reason, "Check that /proc is mounted.")]
    if have >= profile.min_memory_gib * MEMORY_SLACK:
        return []
    reason = f"{have:.1f} GiB of memory, the profile needs {need}"
    hint = f"Fit at least {need} GiB of RAM, or choose the profile that fits this box."
    return [Mismatch(Severity.ERROR, "memory", reason, hint)]


def _disk_space(profile: HardwareProfile, detected: DetectedHardware) -> list[Mismatch]:
    d, need = detected, profile.min_disk_gib
    if d.disk_total_gib < need:
        reason = f"the state partition ({d.disk_path}) holds {d.disk_total_gib:.1f} GiB, "
        reason += f"the profile needs {_num(need)}"
        return [Mismatch(Severity.ERROR, "disk", reason, _GROW_DISK)]
    if d.disk_free_gib < need * LOW_DISK_SHARE:
        reason = f"only {d.disk_free_gib:.1f} GiB free on the state partition ({d.disk_path})"
        return [Mismatch(Severity.WARNING, "disk", reason, _FREE_DISK)]
    return []


def _num(value: float) -> str:
    return f"{value:g}"


def best_profile(
    profiles: Mapping[str, HardwareProfile], detected: DetectedHardware
) -> HardwareProfile:
    """The profile with the fewest errors, then the most expected devices present, then the
    fewest warnings (then by name, so the answer is stable). ConfigError if there is none."""
    if not profiles:
        raise ConfigError("there are no hardware profiles to choose from.", _HINT)
    kinds = detected.device_kinds()

    def rank(profile: HardwareProfile) -> tuple[int, int, int, str]:
        found = compare(profile, detected)
        errors = sum(m.severity == Severity.ERROR for m in found)
        matched = len(set(profile.expected_devices) & kinds)
        return errors, -matched, len(found) - errors, profile.name

    return min(profiles.values(), key=rank)


def report(
    profile: HardwareProfile, detected: DetectedHardware, mismatches: Sequence[Mismatch]
) -> str:
    """A multi-line, human-readable account of the machine against ``profile``."""
    d = detected
    tpm = f"none; the embedded swtpm stands in (state in {d.swtpm_state or 'not made yet'})"
    tpm = str(d.tpm_device) if d.tpm_device else tpm
    memory = "unknown" if d.memory_gib is None else f"{d.memory_gib:.1f} GiB"
    ov_line = ", ".join(d.openvino_devices) or f"no device ({d.openvino_error or 'none found'})"
    lines = [
        f"profile          {profile.name}: {profile.description}",
        f"CPU              {d.cpu_model}",
        f"CPU flags        {_flags_line(profile, d)}",
        f"OpenVINO         {ov_line}",
        f"/dev/accel       {', '.join(d.accel_nodes) or 'empty'}",
        f"/dev/dri         {', '.join(d.render_nodes) or 'no render node'}",
        f"TPM              {tpm}",
        f"memory           {memory} (profile: {_num(profile.min_memory_gib)} GiB)",
        f"state partition  {d.disk_total_gib:.1f} GiB, {d.disk_free_gib:.1f} GiB free at "
        f"{d.disk_path} (profile: {_num(profile.min_disk_gib)} GiB)",
        f"device choice    interactive {_chosen(d, profile, interactive=True)}, "
        f"batch {_chosen(d, profile, interactive=False)} (for a model that runs anywhere)",
        "",
    ]
    errors = sum(m.severity == Severity.ERROR for m in mismatches)
    if not mismatches:
        lines.append("result           this machine matches the profile")
    else:
        lines.append(f"result           {errors} error(s), {len(mismatches) - errors} warning(s)")
    for m in mismatches:
        first, rest = f"  {m.severity.upper():8} ", " " * 11
        lines += textwrap.wrap(f"{m.message}.", 99, initial_indent=first, subsequent_indent=rest)
        lines += textwrap.wrap(m.hint, 99, initial_indent=rest, subsequent_indent=rest)
    return "\n".join(lines)


def _flags_line(profile: HardwareProfile, detected: DetectedHardware) -> str:
    missing = [f for f in profile.cpu_flags if f not in detected.cpu_flags]
    have = [f for f in profile.cpu_flags if f in detected.cpu_flags]
    extra = sorted(f for f in _FLAG_USE if f in detected.cpu_flags and f not in profile.cpu_flags)
    text = " ".join(have) or "none of the profile's"
    text += f"; MISSING {' '.join(missing)}" if missing else ""
    return text + (f"; also {' '.join(extra)}" if extra else "")


def _chosen(detected: DetectedHardware, profile: HardwareProfile, *, interactive: bool) -> str:
    try:
        return choose_device(
            detected.openvino_devices,
            (*AUTO_KINDS, DeviceKind.NPU),
            interactive=interactive,
            profile=profile,
        )
    except NoDeviceError:
        return "none"


def choose_device(
    available: Sequence[str],
    model_devices: Collection[str],
    *,
    interactive: bool,
    profile: HardwareProfile | None,
) -> str:
    """The OpenVINO device to compile a model for ("NPU", "GPU.0", "CPU"; never "AUTO").

    ``available`` is what OpenVINO offers; ``model_devices`` the kinds the model's manifest
    allows ("AUTO" there stands for GPU and CPU, as in OpenVINO). Raises NoDeviceError naming
    both sides when the model allows none of the devices present.
    """
    allowed = {k for name in model_devices for k in _allowed(name)}
    present: dict[DeviceKind, list[str]] = {}
    for name in sorted(available, key=_index):
        kind = _kind(name)
        if kind is not None:
            present.setdefault(kind, []).append(name)
    preferred = profile.order(interactive=interactive) if profile else ()
    for kind in (*preferred, *DEFAULT_ORDER[interactive]):
        if kind in allowed and kind in present:
            return present[kind][0]
    note = " (AUTO never selects the NPU)" if "AUTO" in map(str.upper, model_devices) else ""
    raise NoDeviceError(
        f"the model runs on {', '.join(sorted(model_devices)) or 'no device'}{note}; this box "
        f"offers {', '.join(available) or 'no inference device'}.",
        "Ask the vendor for a build of the model for this box's devices, or check the devices' "
        "drivers with `appliance hardware`.",
    )


def _kind(name: str) -> DeviceKind | None:
    head = name.split(".", 1)[0].upper()
    return DeviceKind(head) if head in DeviceKind.__members__ else None


def _allowed(name: str) -> tuple[DeviceKind, ...]:
    if name.upper() == "AUTO":
        return AUTO_KINDS
    kind = _kind(name)
    return (kind,) if kind is not None else ()


def _index(name: str) -> tuple[str, int]:
    """Sort key: "GPU" and "GPU.0" (the iGPU when there are several) before "GPU.1"."""
    head, _, tail = name.partition(".")
    return head, int(tail) if tail.isdigit() else -1
