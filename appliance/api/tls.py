"""The site certificate the API serves TLS with, kept in the state.

A self-signed ECDSA P-256 certificate naming the box: its box id (the wizard's, once provisioned),
its static address when the wizard gave it one, ``localhost`` and the loopback addresses; clients
pin it or import it and reach the box by any of those names. Made on the API's first start and
made anew at a start that finds the box's names changed (the wizard runs with the API up; its
site and network take effect at the next start). Written atomically, the key readable by its
owner only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.fsutil import atomic_write

log = logging.getLogger(__name__)

# Clients check the validity window against their own clocks, so it must not come from the box's,
# which may be years off when the certificate is made (ADR 0004: a dead RTC battery boots it in
# 2000; a wrong digit in the wizard sets it ahead): then every client would see it expired, or
# not yet valid, and no HTTPS call would succeed. Trust comes from the pinned or imported
# certificate, not its dates: from before any box was made, with "no well-defined expiration
# date" (RFC 5280 4.1.2.5).
VALID_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
VALID_UNTIL = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class SiteCertificate:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.fingerprint(hashes.SHA256()).hex()


def site_names(box_id: str, addresses: Iterable[Address] = ()) -> list[x509.GeneralName]:
    """The names the certificate carries (its subject alternative names)."""
    names: list[x509.GeneralName] = [x509.DNSName(box_id), x509.DNSName("localhost")]
    loopback = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for address in [*loopback, *addresses]:
        if x509.IPAddress(address) not in names:
            names.append(x509.IPAddress(address))
    return names


def ensure_site_certificate(
    folder: Path, box_id: str, addresses: Iterable[Address] = ()
) -> SiteCertificate:
    """The site certificate in ``folder`` for these names: made if there is none, or if the one
    there names the box otherwise (then with a new key, and a warning giving both fingerprints:
    clients that pinned the old certificate must import the new one)."""
    site = SiteCertificate(folder / "site.crt", folder / "site.key")
    names = site_names(box_id, addresses)
    old = None
    if site.cert.exists() and site.key.exists():
        try:
            cert = x509.load_pem_x509_certificate(site.cert.read_bytes())
            held = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (ValueError, x509.ExtensionNotFound):
            held = None
        if held is not None and set(held) == set(names):
            return site
        old = site.fingerprint() if held is not None else "unreadable"
    _make(site, box_id, names)
    if old is not None:
        log.warning(
            "api: site certificate made anew for %s (the box's names changed); SHA-256 %s, was "
            "%s: clients that pinned the old one must import %s", _describe(names),
            site.fingerprint(), old, site.cert,
        )  # fmt: skip
    return site


def _describe(names: list[x509.GeneralName]) -> str:
    return ", ".join(str(n.value) for n in names)


def _make(site: SiteCertificate, box_id: str, names: list[x509.GeneralName]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, box_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clinical AI appliance"),
    ])  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(VALID_FROM)
        .not_valid_after(VALID_UNTIL)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(site.key, pem_key, mode=0o600)
    atomic_write(site.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
