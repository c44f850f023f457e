"""The device choice for a model: the profile's order, the manifest's allowed kinds, the NPU only
when named. Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from appliance.hardware.profiles import HardwareProfile, NoDeviceError
from appliance.updates.manifest import DeviceKind

DEFAULT_ORDER = {
    True: (DeviceKind.GPU, DeviceKind.NPU, DeviceKind.CPU),
    False: (DeviceKind.NPU, DeviceKind.GPU, DeviceKind.CPU),
}
# OpenVINO's AUTO device picks among these; the NPU joins only when named explicitly.
AUTO_KINDS = (DeviceKind.GPU, DeviceKind.CPU)


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
        kind = device_kind(name)
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


def device_kind(name: str) -> DeviceKind | None:
    head = name.split(".", 1)[0].upper()
    return DeviceKind(head) if head in DeviceKind.__members__ else None


def _allowed(name: str) -> tuple[DeviceKind, ...]:
    if name.upper() == "AUTO":
        return AUTO_KINDS
    kind = device_kind(name)
    return (kind,) if kind is not None else ()


def _index(name: str) -> tuple[str, int]:
    """Sort key: "GPU" and "GPU.0" (the iGPU when there are several) before "GPU.1"."""
    head, _, tail = name.partition(".")
    return head, int(tail) if tail.isdigit() else -1
