"""The site certificate the API serves TLS with: made once (at provisioning), kept in the state.

A self-signed ECDSA P-256 certificate naming the box (its box id, ``localhost`` and the loopback
addresses); clients pin it or import it. Written atomically, the key readable by root only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.fsutil import atomic_write

VALID_DAYS = 3650


@dataclass(frozen=True)
class SiteCertificate:
    cert: Path
    key: Path

    def fingerprint(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.fingerprint(hashes.SHA256()).hex()


def ensure_site_certificate(folder: Path, box_id: str) -> SiteCertificate:
    """The site certificate in ``folder``, created on first use."""
    site = SiteCertificate(folder / "site.crt", folder / "site.key")
    if site.cert.exists() and site.key.exists():
        return site
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, box_id),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Clinical AI appliance"),
    ])  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    sans: list[x509.GeneralName] = [x509.DNSName(box_id), x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                    x509.IPAddress(ipaddress.ip_address("::1"))]  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(site.key, pem_key, mode=0o600)
    atomic_write(site.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return site
