"""A profile against what was detected: mismatches with what to do, the best-fitting profile,
and the report `appliance hardware` prints. Pure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from appliance.errors import ConfigError
from appliance.hardware.choice import AUTO_KINDS, choose_device
from appliance.hardware.detect import DetectedHardware
from appliance.hardware.profiles import (
    PROFILE_HINT,
    HardwareProfile,
    Mismatch,
    NoDeviceError,
    Severity,
)
from appliance.updates.manifest import DeviceKind

# MemTotal lacks what firmware and the kernel reserve (2-6 %): a 16 GiB box reports about 15.3.
MEMORY_SLACK = 0.9
# Below this share of the profile's partition size left free, the box warns (spool, new models).
LOW_DISK_SHARE = 0.1

_FLAG_USE = {
    "sse4_2": "OpenVINO's CPU plugin needs to run at all",
    "avx2": "OpenVINO's CPU plugin needs for its fast f32 and int8 kernels",
    "fma": "OpenVINO's CPU plugin uses for its f32 kernels",
    "avx_vnni": "OpenVINO's CPU plugin uses for int8 dot products on Core CPUs",
    "avx512f": "OpenVINO's CPU plugin uses for its wide kernels on Xeon",
    "avx512_vnni": "OpenVINO's CPU plugin uses for int8 dot products on Xeon",
    "amx_tile": "OpenVINO's CPU plugin uses for int8 and bf16 matrix work on Xeon",
}


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
_NO_TPM_AT = (
    "no TPM device: the configured TPM {} is not a device node that exists (a software TPM or "
    "simulator protects nothing at rest — development only)"
)
_NAMED_TPM = (
    "Name the box's TPM with --tcti device:/dev/tpmrm0 (or tcti in the settings file), or leave "
    "it out to use /dev/tpmrm0."
)
_GROW_DISK = "Install the image on a larger disk, or grow the state partition."
_FREE_DISK = (
    "Lower results_retention_days or studies_retention_days (appliance.toml; housekeeping "
    "deletes older ones hourly) before the DICOM spool and model updates fail."
)


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
    if detected.tpm_tcti is not None:
        return [Mismatch(severity, "TPM", _NO_TPM_AT.format(detected.tpm_tcti), _NAMED_TPM)]
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
        raise ConfigError("there are no hardware profiles to choose from.", PROFILE_HINT)
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
    memory = "unknown" if d.memory_gib is None else f"{d.memory_gib:.1f} GiB"
    ov_line = ", ".join(d.openvino_devices) or f"no device ({d.openvino_error or 'none found'})"
    lines = [
        f"profile          {profile.name}: {profile.description}",
        f"CPU              {d.cpu_model}",
        f"CPU flags        {_flags_line(profile, d)}",
        f"OpenVINO         {ov_line}",
        f"/dev/accel       {', '.join(d.accel_nodes) or 'empty'}",
        f"/dev/dri         {', '.join(d.render_nodes) or 'no render node'}",
        f"TPM              {tpm_summary(d)}",
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


def tpm_summary(detected: DetectedHardware) -> str:
    """The TPM the check looked at, as :func:`report` and ``appliance run`` name it."""
    if detected.tpm_device is not None:
        return str(detected.tpm_device)
    if detected.tpm_tcti is not None:
        return f"{detected.tpm_tcti} (configured; not an existing device node)"
    state = detected.swtpm_state or "not made yet"
    return f"none; the embedded swtpm stands in (state in {state})"


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
