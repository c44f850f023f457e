"""The clinic's DICOM peers (PACS, modalities): who may send to the box and where results go.

Stored as one JSON file, ``<state>/dicom/peers.json``, replaced atomically. The console's
provisioning wizard writes it; the receiver and the outbox read it. :func:`echo` is the C-ECHO
test a technician runs against a peer before relying on it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance.config import Config
from appliance.errors import ApplianceError, ConfigError
from appliance.fsutil import atomic_write

DEFAULT_AE_TITLE = "APPLIANCE"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: 16 chars, no backslash
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_HINT = (
    "Give an AE title of 1-16 characters (no backslash), a host name or IP address, a port 1-65535."
)


class DicomError(ApplianceError):
    """A DICOM peer is invalid or could not be reached."""


@dataclass(frozen=True)
class Peer:
    """One DICOM application entity the box talks to."""

    ae_title: str
    host: str
    port: int
    description: str = ""
    # Whether the outbox sends results (SR, heat map SC) here: a PACS yes, a modality no.
    results_destination: bool = False

    def __post_init__(self) -> None:
        if not _AE_TITLE.match(self.ae_title) or not self.ae_title.strip():
            raise ConfigError(f"AE title {self.ae_title!r} is not valid.", _HINT)
        if not _valid_host(self.host):
            raise ConfigError(f"host {self.host!r} is not a host name or IP address.", _HINT)
        if not 1 <= self.port <= 65535:  # noqa: PLR2004
            raise ConfigError(f"port {self.port} is out of range.", _HINT)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.match(host))
    return True


def peers_file(config: Config) -> Path:
    """Where the peer list lives."""
    return config.state_dir / "dicom" / "peers.json"


def load_peers(config: Config) -> list[Peer]:
    """The configured peers (none when the file does not exist yet)."""
    path = peers_file(config)
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"the DICOM peer list {path} cannot be read ({exc}).",
            "Enter the peers again in the console (Provisioning > PACS peers).",
        ) from exc
    try:
        return [Peer(**entry) for entry in raw["peers"]]
    except (KeyError, TypeError) as exc:
        raise ConfigError(
            f"the DICOM peer list {path} is malformed ({exc}).",
            "Enter the peers again in the console (Provisioning > PACS peers).",
        ) from exc


def save_peers(config: Config, peers: list[Peer]) -> None:
    """Replace the peer list atomically (fsynced); AE titles must be unique."""
    titles = [p.ae_title for p in peers]
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    if duplicates:
        raise ConfigError(
            f"AE title(s) {', '.join(duplicates)} appear more than once.",
            "Give every peer its own AE title.",
        )
    data = json.dumps({"peers": [asdict(p) for p in peers]}, indent=2, sort_keys=True)
    path = peers_file(config)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, data.encode() + b"\n", mode=0o600)


def echo(peer: Peer, *, calling_ae: str = DEFAULT_AE_TITLE, timeout: float = 5.0) -> None:
    """Run a DICOM C-ECHO against ``peer``; raise DicomError saying what failed."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not answer"
        raise DicomError(
            f"{peer.ae_title} at {peer.host}:{peer.port} {why}.",
            "Check the peer's host, port and AE title, and that it lists this box "
            f"({calling_ae}) as a known AE.",
        )
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    if code != 0:
        raise DicomError(
            f"{peer.ae_title} answered C-ECHO with status {code!r}.",
            "Check the peer's logs; it accepted the association but refused verification.",
        )
