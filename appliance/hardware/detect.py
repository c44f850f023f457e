"""What this machine really has: OpenVINO devices, ``/dev`` nodes, CPU flags, TPM, memory, disk.

The only part of the package that touches the machine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import TPM_DEVICE
from appliance.hardware.choice import device_kind
from appliance.hardware.profiles import GIB
from appliance.inference.engine import available_devices
from appliance.inference.errors import InferenceError
from appliance.updates.manifest import DeviceKind


@dataclass(frozen=True)
class DetectedHardware:
    """What :func:`detect` found on this machine."""

    openvino_devices: tuple[str, ...]  # as OpenVINO names them: "CPU", "GPU.0", "NPU"
    openvino_error: str | None  # why OpenVINO could not list its devices, if it could not
    accel_nodes: tuple[str, ...]  # /dev/accel/accel* (the NPU's kernel driver, intel_vpu)
    render_nodes: tuple[str, ...]  # /dev/dri/renderD* (the iGPU's kernel driver, i915 or xe)
    cpu_model: str
    cpu_flags: frozenset[str]
    tpm_device: Path | None  # the TPM's device node when it exists
    tpm_tcti: str | None  # the TCTI the configuration names (--tcti), None for the default
    swtpm_state: Path | None  # the embedded swtpm's state folder when one was used
    memory_gib: float | None  # MemTotal; None when /proc/meminfo could not be read
    disk_path: Path  # where the state partition was measured (the state folder or its parent)
    disk_total_gib: float
    disk_free_gib: float

    def device_kinds(self) -> frozenset[DeviceKind]:
        return frozenset(k for k in map(device_kind, self.openvino_devices) if k is not None)


def detect(
    core: Any | None,
    state_dir: Path,
    *,
    tcti: str | None,
    available: Sequence[str] | None = None,
    tpm_device: Path = TPM_DEVICE,
    proc: Path = Path("/proc"),
    dev: Path = Path("/dev"),
) -> DetectedHardware:
    """Look at this machine: OpenVINO's devices (from ``core``, or ``available`` when given),
    the NPU and GPU nodes under ``dev``, the CPU and memory from ``proc``, the TPM and the state
    partition holding ``state_dir``.

    The TPM is the one ``tcti`` names (Config.tcti: ``device:PATH`` is the node at PATH, any
    other TCTI a software TPM or simulator); without one, the node ``tpm_device`` or else the
    embedded swtpm, whose state is in ``state_dir``. ``tcti`` has no default: a caller that
    forgot the box's configured TPM would check another one.

    Raises ValueError when given neither ``core`` nor ``available``; an OpenVINO failure is
    recorded in ``openvino_error`` instead, so that the report still shows everything else.
    """
    devices, error = _openvino_devices(core, available)
    cpu_model, flags = _cpuinfo(proc / "cpuinfo")
    disk_path, total, free = _disk(state_dir)
    swtpm = state_dir / "swtpm"  # Config.swtpm_dir
    node = tpm_device if tcti is None else _tcti_device(tcti)
    return DetectedHardware(
        openvino_devices=devices,
        openvino_error=error,
        accel_nodes=_nodes(dev / "accel", "accel"),
        render_nodes=_nodes(dev / "dri", "renderD"),
        cpu_model=cpu_model,
        cpu_flags=flags,
        tpm_device=node if node is not None and node.exists() else None,
        tpm_tcti=tcti,
        swtpm_state=swtpm if tcti is None and swtpm.is_dir() else None,
        memory_gib=_memory_gib(proc / "meminfo"),
        disk_path=disk_path,
        disk_total_gib=total,
        disk_free_gib=free,
    )


def _tcti_device(tcti: str) -> Path | None:
    """The node a ``device:PATH`` TCTI names (``/dev/tpmrm0`` without a PATH); None for any
    other TCTI."""
    name, _, conf = tcti.partition(":")
    if name != "device":
        return None
    return Path(conf) if conf else TPM_DEVICE


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
