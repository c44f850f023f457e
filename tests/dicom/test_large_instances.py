"""Large instances over real associations: the receiver writes each data set to a file as it
arrives and checks it from there, so its memory does not grow with the instance (16 senders of
large images at once would otherwise hold them all, several copies each); a transfer cut short
leaves no file behind, and a file larger than the site's limit is refused before it is read."""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from appliance.config import Config
from appliance.dicom.checks import PixelLimits, transfer_cap
from appliance.dicom.receiver import Receiver, start_receiver
from appliance.dicom.store import StudyStore

from .conftest import make_image, send

ROOT = Path(__file__).resolve().parents[2]
SIDE = 4096  # one 16-bit frame of 32 MiB: half the default frame limit
FRAMES_RLE = 32  # 32 frames of 512 x 512 at 16 bits: 16 MiB decoded


def _gradient(rows: int, columns: int, frames: int) -> bytes:
    """Smooth pixel values (as an image is), which RLE compresses, unlike noise."""
    ramp = (np.add.outer(np.arange(rows), np.arange(columns)) % 4096).astype(np.uint16)
    return np.repeat(ramp[np.newaxis], frames, axis=0).tobytes()


def _large_native(tmp_path: Path) -> Path:
    image = make_image(rows=SIDE, columns=SIDE)
    image.PixelData = _gradient(SIDE, SIDE, 1)
    path = tmp_path / "large.dcm"
    image.save_as(path, enforce_file_format=True)
    return path


def _large_rle(tmp_path: Path) -> Path:
    image = make_image(rows=512, columns=512)
    image.NumberOfFrames = FRAMES_RLE
    image.PixelData = _gradient(512, 512, FRAMES_RLE)
    image.compress(RLELossless)
    path = tmp_path / "large-rle.dcm"
    image.save_as(path, enforce_file_format=True)
    return path


def _send_elsewhere(port: int, path: Path, syntax: str) -> int:
    """Send the file ``path`` from another process (a modality is one); return the status."""
    code = (
        "import sys; from pathlib import Path; from tests.dicom.conftest import send; "
        f"(status,) = send({port}, Path(sys.argv[1]), ts={syntax!r}); print(status.Status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return int(done.stdout.split()[-1])


def _peak_while(action: Callable[[], int]) -> tuple[int, int]:
    """``action()``'s result and the most memory this process's Python code held meanwhile
    (every thread: each association runs in its own), above what it held before."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = action()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("build", "syntax", "decoded"),
    [
        (_large_native, ExplicitVRLittleEndian, SIDE * SIDE * 2),
        (_large_rle, RLELossless, 512 * 512 * 2 * FRAMES_RLE),
    ],
    ids=["native", "rle"],
)
def test_large_instance_is_stored_without_being_held_in_memory(
    tmp_path: Path,
    receiver: Receiver,
    store: StudyStore,
    build: Callable[[Path], Path],
    syntax: str,
    decoded: int,
) -> None:
    path = build(tmp_path)
    status, peak = _peak_while(lambda: _send_elsewhere(receiver.port, path, syntax))
    assert status == 0x0000
    (stored,) = store.spool.rglob("*.dcm")
    sent, kept = dcmread(path), dcmread(stored)
    assert kept.SOPInstanceUID == sent.SOPInstanceUID
    assert kept.PixelData == sent.PixelData, "the spool holds the pixel data as sent"
    # The old receiver held the data set three times over (as received, decoded, and encoded
    # again for the spool): 96 MiB for the native 32 MiB. Now: its small elements, and one
    # decoded frame of the RLE instance (0.5 MiB), besides pynetdicom's PDU buffers.
    assert (
        peak < decoded // 4
    ), f"the receiver held {peak >> 20} MiB for a {decoded >> 20} MiB image"


@pytest.fixture
def incoming(store: StudyStore, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the receiver's data sets arrive in: TMPDIR, as appliance-dicom.service sets it
    (the tests' receivers otherwise use the system's)."""
    monkeypatch.setattr(tempfile, "tempdir", str(store.incoming))
    return store.incoming


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_transfer_cut_short_leaves_no_file(
    tmp_path: Path, incoming: Path, receiver: Receiver, store: StudyStore
) -> None:
    path = _large_native(tmp_path)
    code = (
        "import sys; from pathlib import Path; from tests.dicom.conftest import send; "
        f"send({receiver.port}, Path(sys.argv[1]))"
    )
    modality = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT)
    try:
        _wait_for(lambda: any(p.stat().st_size > 0 for p in incoming.iterdir()), "the transfer")
    finally:
        modality.kill()  # switched off mid-image
        modality.wait()
    _wait_for(lambda: not any(incoming.iterdir()), "the receiver to remove the partial file")
    assert store.studies() == [] and not list(store.spool.rglob("*.dcm"))
    # The receiver takes the next instance as usual, and keeps no file of it but the spool's.
    (status,) = send(receiver.port, make_image())
    assert status.Status == 0x0000
    assert len(store.studies()) == 1 and not any(incoming.iterdir())


@pytest.fixture
def small_box(box: Config, store: StudyStore) -> Iterator[Receiver]:
    config = dataclasses.replace(box, dicom_max_instance_bytes=1024 * 1024)
    rx = start_receiver(config, store, host="127.0.0.1", port=0)
    yield rx
    rx.stop()


def test_file_over_the_instance_limit_is_refused_before_it_is_read(
    tmp_path: Path,
    incoming: Path,
    small_box: Receiver,
    store: StudyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Small pixel data, padded by a private element to past the limit and what metadata may add.
    image = make_image()
    image.private_block(0x0011, "PADDING", create=True).add_new(0x01, "OB", bytes(66 << 20))
    path = tmp_path / "padded.dcm"
    image.save_as(path, enforce_file_format=True)
    (status,) = send(small_box.port, path)
    assert status.Status == 0xA700
    assert "over the limit of 1 MiB" in status.ErrorComment
    assert "raise dicom_max_instance_bytes" in caplog.text
    assert store.studies() == [] and not any(incoming.iterdir())
    assert dcmread(path).Rows == 16  # the file itself was valid: only its size was refused


def test_data_set_that_does_not_end_is_cut_off_as_it_arrives(
    tmp_path: Path,
    box: Config,
    incoming: Path,
    small_box: Receiver,
    store: StudyStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The attack: a sender (broken, or not a modality at all) whose data set goes on and on.
    # Its size is checked when the data set is complete, so without a cap on the way in it
    # would fill the state partition the data set is written to, and every file there with it.
    cap = transfer_cap(PixelLimits.of(dataclasses.replace(box, dicom_max_instance_bytes=1 << 20)))
    image = make_image()
    image.private_block(0x0011, "PADDING", create=True).add_new(0x01, "OB", bytes(cap + (64 << 20)))
    path = tmp_path / "endless.dcm"
    image.save_as(path, enforce_file_format=True)
    largest = 0
    sending = threading.Thread(target=lambda: send(small_box.port, path), daemon=True)
    sending.start()
    while sending.is_alive():
        largest = max([largest, *(p.stat().st_size for p in incoming.glob("tmp*.dcm")
                                  if p.exists())])  # fmt: skip
        time.sleep(0.01)
    assert 0 < largest <= cap + (1 << 20), f"{largest >> 20} MiB arrived of a {cap >> 20} MiB cap"
    assert f"aborted: an instance passed {cap >> 20} MiB as it arrived" in caplog.text
    assert "raise dicom_max_instance_bytes" in caplog.text
    _wait_for(lambda: not any(incoming.iterdir()), "the receiver to remove the partial file")
    assert store.studies() == []
    # The receiver takes the next instance as usual.
    (status,) = send(small_box.port, make_image())
    assert status.Status == 0x0000


def test_a_pdu_announced_huge_is_not_read_into_memory(
    receiver: Receiver, store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack: from a peer's address, before any AE title is checked, a PDU header that
    # announces 4 GiB, then bytes for as long as the box reads them. pynetdicom reads a PDU
    # whole before anything sees it, so without a bound the box fills its memory.
    header = struct.pack(">BBL", 0x01, 0, 0xFFFFFFF0)  # an A-ASSOCIATE-RQ of 4 GiB
    chunk = bytes(1 << 20)

    def attack() -> int:
        sent = 0
        with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as conn:
            try:
                conn.sendall(header)
                for _ in range(64):  # 64 MiB, unless the box closes the connection first
                    conn.sendall(chunk)
                    sent += len(chunk)
                conn.shutdown(socket.SHUT_WR)
                while conn.recv(4096):
                    pass
            except OSError:  # reset by the box: what a bounded read does
                pass
        return sent

    sent, peak = _peak_while(attack)
    assert peak < 8 << 20, f"the receiver held {peak >> 20} MiB of a PDU it should not read"
    assert sent < 32 << 20, f"the box read {sent >> 20} MiB of a PDU announced as 4 GiB"
    assert "closed: it announced a PDU of 4.0 GiB, more than the 1 MiB the box reads" in (
        caplog.text
    )
    (status,) = send(receiver.port, make_image())  # and takes the next association as usual
    assert status.Status == 0x0000


def test_files_of_transfers_a_crash_cut_short_are_removed_at_start(
    box: Config, store: StudyStore, incoming: Path
) -> None:
    partial = incoming / "tmpa1b2c3.dcm"
    partial.write_bytes(b"\0" * 128 + b"DICM half an image")
    rx = start_receiver(box, store, host="127.0.0.1", port=0)
    rx.stop()
    assert not partial.exists()
