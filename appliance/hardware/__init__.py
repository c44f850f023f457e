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

The package: ``profiles`` (the profile format), ``detect`` (this machine), ``compare`` (mismatches,
best profile, report), ``choice`` (the device choice). Callers import from here.
"""

from appliance.hardware.choice import AUTO_KINDS, DEFAULT_ORDER, choose_device, device_kind
from appliance.hardware.compare import (
    LOW_DISK_SHARE,
    MEMORY_SLACK,
    best_profile,
    compare,
    report,
    tpm_summary,
)
from appliance.hardware.detect import DetectedHardware, detect
from appliance.hardware.profiles import (
    GIB,
    HARDWARE_DIR_ENV,
    INSTALLED_PROFILES,
    PROFILE_HINT,
    HardwareProfile,
    Mismatch,
    NoDeviceError,
    Severity,
    load_profile,
    load_profiles,
    profiles_dir,
)

__all__ = [
    "AUTO_KINDS",
    "DEFAULT_ORDER",
    "GIB",
    "HARDWARE_DIR_ENV",
    "INSTALLED_PROFILES",
    "LOW_DISK_SHARE",
    "MEMORY_SLACK",
    "PROFILE_HINT",
    "DetectedHardware",
    "HardwareProfile",
    "Mismatch",
    "NoDeviceError",
    "Severity",
    "best_profile",
    "choose_device",
    "compare",
    "detect",
    "device_kind",
    "load_profile",
    "load_profiles",
    "profiles_dir",
    "report",
    "tpm_summary",
]
