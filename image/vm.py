#!/usr/bin/env python3
"""Boot the appliance image under QEMU with OVMF, a swtpm-backed TPM (tpm-crb) and user networking.

    image/vm.py [--image build/image/appliance.img] [--state build/vm] [--fresh]
                [--api-port 8443] [--firmware-vars plain|dbx-update] [--seed FILE] [--usb FILE]

``make vm`` runs this: the console (ttyS0) is on this terminal, the kernel and boot messages go
to ``<state>/kernel.log``, the API is forwarded to ``127.0.0.1:<api-port>``, and the network is
``restrict=on`` (the box reaches nothing outside). The disk, the TPM state and the firmware
variables live in ``<state>`` and persist between runs (``--fresh`` starts over: a new box).
KVM is used where it works, otherwise ``-accel tcg``. Quit with Ctrl-A X.

The boot test (tests/image/) imports :class:`VirtualMachine` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
# Firmware variable stores. "plain": Debian's, Secure Boot in setup mode. "dbx-update": the same
# with one more hash in the revocation list (dbx), as a firmware or dbx update adds; Secure Boot
# stays off, but PCR 7 (which measures SecureBoot, PK, KEK, db and dbx) changes. Made on demand
# with virt-fw-vars (the virt-firmware package).
OVMF_VARS = {"plain": Path("/usr/share/OVMF/OVMF_VARS_4M.fd"), "dbx-update": None}
# Any GUID and hash: what matters is that dbx holds one more entry than before.
DBX_OWNER = "a0baa8a3-041d-48a8-bc87-c36d121b5e3d"
DBX_HASH = "5f0d64b2" * 8
DIAG_PORT = "org.appliance.diag"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kvm_usable() -> bool:
    """KVM only where /dev/kvm opens and QEMU can start a guest with it (not on this CI host)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    probe = subprocess.run(
        [
            "qemu-system-x86_64",
            "-accel",
            "kvm",
            "-machine",
            "q35",
            "-nodefaults",
            "-display",
            "none",
            "-S",
            "-no-user-config",
            "-bios",
            "/dev/null",
            "-monitor",
            "none",
            "-daemonize",
            "-pidfile",
            "/dev/null",
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    return probe.returncode == 0


@dataclass
class VirtualMachine:
    """One box: its disk, TPM and firmware variables live in ``state``; boot it again and again."""

    image: Path
    state: Path
    api_port: int = 0
    firmware_vars: str = "plain"
    seed: Path | None = None
    usb: Path | None = None
    memory_mb: int = 2048
    accel: str = "tcg"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        if not self.api_port:
            self.api_port = free_port()

    @property
    def disk(self) -> Path:
        return self.state / "disk.img"

    @property
    def diag_log(self) -> Path:
        return self.state / "diag.jsonl"

    @property
    def console_log(self) -> Path:
        return self.state / "console.log"

    @property
    def kernel_log(self) -> Path:
        return self.state / "kernel.log"

    def prepare(self) -> None:
        """Copy the image to the box's disk (sparse) unless it has one already."""
        if not self.disk.exists():
            subprocess.run(["cp", "--sparse=always", str(self.image), str(self.disk)], check=True)

    def vars_file(self) -> Path:
        path = self.state / f"OVMF_VARS.{self.firmware_vars}.fd"
        if path.exists():
            return path
        template = OVMF_VARS[self.firmware_vars]
        if template is not None:
            shutil.copy(template, path)
            return path
        tool = shutil.which("virt-fw-vars") or str(Path(sys.executable).parent / "virt-fw-vars")
        subprocess.run(
            [tool, "--input", str(OVMF_VARS["plain"]), "--output", str(path),
             "--add-dbx-hash", DBX_OWNER, DBX_HASH],
            check=True, capture_output=True,
        )  # fmt: skip
        return path

    def _start_swtpm(self) -> Path:
        tpm_dir = self.state / "tpm"
        tpm_dir.mkdir(exist_ok=True)
        sock = tpm_dir / "swtpm.sock"
        sock.unlink(missing_ok=True)
        proc = subprocess.Popen(
            [
                "swtpm",
                "socket",
                "--tpm2",
                "--tpmstate",
                f"dir={tpm_dir.resolve()}",
                "--ctrl",
                f"type=unixio,path={sock.resolve()}",
                "--log",
                f"file={(tpm_dir / 'log').resolve()},level=1",
            ],
            start_new_session=True,
        )
        self.procs.append(proc)
        for _ in range(100):
            if sock.exists():
                return sock
            time.sleep(0.05)
        raise RuntimeError("swtpm did not create its socket")

    def qemu_argv(self, tpm_sock: Path, *, interactive: bool) -> list[str]:
        argv = [
            "qemu-system-x86_64",
            "-machine",
            "q35,smm=off",
            "-accel",
            self.accel,
            "-cpu",
            "max" if self.accel == "tcg" else "host",
            "-smp",
            "2",
            "-m",
            str(self.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={self.vars_file()}",
            "-drive",
            f"if=virtio,format=raw,file={self.disk},discard=unmap",
            "-chardev",
            f"socket,id=chrtpm,path={tpm_sock}",
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            "tpm-crb,tpmdev=tpm0",
            "-netdev",
            f"user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{self.api_port}-:8443",
            "-device",
            "virtio-net-pci,netdev=net0",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            f"file,id=diag,path={self.diag_log}",
            "-device",
            f"virtserialport,chardev=diag,name={DIAG_PORT}",
            "-object",
            "rng-random,id=rng0,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng0",
            "-qmp",
            f"unix:{self.state / 'qmp.sock'},server=on,wait=off",
            "-device",
            "qemu-xhci,id=xhci",  # USB sticks are plugged in here (plug_usb, --usb)
        ]
        if interactive:
            argv += [
                "-chardev",
                "stdio,id=con,mux=on,signal=off",
                "-serial",
                "chardev:con",
                "-mon",
                "chardev=con,mode=readline",
            ]
        else:
            argv += ["-chardev", f"file,id=con,path={self.console_log}", "-serial", "chardev:con"]
        argv += ["-chardev", f"file,id=klog,path={self.kernel_log}", "-serial", "chardev:klog"]
        if self.seed is not None:
            argv += ["-fw_cfg", f"name=opt/io.systemd.credentials/appliance.seed,file={self.seed}"]
        if self.usb is not None:
            argv += [
                "-drive",
                f"if=none,id=stick,format=raw,readonly=on,file={self.usb}",
                "-device",
                "usb-storage,bus=xhci.0,drive=stick,removable=on",
            ]
        return argv

    def start(self, *, interactive: bool = False) -> subprocess.Popen[bytes]:
        """Boot (the disk keeps its state from the last boot)."""
        self.prepare()
        for log in (self.diag_log, self.console_log, self.kernel_log):
            log.unlink(missing_ok=True)
        sock = self._start_swtpm()
        self.started = time.monotonic()
        try:
            proc = subprocess.Popen(self.qemu_argv(sock, interactive=interactive))
        except BaseException:
            self.stop()  # no swtpm left behind when QEMU cannot start
            raise
        self.procs.append(proc)
        return proc

    def diag(self) -> dict[str, Any] | None:
        """The last complete diagnostics line the box wrote, if any."""
        try:
            lines = self.diag_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return None
        for line in reversed(lines):
            with contextlib.suppress(ValueError):
                value: dict[str, Any] = json.loads(line)
                return value
        return None

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` until it returns something true; fail with the logs' tails."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs and self.procs[-1].poll() is not None:
                break
            value = check()
            if value:
                return value
            time.sleep(1.0)
        raise TimeoutError(
            f"the VM did not reach '{what}' in {timeout:.0f} s.\n"
            f"last diagnostics: {self.diag()}\n"
            f"--- kernel log tail ---\n{self.tail(self.kernel_log)}"
        )

    @staticmethod
    def tail(path: Path, lines: int = 40) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(none)"

    def qmp(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one QMP command (system_powerdown is the ACPI power button); return its answer."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.state / "qmp.sock"))
            reader = s.makefile("r")
            reader.readline()  # the greeting
            answer: dict[str, Any] = {}
            for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
                message: dict[str, Any] = {"execute": cmd}
                if args:
                    message["arguments"] = args
                s.sendall(json.dumps(message).encode() + b"\n")
                while True:  # skip asynchronous events
                    answer = json.loads(reader.readline())
                    if "return" in answer or "error" in answer:
                        break
            if "error" in answer:
                raise RuntimeError(f"QMP {command}: {answer['error']}")
            return answer

    def plug_usb(self, stick: Path) -> None:
        """Plug a FAT image in as a USB stick, as a technician would, while the box runs."""
        self.qmp("blockdev-add", **{"node-name": "stick", "driver": "raw", "read-only": True,
                                    "file": {"driver": "file", "filename": str(stick),
                                             "read-only": True}})  # fmt: skip
        self.qmp("device_add", driver="usb-storage", bus="xhci.0", drive="stick", id="stick",
                 removable=True)  # fmt: skip

    def stop(self, timeout: float = 60.0) -> None:
        """ACPI power-off (the guest shuts the TPM down cleanly), then stop swtpm."""
        qemu = self.procs[-1] if self.procs else None
        if qemu is not None and qemu.poll() is None:
            with contextlib.suppress(OSError):
                self.qmp("system_powerdown")
            try:
                qemu.wait(timeout)
            except subprocess.TimeoutExpired:
                qemu.send_signal(signal.SIGTERM)
                try:
                    qemu.wait(10)
                except subprocess.TimeoutExpired:
                    qemu.kill()
                    qemu.wait()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.procs.clear()


@contextlib.contextmanager
def booted(vm: VirtualMachine) -> Iterator[VirtualMachine]:
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image/vm.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image",
        type=Path,
        default=REPO / "build/image/appliance.img",
        help="the disk image (default: build/image/appliance.img, made by `make image`)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=REPO / "build/vm",
        help="the box's disk, TPM and firmware variables (kept between runs)",
    )
    parser.add_argument("--fresh", action="store_true", help="start over with a new box")
    parser.add_argument("--api-port", type=int, default=8443, help="host port for the API")
    parser.add_argument(
        "--firmware-vars",
        choices=sorted(OVMF_VARS),
        default="plain",
        help="dbx-update: one more revoked hash in dbx (changes PCR 7)",
    )
    parser.add_argument("--seed", type=Path, help="a provisioning seed (appliance/provision.py)")
    parser.add_argument("--usb", type=Path, help="a FAT image to plug in as a USB stick")
    args = parser.parse_args(argv)
    if not args.image.exists():
        sys.exit(f"image/vm.py: no image at {args.image}; run `make image` first.")
    if args.fresh and args.state.exists():
        shutil.rmtree(args.state)
    accel = "kvm" if kvm_usable() else "tcg"
    vm = VirtualMachine(
        args.image,
        args.state,
        api_port=args.api_port,
        firmware_vars=args.firmware_vars,
        seed=args.seed,
        usb=args.usb,
        accel=accel,
    )
    slow = ", slow: about 50 s to boot" if accel == "tcg" else ""
    print(
        f"vm: {args.image.name} as the box in {args.state} ({accel}{slow})\n"
        f"vm: API https://127.0.0.1:{vm.api_port}/v2/health/ready   kernel log {vm.kernel_log}\n"
        f"vm: the console follows on this terminal (ttyS0); Ctrl-A X quits",
        flush=True,
    )
    proc = vm.start(interactive=True)
    try:
        return proc.wait()
    finally:
        vm.stop()


if __name__ == "__main__":
    sys.exit(main())
