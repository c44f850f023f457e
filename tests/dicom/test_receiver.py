"""The receiver over real associations: who may associate, what is stored, what is refused."""

from __future__ import annotations

import contextlib
import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE

from appliance.config import Config
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.receiver import PeerAddresses, Receiver, start_receiver
from appliance.dicom.store import StudyState, StudyStore, read_images

from .conftest import MODALITY_CLASS, SCU_AE, as_file, make_image, send


@pytest.mark.parametrize("modality", ["CT", "MR", "CR", "DX", "OT"])
def test_each_storage_class_is_stored_and_acknowledged(
    receiver: Receiver, store: StudyStore, modality: str
) -> None:
    image = make_image(modality)
    (status,) = send(receiver.port, image)
    assert status.Status == 0x0000
    (path,) = store.instance_files(str(image.StudyInstanceUID))
    stored = dcmread(path)
    assert stored.SOPInstanceUID == image.SOPInstanceUID
    assert stored.PixelData == image.PixelData
    study = store.study(str(image.StudyInstanceUID))
    assert study is not None and study.state is StudyState.OPEN


def test_echo_from_a_peer(receiver: Receiver) -> None:
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="APPLIANCE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize("ae_title", ["STRANGER", "modality1", "MODALITY2"])
def test_unknown_calling_ae_is_rejected_with_a_log_line(
    receiver: Receiver, store: StudyStore, ae_title: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assoc = send(receiver.port, make_image(), ae_title=ae_title)
    assert not isinstance(assoc, list) and assoc.is_rejected
    assert f"association from AE '{ae_title}' at 127.0.0.1 refused" in caplog.text
    assert "Provisioning > PACS peers" in caplog.text
    assert store.studies() == []


def test_known_ae_from_another_address_is_rejected(
    box: object, store: StudyStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.dicom.peers import Peer, save_peers

    save_peers(box, [Peer("MODALITY1", "10.9.8.7", 104)])  # type: ignore[arg-type]
    assoc = send(receiver.port, make_image())
    assert not isinstance(assoc, list) and not assoc.is_established
    assert "connection from 127.0.0.1 refused: no configured peer has this address" in caplog.text
    assert store.studies() == []


def test_silent_connections_from_a_stranger_do_not_lock_out_the_peers(
    receiver: Receiver, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    # 127.0.0.2 is this host too, but no peer's address: it takes every association slot there
    # is (16) and says nothing, as anyone on the clinic's network could.
    stranger = [
        socket.create_connection(("127.0.0.1", receiver.port), source_address=("127.0.0.2", 0))
        for _ in range(16)
    ]
    try:
        for sock in stranger:  # each is either closed by the box or holds a slot
            sock.settimeout(0.2)
            with contextlib.suppress(TimeoutError):
                assert sock.recv(1) == b""
        statuses = send(receiver.port, make_image())
        assert isinstance(statuses, list), "the configured peer was turned away"
        assert [s.Status for s in statuses] == [0]
        assert "connection from 127.0.0.2 refused: no configured peer has this address" in (
            caplog.text
        )
    finally:
        for sock in stranger:
            sock.close()


def test_one_address_cannot_hold_every_association(
    box: Config, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack, or a broken device: a peer's address opens connections and says nothing, each
    # held until the 30 s timeout (pynetdicom keeps the slot that long even once the connection
    # is closed). It may hold a few; the other modalities keep the rest.
    save_peers(box, [Peer(SCU_AE, "127.0.0.1", 104, "test modality"),
                     Peer("MODALITY2", "127.0.0.3", 104, "the CT next door")])  # fmt: skip
    rx = start_receiver(box, store, host="127.0.0.1", port=0)
    most = box.dicom_max_associations_per_address
    hog: list[socket.socket] = []
    try:
        for _ in range(16):  # every association the receiver has
            hog.append(socket.create_connection(("127.0.0.1", rx.port)))
            time.sleep(0.1)  # each association's thread starts before the next connection
        held = [sock for sock in hog if _still_open(sock)]
        assert len(held) == most, "the address held more associations than it may"
        assert f"127.0.0.1 refused: it already holds {most} associations" in caplog.text
        assert "dicom_max_associations_per_address" in caplog.text
        ae = AE(ae_title="MODALITY2")  # another peer gets in meanwhile
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", rx.port, ae_title="APPLIANCE",
                             bind_address=("127.0.0.3", 0))  # fmt: skip
        assert assoc.is_established
        assoc.release()
    finally:
        for sock in hog:
            sock.close()
        rx.stop()


def _still_open(sock: socket.socket) -> bool:
    """Whether the box kept ``sock`` open (a refused connection is closed at once)."""
    sock.settimeout(0.3)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def _refused(receiver: Receiver, store: StudyStore, item: Dataset | Path, **kw: str) -> Dataset:
    result = send(receiver.port, item, **kw)
    assert isinstance(result, list), "the association should be accepted"
    (status,) = result
    assert status.Status != 0x0000
    assert store.studies() == [] and not list(store.spool.rglob("*.dcm")), "something was stored"
    return status


def _without(keyword: str) -> Dataset:
    image = make_image()
    delattr(image, keyword)
    return image


@pytest.mark.parametrize(
    ("case", "status", "comment"),
    [
        (lambda: _without("SOPInstanceUID"), 0xA900, "SOPInstanceUID is missing"),
        (lambda: _without("StudyInstanceUID"), 0xA900, "StudyInstanceUID is missing"),
        (lambda: _without("SeriesInstanceUID"), 0xA900, "SeriesInstanceUID is missing"),
        (lambda: _without("PixelData"), 0xA900, "no pixel data"),
        (lambda: _without("Rows"), 0xA900, "Rows is missing"),
    ],
    ids=["no-sop-uid", "no-study-uid", "no-series-uid", "no-pixels", "no-rows"],
)
def test_incomplete_instance_is_refused(
    receiver: Receiver, store: StudyStore, tmp_path: Path, case: object, status: int, comment: str
) -> None:
    # Sent as a file: pynetdicom's SCU itself refuses to send a data set without SOPInstanceUID.
    got = _refused(receiver, store, as_file(case(), tmp_path / "x.dcm"))  # type: ignore[operator]
    assert got.Status == status
    assert comment in got.ErrorComment


def test_pixel_size_mismatch_is_refused(receiver: Receiver, store: StudyStore) -> None:
    image = make_image(rows=16, columns=16)
    image.PixelData = image.PixelData[:-64]
    got = _refused(receiver, store, image)
    assert got.Status == 0xA900
    assert got.ErrorComment == "pixel data 448 bytes, expected 512"


def test_sop_class_not_matching_the_context_is_refused(
    receiver: Receiver, store: StudyStore, tmp_path: Path
) -> None:
    # The file meta says CT (so the CT context is used); the data set says MR.
    image = make_image("CT")
    image.SOPClassUID = MODALITY_CLASS["MR"]
    got = _refused(receiver, store, as_file(image, tmp_path / "liar.dcm"))
    assert got.Status == 0xA900
    assert "does not match the presentation context" in got.ErrorComment


@pytest.mark.parametrize("cut", [5, 40, 300])
def test_truncated_data_set_is_refused(
    receiver: Receiver, store: StudyStore, tmp_path: Path, cut: int
) -> None:
    path = tmp_path / "cut.dcm"
    make_image().save_as(path, enforce_file_format=True)
    path.write_bytes(path.read_bytes()[:-cut])
    got = _refused(receiver, store, path)
    assert got.Status in (0xC210, 0xA900)
    assert "truncated" in got.ErrorComment or "pixel data" in got.ErrorComment


def test_undecodable_transfer_syntax_is_refused(
    receiver: Receiver, store: StudyStore, tmp_path: Path
) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    candidates = ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.90"]
    missing = [ts for ts in candidates if not get_decoder(UID(ts)).is_available]
    if not missing:
        pytest.skip("every candidate compressed transfer syntax is decodable on this host")
    image = make_image()
    image.file_meta.TransferSyntaxUID = missing[0]
    image.PixelData = encapsulate([b"\xff\xd8not really a jpeg\xff\xd9"])
    path = tmp_path / "compressed.dcm"
    image.save_as(path, enforce_file_format=True)
    got = _refused(receiver, store, path, ts=missing[0])
    assert got.Status == 0xC220
    assert "not decodable here" in got.ErrorComment


def test_service_stays_up_after_refusals(receiver: Receiver, store: StudyStore) -> None:
    bad = make_image()
    bad.PixelData = b"\x00" * 10
    statuses = send(receiver.port, bad, make_image(), bad, make_image())
    assert [s.Status for s in statuses] == [0xA900, 0, 0xA900, 0]
    assert len(store.instance_uids()) == 2


def test_same_study_collects_instances(receiver: Receiver, store: StudyStore) -> None:
    study, series = generate_uid(), generate_uid()
    images = [make_image(study=study, series=series, seed=i) for i in range(3)]
    assert [s.Status for s in send(receiver.port, *images)] == [0, 0, 0]
    spooled = store.instances(study)
    assert len(spooled) == 3
    assert np.array_equal(next(read_images(spooled)).pixel_array.shape, (16, 16))


def test_association_for_another_called_ae_is_rejected(receiver: Receiver) -> None:
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="OTHERBOX")
    assert assoc.is_rejected


def test_sop_instance_uid_reused_in_another_study_is_refused(
    receiver: Receiver, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = make_image(seed=1), make_image(seed=2)
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    assert [s.Status for s in send(receiver.port, first)] == [0]
    (status,) = send(receiver.port, second)
    assert status.Status == 0xA900
    assert "SOPInstanceUID already used in another study" in status.ErrorComment
    assert "refused (0xA900): SOPInstanceUID already used in another study" in caplog.text
    # The first study keeps its instance, and nothing of the second is left for recover().
    (path,) = store.instance_files(str(first.StudyInstanceUID))
    assert dcmread(path).PixelData == first.PixelData
    assert store.instance_files(str(second.StudyInstanceUID)) == []
    assert list(store.spool.rglob("*.dcm")) == [path]
    assert store.recover() == 0
    assert store.instance_files(str(first.StudyInstanceUID)) == [path]


def test_study_database_that_cannot_be_written_gets_out_of_resources_and_a_log_line(
    receiver: Receiver, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    # The other process (the worker in appliance run) holds the write lock past the receiver's
    # patience, as a disk that is full or failing also makes SQLite refuse the write.
    store.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(store.db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        (status,) = send(receiver.port, make_image())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert status.Status == 0xA700
    assert "cannot record an instance in the DICOM study database" in caplog.text
    assert "should resend it" in caplog.text
    assert store.instance_uids() == set()
    assert [s.Status for s in send(receiver.port, make_image())] == [0]


def test_deflated_data_set_is_not_negotiated(
    receiver: Receiver, store: StudyStore, tmp_path: Path
) -> None:
    # A deflate bomb: 32 MiB of zeros in a private element, a few tens of kB on the wire,
    # inflated whole by pynetdicom (twice over) before any check could look at it.
    image = make_image()
    image.add_new(0x00090010, "LO", "BOMB")
    image.add_new(0x00091010, "OB", bytes(32 * 2**20))
    image.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "bomb.dcm"
    image.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 2**20
    result = send(receiver.port, path, ts=DeflatedExplicitVRLittleEndian)
    assert not isinstance(result, list) and not result.is_established
    assert store.studies() == []
    # A sender that also offers a native syntax gets it.
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context(
        MODALITY_CLASS["CT"], [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian]
    )
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="APPLIANCE")
    assert assoc.is_established
    (context,) = assoc.accepted_contexts
    assoc.release()
    assert context.transfer_syntax[0] == ExplicitVRLittleEndian


ENHANCED_CT, RT_PLAN = "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.481.5"


def _offer(port: int, contexts: list[tuple[str, str]]) -> Any:
    """Associate offering ``contexts`` (SOP class, transfer syntax), one context each."""
    ae = AE(ae_title="MODALITY1")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    return ae.associate("127.0.0.1", port, ae_title="APPLIANCE")


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    """The log line holding ``text``; the box logs it in its own thread, so wait for it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
        if lines:
            (line,) = lines
            return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}")


def test_modality_offering_only_classes_the_box_does_not_take_is_told_why(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assoc = _offer(
        receiver.port, [(ENHANCED_CT, ExplicitVRLittleEndian), (RT_PLAN, ImplicitVRLittleEndian)]
    )
    assert not assoc.is_established
    line = _logged(caplog, "dicom: association from AE 'MODALITY1' at 127.0.0.1: not taken:")
    assert "Enhanced CT Image Storage (Explicit VR Little Endian)" in line
    assert "RT Plan Storage (Implicit VR Little Endian)" in line
    assert "no image class it offers is taken, so none of its images can arrive" in line
    assert "configure the modality to send those classes" in line


def test_partly_refused_association_names_only_what_was_refused(
    receiver: Receiver, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ct = MODALITY_CLASS["CT"]
    assoc = _offer(
        receiver.port,
        [
            (ct, DeflatedExplicitVRLittleEndian),  # refused, but CT is taken in the next one
            (ct, ExplicitVRLittleEndian),
            (MODALITY_CLASS["MR"], DeflatedExplicitVRLittleEndian),  # refused: syntax
            (ENHANCED_CT, ExplicitVRLittleEndian),  # refused: class
        ],
    )
    assert assoc.is_established
    image = make_image("CT")
    assert assoc.send_c_store(image).Status == 0x0000
    assoc.release()
    line = _logged(caplog, "dicom: association from AE 'MODALITY1' at 127.0.0.1: not taken:")
    assert "not taken: MR Image Storage (Deflated Explicit VR Little Endian); " in line
    assert "Enhanced CT Image Storage (Explicit VR Little Endian); its other offers are taken" in (
        line
    )
    assert "CT Image Storage (Deflated" not in line
    assert len(store.instance_uids()) == 1


def test_fully_taken_association_logs_no_refusal(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert [s.Status for s in send(receiver.port, make_image())] == [0]
    assert "not taken" not in caplog.text


class _Lookups:
    """A stand-in for the clinic's DNS that counts the questions it is asked."""

    def __init__(self, answers: dict[str, set[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str) -> set[str]:
        self.asked.append(host)
        return self.answers.get(host, set())


def test_peer_host_names_are_looked_up_once_a_while_not_per_connection() -> None:
    now = [0.0]
    dns = _Lookups({"ct-scanner.clinic.lan": {"10.0.0.7"}})
    addresses = PeerAddresses(ttl=300, failed_ttl=30, lookup=dns, clock=lambda: now[0])
    peers = [
        Peer("CT1", "ct-scanner.clinic.lan", 104, "CT"),
        Peer("MR1", "mr.clinic.lan", 104, "MR"),
    ]
    for _ in range(20):  # twenty connections in a minute
        assert addresses.peer(peers, "CT1", "10.0.0.7") is not None
        assert not addresses.has(peers, "10.9.9.9")
        now[0] += 3
    assert sorted(dns.asked) == ["ct-scanner.clinic.lan", "mr.clinic.lan", "mr.clinic.lan"]
    now[0] = 301  # the scanner's name is asked again after its time; the failed one sooner
    assert addresses.has(peers, "10.0.0.7")
    assert dns.asked.count("ct-scanner.clinic.lan") == 2


def test_a_peer_configured_by_address_never_waits_for_a_name() -> None:
    def hung_dns(host: str) -> set[str]:
        raise AssertionError(f"{host} looked up for a connection from a peer's address")

    addresses = PeerAddresses(lookup=hung_dns)
    peers = [Peer("PACS", "pacs.clinic.lan", 104, "PACS"), Peer("CT1", "127.0.0.1", 104, "CT")]
    assert addresses.has(peers, "127.0.0.1")


def test_peer_host_names_resolve_without_a_network() -> None:
    assert "127.0.0.1" in PeerAddresses().of("localhost")  # /etc/hosts
    assert PeerAddresses().of("no-such-host.invalid") == set()
