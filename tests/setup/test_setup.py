"""The wizard's pure checks and small writers: network, time zone and clock, progress, site."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.errors import ConfigError, StorageError
from appliance.setup import clock, network
from appliance.setup.progress import Step, load_progress, progress_file, record_step
from appliance.setup.site import SiteIdentity, load_site, save_site


@pytest.mark.parametrize(
    ("address", "gateway", "dns", "problem"),
    [
        ("192.168.10.20", "192.168.10.1", "1.1.1.1", "has no prefix length"),
        ("192.168.10.300/24", "192.168.10.1", "1.1.1.1", "not an IP address with prefix"),
        ("192.168.10.20/33", "192.168.10.1", "1.1.1.1", "not an IP address with prefix"),
        ("192.168.10.0/24", "192.168.10.1", "1.1.1.1", "network or broadcast address"),
        ("192.168.10.255/24", "192.168.10.1", "1.1.1.1", "network or broadcast address"),
        ("192.168.10.20/24", "10.0.0.1", "1.1.1.1", "not another address inside"),
        ("192.168.10.20/24", "192.168.10.20", "1.1.1.1", "not another address inside"),
        ("192.168.10.20/24", "fd00::1", "1.1.1.1", "not another address inside"),
        ("192.168.10.20/24", "192.168.10.1", "dns.example", "DNS server 'dns.example'"),
        ("192.168.10.20/24", "192.168.10.1", "", "no DNS server"),
    ],
    ids=[
        "no-prefix",
        "bad-ip",
        "bad-prefix",
        "network",
        "broadcast",
        "gw-outside",
        "gw-self",
        "gw-family",
        "dns-name",
        "no-dns",
    ],  # fmt: skip
)
def test_bad_static_settings_say_what_is_wrong(
    address: str, gateway: str, dns: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        network.static(address, gateway, dns)
    assert err.value.hint


def test_static_and_dhcp_files(tmp_path: Path) -> None:
    settings = network.static("fd00:10::20/64", "fd00:10::1", "fd00:10::1, 192.0.2.53", "eth0")
    path = network.write_network(tmp_path / "net", settings)
    assert path.read_text().splitlines()[1:] == [
        "[Match]", "Name=eth0", "", "[Network]", "Address=fd00:10::20/64",
        "Gateway=fd00:10::1", "DNS=fd00:10::1", "DNS=192.0.2.53",
    ]  # fmt: skip
    assert path.stat().st_mode & 0o777 == 0o644
    network.write_network(tmp_path / "net", network.dhcp())
    assert "Name=en*\n\n[Network]\nDHCP=yes\n" in path.read_text()
    with pytest.raises(ConfigError, match="not an interface name"):
        network.dhcp("eth0; rm -rf /")


def test_time_zone_is_checked_and_linked(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a time zone") as err:
        clock.check_timezone("berlin")
    assert "Europe/Berlin" in (err.value.hint or "")
    with pytest.raises(ConfigError):
        clock.check_timezone("../../etc/passwd")
    link = clock.save_timezone(config, "America/New_York")
    assert link.readlink() == clock.ZONEINFO / "America/New_York"
    clock.save_timezone(config, "UTC")  # replaced, not stacked
    assert link.readlink() == clock.ZONEINFO / "UTC"
    assert clock.saved_timezone(config) == "UTC"


def test_clock_parsing_and_the_command_it_would_run(tmp_path: Path) -> None:
    when = clock.parse_clock(" 2026-11-27   14:05 ")
    assert when == datetime(2026, 11, 27, 14, 5)
    assert clock.set_clock_command(when) == ["timedatectl", "set-time", "2026-11-27 14:05:00"]
    with pytest.raises(ConfigError, match="not a date and time"):
        clock.parse_clock("tomorrow at noon")
    # A development or test machine is never "the box": the wizard gets no clock setter there.
    assert not clock.on_the_box(Config(state_dir=tmp_path))
    assert not clock.on_the_box(Config(tcti="swtpm:path=/x"))


def test_progress_survives_a_restart_and_damage_is_reported(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    assert load_progress(config).next_step is Step.SITE
    assert not load_progress(config).started
    record_step(config, Step.SITE, "clinic / box1")
    record_step(config, Step.NETWORK, "DHCP on en*")
    again = load_progress(config)  # as a new process reads it
    assert again.started and again.next_step is Step.TIME
    assert again.done[Step.SITE] == "clinic / box1"
    progress_file(config).write_text("{ half a fil")
    with pytest.raises(StorageError, match="is damaged") as err:
        load_progress(config)
    assert "run the wizard again" in (err.value.hint or "")


def test_site_identity(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    assert load_site(config) is None
    with pytest.raises(ConfigError, match="not usable as a host name"):
        SiteIdentity("Clinic", "box 1")
    with pytest.raises(ConfigError, match="site name is empty"):
        SiteIdentity("  ", "box1")
    save_site(config, SiteIdentity("Clinic", "box1"))
    assert load_site(config) == SiteIdentity("Clinic", "box1")


def test_config_knows_where_the_network_files_go(tmp_path: Path) -> None:
    assert Config(state_dir=tmp_path).network_folder == tmp_path / "network"
    assert Config(network_dir=tmp_path / "n").network_folder == tmp_path / "n"
