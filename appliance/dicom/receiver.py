"""The DICOM receiver: a pynetdicom SCP for C-ECHO and C-STORE of CT, MR, CR, DX and SC images.

Only configured peers may associate: the calling AE title *and* the source address must match an
entry of ``peers.json`` (re-read for every connection, so the console's changes apply at once).
A connection from an address no peer has is closed as it is accepted, before it takes one of the
16 association slots (else anyone on the network could hold them all by connecting and saying
nothing); a peer's address with an unknown AE title gets an A-ASSOCIATE-RJ (calling AE not
recognised). Either way one log line says who was turned away and what to do. Each C-STORE's
data set is written to a file as it arrives (``incoming/``: memory does not grow with the
instance), checked from there (:mod:`appliance.dicom.checks`), moved into the spool, fsynced and
committed, *before* the Success status goes back: an
instance the sender saw acknowledged survives a kill -9 or a power cut. A refused instance gets
a failure status with an ErrorComment and leaves nothing behind; the association stays up.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import UID

from appliance.config import Config
from appliance.dicom.checks import (
    STORAGE_CLASSES,
    InstanceInfo,
    PixelLimits,
    RefusedInstanceError,
    StoreStatus,
    check_instance,
    read_received,
    size_text,
    transfer_cap,
)
from appliance.dicom.peers import DEFAULT_AE_TITLE, Peer, load_peers
from appliance.dicom.store import StudyStore, key_of
from appliance.errors import ApplianceError

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
# Offered for every storage class: the native syntaxes and the common compressed ones. Whether
# compressed pixel data can be decoded here is decided per instance (checks.py), so a sender
# whose syntax is not decodable gets a clear failure status instead of a bare negotiation refusal.
# Not Deflated Explicit VR Little Endian: pynetdicom inflates a data set whole, without a bound,
# so a few kB sent become gigabytes here; a sender that offers it offers the native ones too.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
]
_REJECT_PERMANENT, _SOURCE_USER, _CALLING_AE_UNKNOWN = 0x01, 0x01, 0x03
# The longest PDU the receiver reads: 64 times the 16 KiB it tells peers at association (the
# most a P-DATA PDU may hold), far above any A-ASSOCIATE-RQ with every class in every syntax.
MAX_PDU_BYTES = 1 << 20
_TAKES = (
    "this box takes CT, MR, CR, DX and SC images (CT, MR, CR, Digital X-Ray and Secondary "
    "Capture Image Storage) in Explicit or Implicit VR Little Endian, RLE, JPEG or JPEG 2000: "
    "configure the modality to send those classes in one of those transfer syntaxes"
)


class PeerAddresses:
    """The IP addresses of the peers' hosts, each host name's remembered for a while.

    Every connection is screened in the server's accepting thread, and ``getaddrinfo`` blocks
    for as long as the clinic's DNS takes: asked afresh each time, a DNS that does not answer
    would hold up every connection, even those of peers configured by address. A name is looked
    up again after ``ttl`` seconds (``failed_ttl`` after a failure), and a peer configured by
    address never waits for a name.
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        failed_ttl: float = 30.0,
        lookup: Callable[[str], set[str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl, self.failed_ttl = ttl, failed_ttl
        self._lookup = lookup or _resolve
        self._clock = clock
        self._known: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def of(self, host: str) -> set[str]:
        """The addresses ``host`` stands for (itself when it is one; none when unresolvable)."""
        try:
            return {str(ipaddress.ip_address(host))}
        except ValueError:
            pass
        now = self._clock()
        with self._lock:
            known = self._known.get(host)
        if known is not None and known[0] > now:
            return known[1]
        found = self._lookup(host)
        with self._lock:
            self._known[host] = (now + (self.ttl if found else self.failed_ttl), found)
        return found

    def has(self, peers: list[Peer], address: str) -> bool:
        """Whether ``address`` is one of the peers' (those configured by address first)."""
        ordered = sorted(peers, key=lambda peer: not _is_address(peer.host))
        return any(address in self.of(peer.host) for peer in ordered)

    def peer(self, peers: list[Peer], ae_title: str, address: str) -> Peer | None:
        """The peer with this calling AE title whose host is ``address``, or None."""
        for peer in peers:
            if peer.ae_title == ae_title.strip() and address in self.of(peer.host):
                return peer
        return None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str) -> set[str]:
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return set()
    return {str(info[4][0]) for info in infos}


def refused_contexts_line(
    calling: str, address: str, refused: dict[str, list[str]], *, none_accepted: bool
) -> str:
    """The warning for an association some of whose offers the box refused: ``refused`` maps each
    SOP class UID refused (and accepted in no other context) to the transfer syntax UIDs offered
    for it. Classes and syntaxes go by their DICOM names; none of this is PHI."""
    offers = "; ".join(
        f"{UID(sop_class).name} ({', '.join(UID(ts).name for ts in syntaxes)})"
        for sop_class, syntaxes in refused.items()
    )
    outcome = (
        "no image class it offers is taken, so none of its images can arrive"
        if none_accepted
        else "its other offers are taken"
    )
    return (
        f"dicom: association from AE {calling!r} at {address}: not taken: {offers}; {outcome}; "
        f"{_TAKES}"
    )


@dataclass
class Receiver:
    """One running SCP; :meth:`stop` shuts it down."""

    server: Any  # pynetdicom ThreadedAssociationServer
    host: str
    port: int
    ae_title: str

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handlers:
    """The event handlers of one receiver (they need the config and the store)."""

    def __init__(self, config: Config, store: StudyStore, ae: Any) -> None:
        self.config = config
        self.store = store
        self.ae = ae  # pynetdicom's AE: the associations it holds
        self.addresses = PeerAddresses()
        # Bytes of the data set arriving on each association (by id), -1 once aborted.
        self._arriving: dict[int, int] = {}
        self._cap = transfer_cap(PixelLimits.of(config))

    def admits(self, request: Any, client_address: Any) -> bool:
        """Whether a new connection comes from a configured peer's address (the server's
        ``verify_request``: a refused connection is closed without an association thread)."""
        address = str(client_address[0])
        try:
            peers = load_peers(self.config)
        except ApplianceError as exc:
            log.warning("dicom: connection from %s refused, the peer list cannot be read: %s",
                        address, exc)  # fmt: skip
            return False
        if not self.addresses.has(peers, address):
            log.warning(
                "dicom: connection from %s refused: no configured peer has this address "
                "(add it in the console, Provisioning > PACS peers)",
                address,
            )
            return False
        return self._has_room(address)

    def _has_room(self, address: str) -> bool:
        """Whether ``address`` holds fewer associations than it may: a device that connects and
        says nothing holds each connection until the 30 s timeout, and one address must not
        hold every one of the receiver's, keeping the other modalities out."""
        held = sum(1 for assoc in self.ae.active_associations
                   if str(assoc.requestor.address) == address)  # fmt: skip
        most = self.config.dicom_max_associations_per_address
        if held < most:
            return True
        log.warning(
            "dicom: connection from %s refused: it already holds %d associations, the most one "
            "address may (dicom_max_associations_per_address); check that device's DICOM "
            "settings, or raise the limit for a PACS that sends in more at once", address, held,
        )  # fmt: skip
        return False

    def opened(self, event: Any) -> None:
        """Bound each PDU's read (EVT_CONN_OPEN, before the association reads anything).

        pynetdicom reads a PDU whole into memory, however long its header says it is (up to
        4 GiB), before any check sees it: one connection, even before its AE title is checked,
        could run the box out of memory. A longer PDU closes the connection instead.
        """
        sock = event.assoc.dul.socket
        read = sock.recv
        address = str(event.address[0]) if event.address else "?"

        def bounded(nr_bytes: int) -> bytearray:
            if nr_bytes > MAX_PDU_BYTES:
                log.warning(
                    "dicom: connection from %s closed: it announced a PDU of %s, more than the "
                    "%s the box reads (peers are told 16 KiB at association); check the sending "
                    "device's maximum PDU length", address, size_text(nr_bytes),
                    size_text(MAX_PDU_BYTES),
                )  # fmt: skip
                raise OSError(f"a PDU of {nr_bytes} bytes is refused")
            return cast(bytearray, read(nr_bytes))

        sock.recv = bounded

    def requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        # At this point only the A-ASSOCIATE-RQ primitive holds the calling AE title.
        calling = str(requestor.primitive.calling_ae_title).strip()
        try:
            peers = load_peers(self.config)
        except ApplianceError as exc:
            log.warning("dicom: association refused, the peer list cannot be read: %s", exc)
            peers = []
        if self.addresses.peer(peers, calling, requestor.address) is None:
            log.warning(
                "dicom: association from AE %r at %s refused: not a configured peer "
                "(add it in the console, Provisioning > PACS peers)",
                calling, requestor.address,
            )  # fmt: skip
            # As pynetdicom's own refusal does it: reject, then let the DUL flush and stop.
            event.assoc.acse.send_reject(_REJECT_PERMANENT, _SOURCE_USER, _CALLING_AE_UNKNOWN)
            event.assoc.kill()

    def accepted(self, event: Any) -> None:
        """Say which offered SOP classes and transfer syntaxes were refused, and what to do: a
        modality whose offers were all refused gives up, and the box's journal is the only place
        a field technician can learn why its images never arrive."""
        assoc = event.assoc
        taken = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        offered = {
            cx.context_id: cx
            for cx in assoc.requestor.primitive.presentation_context_definition_list
        }
        refused: dict[str, list[str]] = {}
        for cx in assoc.rejected_contexts:
            sop_class = str(cx.abstract_syntax)
            if sop_class in taken:  # offered again in a syntax the box took: nothing is lost
                continue
            syntaxes = refused.setdefault(sop_class, [])
            source = offered.get(cx.context_id, cx)
            syntaxes += [str(ts) for ts in source.transfer_syntax if str(ts) not in syntaxes]
        if refused:
            calling = str(assoc.requestor.ae_title).strip()
            log.warning(refused_contexts_line(
                calling, str(assoc.requestor.address), refused,
                none_accepted=not taken.intersection(STORAGE_CLASSES),
            ))  # fmt: skip

    def echo(self, event: Any) -> int:
        return 0x0000

    def on_store(self, event: Any) -> int | Dataset:
        calling = str(event.assoc.requestor.ae_title).strip()
        # The instance as it arrived, written to a file fragment by fragment (pynetdicom's
        # chunked receive, set in start_receiver): checked from there and moved into the spool.
        received = Path(event.dataset_path)
        try:
            info = self._accept(event, received)
            self.store.write_instance(received, info, calling)
        except RefusedInstanceError as exc:
            log.warning("dicom: instance from %s refused (0x%04X): %s",
                        calling, exc.status, exc.detail)  # fmt: skip
            return exc.response()
        except ApplianceError as exc:
            log.warning("dicom: instance from %s not stored: %s", calling, exc)
            full = RefusedInstanceError(StoreStatus.OUT_OF_RESOURCES, "spool not writable")
            return full.response()
        finally:
            received.unlink(missing_ok=True)  # refused or failed; moved away when stored
        log.info("dicom: stored instance %s of study %s from %s",
                 key_of(info.sop_uid), key_of(info.study_uid), calling)  # fmt: skip
        return 0x0000

    def received(self, event: Any) -> None:
        """Count the data set bytes of the instance arriving (each P-DATA PDU, in the
        association's reader thread) and abort the association once they pass
        :func:`transfer_cap`: the size is otherwise checked only when the data set is complete,
        and one that never ends would fill the state partition it is written to."""
        items = getattr(event.pdu, "presentation_data_value_items", None)
        key = id(event.assoc)
        count = self._arriving.get(key, 0)
        if not items or count < 0:
            return
        for item in items:
            value = item.presentation_data_value or b"\x00"
            if value[0] & 0x01:  # a command fragment: the C-STORE request, not its data set
                continue
            count += len(value) - 1
            if value[0] & 0x02:  # the data set's last fragment: the next one starts at 0
                count = 0
        if count <= self._cap:
            self._arriving[key] = count
            return
        self._arriving[key] = -1
        requestor = event.assoc.requestor
        log.warning(
            "dicom: association from AE %r at %s aborted: an instance passed %s as it arrived "
            "(the limit is %s and what metadata may add); if the sending device's images really "
            "are this large, raise dicom_max_instance_bytes in the box's configuration",
            str(requestor.ae_title).strip(), requestor.address, size_text(self._cap),
            size_text(self.config.dicom_max_instance_bytes),
        )  # fmt: skip
        event.assoc.abort()  # non-blocking in an event handler: the reader thread ends it

    def closed(self, event: Any) -> None:
        """Remove the file of an instance whose transfer the connection's end cut short (an
        abort, a dropped network): pynetdicom removes only the files its handler was given."""
        self._arriving.pop(id(event.assoc), None)
        message = getattr(event.assoc.dimse, "message", None)
        partial = getattr(message, "_data_set_path", None)  # pynetdicom keeps it nowhere public
        if isinstance(partial, Path):
            partial.unlink(missing_ok=True)

    def _accept(self, event: Any, received: Path) -> InstanceInfo:
        context = event.context
        limits = PixelLimits.of(self.config)
        ds = read_received(received, limits)
        claimed = event.request.AffectedSOPInstanceUID
        return check_instance(
            ds,
            context_class=str(context.abstract_syntax),
            syntax=str(context.transfer_syntax),
            claimed_uid=str(claimed) if claimed else None,
            limits=limits,
            source=received,
        )


def start_receiver(
    config: Config,
    store: StudyStore,
    *,
    host: str = "0.0.0.0",  # noqa: S104 (the SCP serves the clinic's network; nftables limits it)
    port: int | None = None,
    ae_title: str = DEFAULT_AE_TITLE,
) -> Receiver:
    """Start the SCP in background threads; ``port`` 0 picks a free one (tests)."""
    from pynetdicom import AE, evt
    from pynetdicom import _config as pynetdicom_config

    # Each C-STORE data set goes to a file as it arrives (in the temporary folder: TMPDIR, which
    # appliance-dicom.service points at the state partition), not into memory: 16 associations
    # sending large instances would otherwise hold them all, several copies each. pynetdicom
    # knows this setting only process-wide; the handler above works with it on.
    pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True

    # pynetdicom logs every DIMSE message (UIDs of the patient's study) at DEBUG and INFO: keep
    # its own loggers to warnings, so that no log line carries a study's identifiers.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom warns about invalid values by quoting them (a patient's name, an ID): the checks
    # here decide what is refused, so its reading warnings are off.
    pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
    # Instances a kill or a power cut interrupted as they arrived: never acknowledged, so the
    # sender sends them again.
    for partial in store.incoming.glob("tmp*.dcm"):
        partial.unlink(missing_ok=True)
    ae = AE(ae_title=ae_title)
    handlers = _Handlers(config, store, ae)
    ae.add_supported_context(VERIFICATION)
    for sop_class in STORAGE_CLASSES:
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    ae.require_called_aet = True  # an association meant for another AE is not ours to accept
    ae.maximum_associations = 16
    ae.maximum_pdu_size = 16382  # pynetdicom's default, told to peers (see MAX_PDU_BYTES)
    ae.network_timeout = ae.acse_timeout = 30
    ae.dimse_timeout = 60
    server: Any = ae.start_server(
        (host, config.dicom_port if port is None else port),
        block=False,
        evt_handlers=[
            (evt.EVT_CONN_OPEN, handlers.opened),
            (evt.EVT_REQUESTED, handlers.requested),
            (evt.EVT_ACCEPTED, handlers.accepted),
            (evt.EVT_C_ECHO, handlers.echo),
            (evt.EVT_C_STORE, handlers.on_store),
            (evt.EVT_PDU_RECV, handlers.received),
            (evt.EVT_CONN_CLOSE, handlers.closed),
        ],
    )
    # socketserver's hook, run as each connection is accepted. A connection accepted before
    # this line is still screened by requested(), at the A-ASSOCIATE-RQ.
    server.verify_request = handlers.admits
    bound_host, bound_port = server.server_address[:2]
    log.info("dicom: receiver %s listening on %s:%d", ae_title, bound_host, bound_port)
    return Receiver(server, str(bound_host), int(bound_port), ae_title)
