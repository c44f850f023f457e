"""The site certificate names the box as the wizard set it up: a client that imported it reaches
the box by its box id or its static address with full hostname checking, and by no other name;
it is made anew, with a warning, when those names change, and kept otherwise."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import openvino as ov
import pytest
from cryptography import x509

from appliance.api.server import serve
from appliance.api.tls import ensure_site_certificate
from appliance.setup.network import static, static_address, write_network
from appliance.setup.site import SiteIdentity, box_name, save_site

from .conftest import Served

BOX = "clinic-a-box1"
ADDRESS = "192.168.10.20"


def _handshake(port: int, cafile: Path, name: str) -> None:
    """A TLS handshake with the API as a client that imported the certificate and asks for
    ``name`` (a host name or an IP address, checked against the certificate as browsers do)."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=name),
    ):
        pass


@pytest.fixture
def provisioned(prepared: Served) -> Iterator[Served]:
    """The box after the wizard's site and network steps (static address), then started."""
    save_site(prepared.config, SiteIdentity("Clinic A", BOX))
    write_network(prepared.config.network_folder,
                  static(f"{ADDRESS}/24", "192.168.10.1", "192.168.10.1"))  # fmt: skip
    prepared.api = serve(prepared.rt, ov.Core(), port=0)
    try:
        yield prepared
    finally:
        prepared.api.stop()


def test_clients_reach_the_box_by_its_provisioned_names_and_no_other(provisioned: Served) -> None:
    api = provisioned.api
    assert api.tls is not None
    for name in (BOX, ADDRESS, "localhost", "127.0.0.1"):
        _handshake(api.port, api.tls.cert, name)
    for name in ("appliance", "192.168.10.21", "clinic-b-box1"):
        with pytest.raises(ssl.SSLCertVerificationError):
            _handshake(api.port, api.tls.cert, name)
    assert api.services.server_name == BOX  # GET /v2 names the box too
    with provisioned.client() as http:
        assert http.get("/v2").json()["name"] == BOX


def test_the_certificate_is_made_anew_only_when_the_names_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "tls"
    first = ensure_site_certificate(folder, "appliance")
    pinned = first.fingerprint()
    assert (
        ensure_site_certificate(folder, "appliance").fingerprint() == pinned
    ), "a restart with the same names changed the certificate clients pinned"
    assert not caplog.records

    with caplog.at_level(logging.WARNING):
        renewed = ensure_site_certificate(folder, BOX, [ipaddress.ip_address(ADDRESS)])
    assert renewed.fingerprint() != pinned
    cert = x509.load_pem_x509_certificate(renewed.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [BOX, "localhost"]
    assert ipaddress.ip_address(ADDRESS) in names.get_values_for_type(x509.IPAddress)
    warning = caplog.records[-1].getMessage()
    assert renewed.fingerprint() in warning and pinned in warning and "import" in warning

    renewed.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\ndamaged\n")
    assert ensure_site_certificate(folder, BOX, [ipaddress.ip_address(ADDRESS)]).fingerprint()


def test_a_certificate_made_while_the_box_clock_is_years_off_is_valid_for_clients(
    tmp_path: Path,
) -> None:
    """Clients judge the dates by their own clocks; the box's may read 2000 (a dead RTC battery)
    or ten years ahead (a wrong digit in the wizard) when the certificate is made."""
    made = ensure_site_certificate(tmp_path / "tls", BOX)
    cert = x509.load_pem_x509_certificate(made.cert.read_bytes())
    assert cert.not_valid_before_utc <= dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert cert.not_valid_after_utc.year == 9999  # RFC 5280: no well-defined expiration


def test_the_box_name_and_address_come_from_the_wizard_once_saved(prepared: Served) -> None:
    config = prepared.config
    assert box_name(config) == config.box_id and static_address(config.network_folder) is None
    save_site(config, SiteIdentity("Clinic A", BOX))
    write_network(config.network_folder, static(f"{ADDRESS}/24", "192.168.10.1", "192.168.10.1"))
    assert box_name(config) == BOX
    assert static_address(config.network_folder) == ipaddress.ip_address(ADDRESS)
