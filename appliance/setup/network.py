"""Network settings from the wizard, written as one systemd-networkd ``.network`` file.

The image links ``/etc/systemd/network`` to ``Config.network_folder`` (on the data partition, as
the root file system is read-only), so the file written here is what networkd reads at boot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from appliance.errors import ConfigError
from appliance.fsutil import atomic_write

NETWORK_FILE = "10-appliance.network"
_INTERFACE = re.compile(r"^[A-Za-z0-9*?._-]{1,15}$")  # a networkd Name= glob: "en*", "eth0"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


class AddressMode(StrEnum):
    DHCP = "dhcp"
    STATIC = "static"


@dataclass(frozen=True)
class NetworkSettings:
    mode: AddressMode
    interface: str = "en*"
    address: IPInterface | None = None  # static only, with its prefix
    gateway: IPAddress | None = None
    dns: tuple[IPAddress, ...] = ()

    def describe(self) -> str:
        if self.mode is AddressMode.DHCP:
            return f"DHCP on {self.interface}"
        dns = ", ".join(map(str, self.dns)) or "no DNS"
        return f"{self.address} via {self.gateway} on {self.interface}, DNS {dns}"


def _interface(name: str) -> str:
    name = name.strip() or "en*"
    if not _INTERFACE.match(name):
        raise ConfigError(
            f"interface {name!r} is not an interface name or pattern.",
            "Use a name such as eth0 or enp1s0, or a pattern such as en*.",
        )
    return name


def dhcp(interface: str = "en*") -> NetworkSettings:
    return NetworkSettings(AddressMode.DHCP, _interface(interface))


def static(address: str, gateway: str, dns: str, interface: str = "en*") -> NetworkSettings:
    """Checked static settings; raises ConfigError naming the field that is wrong and why."""
    text = address.strip()
    if "/" not in text:
        raise ConfigError(
            f"address {text!r} has no prefix length.", "Write it as 192.168.10.20/24."
        )
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as exc:
        raise ConfigError(f"address {text!r} is not an IP address with prefix ({exc}).",
                          "Write it as 192.168.10.20/24.") from exc  # fmt: skip
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):  # noqa: PLR2004
        raise ConfigError(
            f"{iface.ip} is the network or broadcast address of {net}.",
            "Give the box a host address inside the subnet.",
        )
    gw = _ip(gateway, "gateway")
    if gw.version != iface.version or gw not in net or gw == iface.ip:
        raise ConfigError(
            f"gateway {gw} is not another address inside {net}.",
            "The gateway must be on the box's own subnet; ask the clinic's network team.",
        )
    servers = tuple(_ip(s, "DNS server") for s in re.split(r"[,\s]+", dns.strip()) if s)
    if not servers:
        raise ConfigError("no DNS server given.", "Give at least one, e.g. 192.168.10.1.")
    return NetworkSettings(AddressMode.STATIC, _interface(interface), iface, gw, servers)


def _ip(text: str, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"{what} {text.strip()!r} is not an IP address.", "Write it as 192.168.10.1."
        ) from exc


def render(settings: NetworkSettings) -> str:
    """The ``.network`` file's text (systemd.network(5))."""
    lines = ["# Written by the appliance's provisioning wizard.", "[Match]",
             f"Name={settings.interface}", "", "[Network]"]  # fmt: skip
    if settings.mode is AddressMode.DHCP:
        lines.append("DHCP=yes")
    else:
        lines += [f"Address={settings.address}", f"Gateway={settings.gateway}"]
        lines += [f"DNS={server}" for server in settings.dns]
    return "\n".join(lines) + "\n"


def static_address(folder: Path) -> IPAddress | None:
    """The static address the wizard gave the box (None for DHCP or before the wizard)."""
    try:
        text = (folder / NETWORK_FILE).read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "Address":
            try:
                return ipaddress.ip_interface(value.strip()).ip
            except ValueError:
                return None
    return None


def write_network(folder: Path, settings: NetworkSettings) -> Path:
    """Write the file atomically into ``folder`` (created if needed); returns its path."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o755)
    path = folder / NETWORK_FILE
    atomic_write(path, render(settings).encode(), mode=0o644)
    return path
