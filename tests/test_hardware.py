"""Hardware profiles, detection and device choice.

Detection runs for real on this machine (real OpenVINO, real /proc and /dev) and against fake
/proc and /dev trees for the boxes this machine is not: a Core Ultra box with an NPU, a box whose
drivers are missing. compare() and choose_device() are pure and are tested as tables.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

import openvino as ov
import pytest

from appliance.errors import ApplianceError, ConfigError
from appliance.hardware import (
    HARDWARE_DIR_ENV,
    DetectedHardware,
    HardwareProfile,
    Mismatch,
    NoDeviceError,
    Severity,
    best_profile,
    choose_device,
    compare,
    detect,
    load_profile,
    load_profiles,
    profiles_dir,
    report,
)
from appliance.inference import available_devices, compile, load_model
from appliance.updates.manifest import DeviceKind
from provisioning.testmodel import FEATURES, build_model_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("core-i5-igpu", "core-ultra-npu", "cpu-only")
ANY = ("CPU", "GPU", "NPU")
ULTRA_FLAGS = "fpu sse sse2 sse4_1 sse4_2 avx avx2 fma avx_vnni"


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def profiles() -> dict[str, HardwareProfile]:
    return load_profiles(ROOT / "hardware")


class Trees(TypedDict):
    """detect()'s keyword arguments that point it at fake trees."""

    proc: Path
    dev: Path
    tpm_device: Path


def fake_box(
    tmp_path: Path,
    *,
    flags: str = ULTRA_FLAGS,
    mem_kib: int = 32 * 1024 * 1024,
    accel: tuple[str, ...] = (),
    render: tuple[str, ...] = (),
    tpm: bool = True,
) -> Trees:
    """Fake /proc and /dev trees of a box: two CPUs, its memory, its device nodes."""
    proc, dev = tmp_path / "proc", tmp_path / "dev"
    proc.mkdir(parents=True)
    cpu = f"model name\t: Intel(R) Core(TM) Ultra 7 155H\nflags\t\t: {flags}\n"
    (proc / "cpuinfo").write_text(f"processor\t: 0\n{cpu}\nprocessor\t: 1\n{cpu}")
    (proc / "meminfo").write_text(f"MemTotal:       {mem_kib} kB\nMemFree:        1024 kB\n")
    for folder, names in (("accel", accel), ("dri", render)):
        (dev / folder).mkdir(parents=True)
        for name in names:
            (dev / folder / name).touch()
    if tpm:
        (dev / "tpmrm0").touch()
    return Trees(proc=proc, dev=dev, tpm_device=dev / "tpmrm0")


def big_disk(detected: DetectedHardware) -> DetectedHardware:
    """The same machine on a roomy state partition (this host's disk is not under test)."""
    return replace(detected, disk_total_gib=512.0, disk_free_gib=400.0)


def npu_box(tmp_path: Path, **kwargs: Any) -> DetectedHardware:
    trees = fake_box(tmp_path, accel=("accel0",), render=("card0", "renderD128"))
    detected = detect(
        None, tmp_path / "state", available=["CPU", "GPU.0", "NPU"], **trees, tcti=None
    )
    return replace(big_disk(detected), **kwargs)


def subjects(found: list[Mismatch]) -> list[str]:
    return [m.subject for m in found]


# Profiles


def test_every_shipped_profile_loads(profiles: dict[str, HardwareProfile]) -> None:
    assert tuple(profiles) == SHIPPED
    for profile in profiles.values():
        assert DeviceKind.CPU in profile.expected_devices
        assert profile.tpm_required
        assert "avx2" in profile.cpu_flags
        assert set(profile.interactive_order) <= set(profile.expected_devices)
    ultra = profiles["core-ultra-npu"]
    assert ultra.order(interactive=True)[0] == DeviceKind.GPU
    assert ultra.order(interactive=False)[0] == DeviceKind.NPU


def test_profiles_dir_is_the_checkout_unless_overridden(tmp_path: Path) -> None:
    assert profiles_dir({}) == ROOT / "hardware"
    assert profiles_dir({HARDWARE_DIR_ENV: str(tmp_path)}) == tmp_path


BAD_PROFILES = [
    ('name = "cpu-only"', 'name = "cpu-only"\ncolour = "red"', "'colour' is not a known key"),
    ("min_gib = 8", "min_gib = 8\nmax_gib = 64", "'memory.max_gib' is not a known key"),
    ("[tpm]\nrequired = true", "", "'tpm' is missing"),
    ("required = true", 'required = "yes"', "'tpm.required' must be true or false"),
    ('expected = ["CPU"]', 'expected = ["TPU", "CPU"]', "'devices.expected' has the entry 'TPU'"),
    ('expected = ["CPU"]', 'expected = ["GPU"]', "'devices.expected' must include CPU"),
    ('expected = ["CPU"]', 'expected = ["CPU", "CPU"]', "'devices.expected' must list distinct"),
    ('interactive = ["CPU"]', 'interactive = ["GPU", "CPU"]', "'devices.preferred_order.inter"),
    ("min_gib = 8", "min_gib = 0", "'memory.min_gib' must be a positive number"),
    ("min_gib = 64", 'min_gib = "64"', "'disk.min_gib' must be a positive number"),
    ('"avx2"', '"AVX 2"', "'cpu.flags' has the entry 'AVX 2'"),
    ('name = "cpu-only"', 'name = "cpu-box"', "'name' is 'cpu-box'; it must be the file's name"),
    ("[devices]", "[devices", "cannot read hardware profile"),
]


@pytest.mark.parametrize(("old", "new", "error"), BAD_PROFILES)
def test_a_bad_profile_is_refused_naming_the_file_and_key(
    tmp_path: Path, old: str, new: str, error: str
) -> None:
    text = (ROOT / "hardware" / "cpu-only.toml").read_text()
    assert old in text
    path = tmp_path / "cpu-only.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match="hardware profile") as caught:
        load_profile(path)
    assert str(path) in str(caught.value)
    assert error in str(caught.value)


def test_a_folder_without_profiles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"no hardware profiles in {tmp_path}"):
        load_profiles(tmp_path)


# Detection on this machine


def test_detect_on_this_machine(core: ov.Core, tmp_path: Path) -> None:
    detected = detect(core, tmp_path / "state", tcti=None)
    assert "CPU" in detected.openvino_devices
    assert DeviceKind.CPU in detected.device_kinds()
    assert detected.openvino_error is None
    assert detected.cpu_flags
    assert detected.cpu_model
    assert detected.memory_gib is not None and detected.memory_gib > 0
    assert detected.disk_total_gib >= detected.disk_free_gib > 0
    assert detected.disk_path == tmp_path  # the state folder does not exist yet
    assert (detected.tpm_device is None) == (not Path("/dev/tpmrm0").exists())
    assert detected.swtpm_state is None


def test_this_cpu_only_machine_matches_the_cpu_only_profile(
    core: ov.Core, tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = detect(core, tmp_path, tcti=None)
    if detected.device_kinds() != {DeviceKind.CPU}:
        pytest.skip(f"this machine has {detected.openvino_devices}, not only a CPU")
    profile = best_profile(profiles, detected)
    assert profile.name == "cpu-only"
    # Only the TPM may be missing here (a development machine runs on the embedded swtpm).
    assert set(subjects(compare(profile, big_disk(detected)))) <= {"TPM"}
    text = report(profile, detected, compare(profile, detected))
    assert "cpu-only" in text
    assert "interactive CPU, batch CPU" in text


def test_the_device_chosen_here_compiles_the_test_model(core: ov.Core, tmp_path: Path) -> None:
    device = choose_device(
        available_devices(core), frozenset(DeviceKind), interactive=True, profile=None
    )
    folder = build_model_dir(tmp_path / "model", cases=10)
    model = load_model(
        (folder / "model.xml").read_bytes(), (folder / "model.bin").read_bytes(), core=core
    )
    assert compile(model, device, core=core) is not None


@pytest.mark.needs_npu
def test_batch_work_runs_on_the_npu_of_a_core_ultra_box(
    core: ov.Core, tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    if "NPU" not in available_devices(core):
        pytest.skip("no Intel NPU on this machine (OpenVINO lists none)")
    device = choose_device(
        available_devices(core), ANY, interactive=False, profile=profiles["core-ultra-npu"]
    )
    assert device == "NPU"
    folder = build_model_dir(tmp_path / "model", cases=10)
    model = load_model(
        (folder / "model.xml").read_bytes(), (folder / "model.bin").read_bytes(), core=core
    )
    model.reshape([1, FEATURES])  # the NPU compiles static shapes only
    assert compile(model, device, core=core) is not None


@pytest.mark.needs_igpu
def test_interactive_work_runs_on_the_igpu(
    core: ov.Core, tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    gpus = [d for d in available_devices(core) if d.startswith("GPU")]
    if not gpus:
        pytest.skip("no Intel iGPU on this machine (OpenVINO lists no GPU)")
    device = choose_device(
        available_devices(core), ANY, interactive=True, profile=profiles["core-i5-igpu"]
    )
    assert device == min(gpus)
    folder = build_model_dir(tmp_path / "model", cases=10)
    model = load_model(
        (folder / "model.xml").read_bytes(), (folder / "model.bin").read_bytes(), core=core
    )
    assert compile(model, device, core=core) is not None


# Detection against fake trees


def test_detect_sees_an_npu_box(tmp_path: Path, profiles: dict[str, HardwareProfile]) -> None:
    detected = npu_box(tmp_path)
    assert detected.device_kinds() == set(DeviceKind)
    assert detected.accel_nodes == ("accel0",)
    assert detected.render_nodes == ("renderD128",)
    assert detected.cpu_model == "Intel(R) Core(TM) Ultra 7 155H"
    assert "avx_vnni" in detected.cpu_flags
    assert detected.memory_gib == 32.0
    assert detected.tpm_device == tmp_path / "dev" / "tpmrm0"
    assert compare(profiles["core-ultra-npu"], detected) == []
    assert best_profile(profiles, detected).name == "core-ultra-npu"
    text = report(profiles["core-ultra-npu"], detected, [])
    assert "interactive GPU.0, batch NPU" in text
    assert "matches the profile" in text


def test_an_i5_box_is_not_taken_for_a_cpu_only_box(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = big_disk(
        detect(
            None,
            tmp_path,
            available=["CPU", "GPU"],
            tcti=None,
            **fake_box(tmp_path, render=("renderD128",)),
        )
    )
    # cpu-only has no error either (only a warning about the GPU): more devices matched wins.
    assert [m.severity for m in compare(profiles["cpu-only"], detected)] == [Severity.WARNING]
    assert best_profile(profiles, detected).name == "core-i5-igpu"


def test_the_embedded_swtpm_state_is_reported(tmp_path: Path) -> None:
    (tmp_path / "state" / "swtpm").mkdir(parents=True)
    detected = detect(
        None, tmp_path / "state", available=["CPU"], **fake_box(tmp_path, tpm=False), tcti=None
    )
    assert detected.tpm_device is None
    assert detected.swtpm_state == tmp_path / "state" / "swtpm"


def test_the_tpm_a_tcti_names_is_the_one_detected(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    (tmp_path / "state" / "swtpm").mkdir(parents=True)
    trees = fake_box(tmp_path)  # its /dev/tpmrm0 is not the TPM the TCTI names
    node = tmp_path / "dev" / "tpm1"
    node.touch()
    named = detect(None, tmp_path / "state", available=["CPU"], tcti=f"device:{node}", **trees)
    assert (named.tpm_device, named.swtpm_state) == (node, None)
    sim = detect(None, tmp_path / "state", available=["CPU"], tcti="swtpm:path=/x.sock", **trees)
    assert (sim.tpm_device, sim.tpm_tcti, sim.swtpm_state) == (None, "swtpm:path=/x.sock", None)
    [found] = [m for m in compare(profiles["cpu-only"], big_disk(sim)) if m.subject == "TPM"]
    assert "the configured TPM swtpm:path=/x.sock is not a device node" in found.message
    assert "--tcti" in found.hint
    assert "swtpm:path=/x.sock (configured" in report(profiles["cpu-only"], sim, [found])


def test_unreadable_proc_leaves_memory_unknown_and_warns(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = detect(
        None, tmp_path, available=["CPU"], proc=tmp_path / "none", dev=tmp_path, tcti=None
    )
    assert detected.memory_gib is None
    assert detected.cpu_flags == frozenset()
    found = compare(profiles["cpu-only"], detected)
    assert any(m.subject == "memory" and m.severity == Severity.WARNING for m in found)


def test_detect_needs_a_core_or_a_device_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="OpenVINO core"):
        detect(None, tmp_path, tcti=None)


class BrokenCore:
    """An OpenVINO core whose device listing fails the way OpenVINO fails."""

    @property
    def available_devices(self) -> list[str]:
        raise RuntimeError("Exception from src/inference/src/core.cpp:42:\nplugin load failed\n")


def test_an_openvino_failure_is_reported_not_raised(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = detect(BrokenCore(), tmp_path, **fake_box(tmp_path), tcti=None)
    assert detected.openvino_devices == ()
    assert detected.openvino_error is not None and "plugin load failed" in detected.openvino_error
    found = compare(profiles["cpu-only"], big_disk(detected))
    assert subjects(found) == ["openvino"]
    assert "OpenVINO could not list its devices: " in found[0].message


# compare(): one scenario per mismatch


def test_an_npu_without_any_driver(tmp_path: Path, profiles: dict[str, HardwareProfile]) -> None:
    detected = npu_box(tmp_path, openvino_devices=("CPU", "GPU.0"), accel_nodes=())
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert (found.severity, found.subject) == (Severity.ERROR, DeviceKind.NPU)
    assert str(found) == (
        "the profile expects an NPU but OpenVINO sees none and /dev/accel is empty. Install the "
        "intel-npu driver (linux-npu-driver; the kernel's intel_vpu module needs Linux 6.3 or "
        "newer) and check `dmesg | grep intel_vpu`."
    )


def test_an_npu_without_its_user_space_driver(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = npu_box(tmp_path, openvino_devices=("CPU", "GPU.0"))
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert "OpenVINO sees none though /dev/accel/accel0 exists" in found.message
    assert "intel-level-zero-npu" in found.hint


def test_an_igpu_without_its_compute_runtime(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = npu_box(tmp_path, openvino_devices=("CPU", "NPU"))
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert "a GPU but OpenVINO sees none though /dev/dri/renderD128 exists" in found.message
    assert "intel-opencl-icd" in found.hint and "render group" in found.hint


def test_an_igpu_switched_off(tmp_path: Path, profiles: dict[str, HardwareProfile]) -> None:
    detected = npu_box(tmp_path, openvino_devices=("CPU", "NPU"), render_nodes=())
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert "/dev/dri has no render node" in found.message
    assert "firmware setup" in found.hint and "i915" in found.hint


def test_an_unexpected_device_is_a_warning(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    found = compare(profiles["core-i5-igpu"], npu_box(tmp_path))
    assert [(m.severity, m.subject) for m in found] == [(Severity.WARNING, DeviceKind.NPU)]
    assert "OpenVINO offers a NPU the profile does not expect" in found[0].message


def test_a_cpu_without_avx2(tmp_path: Path, profiles: dict[str, HardwareProfile]) -> None:
    detected = npu_box(tmp_path, cpu_flags=frozenset({"sse4_2", "fma", "avx_vnni"}))
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert found.subject == "cpu:avx2"
    assert found.message.startswith("the CPU lacks avx2, which OpenVINO's CPU plugin needs")
    assert "-cpu host" in found.hint


def test_too_little_memory(tmp_path: Path, profiles: dict[str, HardwareProfile]) -> None:
    [found] = compare(profiles["core-ultra-npu"], npu_box(tmp_path, memory_gib=2.0))
    assert found.message == "2.0 GiB of memory, the profile needs 16"
    assert found.severity == Severity.ERROR


def test_memory_reserved_by_firmware_is_not_a_mismatch(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    assert compare(profiles["core-ultra-npu"], npu_box(tmp_path, memory_gib=15.3)) == []


def test_no_tpm_device_means_the_embedded_swtpm(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = npu_box(tmp_path, tpm_device=None)
    [found] = compare(profiles["core-ultra-npu"], detected)
    assert found.severity == Severity.ERROR
    assert found.message == (
        "no TPM device: the box runs on the embedded software TPM, which protects nothing at "
        "rest — development only"
    )
    relaxed = replace(profiles["core-ultra-npu"], tpm_required=False)
    assert [m.severity for m in compare(relaxed, detected)] == [Severity.WARNING]


def test_a_small_or_full_state_partition(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    small = npu_box(tmp_path, disk_total_gib=32.0, disk_free_gib=30.0)
    [found] = compare(profiles["core-ultra-npu"], small)
    assert found.severity == Severity.ERROR
    assert "holds 32.0 GiB, the profile needs 128" in found.message
    full = npu_box(tmp_path / "2", disk_total_gib=256.0, disk_free_gib=3.0)
    [found] = compare(profiles["core-ultra-npu"], full)
    assert found.severity == Severity.WARNING
    assert "only 3.0 GiB free on the state partition" in found.message


def test_errors_come_first_and_the_report_lists_them(
    tmp_path: Path, profiles: dict[str, HardwareProfile]
) -> None:
    detected = npu_box(tmp_path, tpm_device=None, memory_gib=2.0)
    profile = replace(profiles["core-i5-igpu"], tpm_required=False)
    found = compare(profile, detected)
    assert [m.severity for m in found] == [Severity.ERROR, Severity.WARNING, Severity.WARNING]
    text = report(profile, detected, found)
    assert "1 error(s), 2 warning(s)" in text
    assert "  ERROR    2.0 GiB of memory, the profile needs 16." in text
    assert all(len(line) <= 100 for line in text.splitlines() if line.startswith("  "))


def test_best_profile_needs_profiles(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no hardware profiles"):
        best_profile({}, npu_box(tmp_path))


# choose_device(): the device-choice rules as a table

ULTRA_BOX = ("CPU", "GPU.0", "NPU")
CHOICES = [
    # available, model's devices, interactive, profile, chosen
    (ULTRA_BOX, ANY, True, "core-ultra-npu", "GPU.0"),
    (ULTRA_BOX, ANY, False, "core-ultra-npu", "NPU"),
    (ULTRA_BOX, ("CPU", "GPU"), False, "core-ultra-npu", "GPU.0"),
    (ULTRA_BOX, ("CPU", "NPU"), True, "core-ultra-npu", "NPU"),
    (ULTRA_BOX, ("CPU",), True, "core-ultra-npu", "CPU"),
    (("CPU", "NPU"), ANY, True, "core-ultra-npu", "NPU"),
    (("CPU",), ANY, False, "core-ultra-npu", "CPU"),
    (ULTRA_BOX, ANY, True, None, "GPU.0"),
    (ULTRA_BOX, ANY, False, None, "NPU"),
    (ULTRA_BOX, ANY, True, "cpu-only", "CPU"),
    (ULTRA_BOX, ("GPU", "NPU"), True, "cpu-only", "GPU.0"),
    (ULTRA_BOX, ("GPU", "NPU"), False, "cpu-only", "NPU"),
    (("CPU", "GPU.1", "GPU.0"), ANY, True, "core-i5-igpu", "GPU.0"),
    (("CPU", "GPU"), ANY, False, "core-i5-igpu", "GPU"),
    (("CPU", "GPU"), ("cpu",), False, "core-i5-igpu", "CPU"),
    (("HETERO", "CPU", "MULTI"), ANY, True, None, "CPU"),
]


@pytest.mark.parametrize(("available", "model", "interactive", "profile", "chosen"), CHOICES)
def test_choose_device(
    profiles: dict[str, HardwareProfile],
    available: tuple[str, ...],
    model: tuple[str, ...],
    interactive: bool,
    profile: str | None,
    chosen: str,
) -> None:
    box = profiles[profile] if profile else None
    assert choose_device(available, model, interactive=interactive, profile=box) == chosen


def test_auto_never_yields_the_npu(profiles: dict[str, HardwareProfile]) -> None:
    boxes = [("CPU", "NPU"), ("NPU", "GPU.0", "CPU"), ("AUTO", "NPU", "CPU")]
    for available, interactive, name in itertools.product(boxes, (True, False), [*profiles, None]):
        box = profiles[name] if name else None
        chosen = choose_device(available, ["AUTO"], interactive=interactive, profile=box)
        assert chosen in {"CPU", "GPU.0"}, (available, interactive, name)
    with pytest.raises(NoDeviceError, match=r"runs on AUTO \(AUTO never selects the NPU\)"):
        choose_device(["NPU"], ["AUTO"], interactive=False, profile=profiles["core-ultra-npu"])


def test_the_npu_needs_to_be_named_by_the_model(profiles: dict[str, HardwareProfile]) -> None:
    box = profiles["core-ultra-npu"]
    for model in itertools.chain.from_iterable(
        itertools.combinations(("CPU", "GPU", "NPU", "AUTO"), n) for n in range(1, 5)
    ):
        for interactive in (True, False):
            chosen = choose_device(ULTRA_BOX, model, interactive=interactive, profile=box)
            assert chosen in ULTRA_BOX
            assert chosen != "NPU" or "NPU" in model


def test_a_model_for_devices_the_box_lacks_is_refused_naming_both_sides(
    profiles: dict[str, HardwareProfile],
) -> None:
    with pytest.raises(NoDeviceError) as caught:
        choose_device(
            ["CPU", "GPU.0"], {DeviceKind.NPU}, interactive=True, profile=profiles["core-i5-igpu"]
        )
    assert isinstance(caught.value, ApplianceError)
    assert "the model runs on NPU; this box offers CPU, GPU.0." in caught.value.message
    assert caught.value.hint and "appliance hardware" in caught.value.hint
