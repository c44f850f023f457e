"""Decode bombs: an instance of a few bytes that declares gigabytes of pixels is refused from its
declared size, before anything is decoded, over a real association; real images still pass."""

from __future__ import annotations

import dataclasses
import logging
import resource
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from appliance.config import Config
from appliance.dicom.receiver import Receiver, start_receiver
from appliance.dicom.store import StudyStore

from .conftest import make_image, send

# The old check decoded before it bounded anything, and pydicom's RLE decoder allocates and
# zero-fills the whole frame before it finds the segments short: 32768 x 32768 at 16 bits cost
# 2 GiB (the API's upload path; the receiver's decoding failed earlier, see the commit), which
# the test machines survive. The 65535 x 65535 a real attack declares takes 8 GiB per instance.
BOMB_SIDE = 32768
BALLOON_KIB = 256 * 1024  # a bound far above what a refusal costs, far below the old 2 GiB


def _rle_frame() -> bytes:
    """One RLE Lossless frame of two segments (16 bits, one sample) holding one byte each."""
    header = struct.pack("<16I", 2, 64, 66, *[0] * 13)
    return header + b"\x00\x00" + b"\x00\x00"  # each segment: a literal run of one byte


def _bomb(tmp_path: Path, syntax: str, *, side: int = BOMB_SIDE, frames: int = 1) -> Path:
    image = make_image()
    image.Rows = image.Columns = side
    if frames > 1:
        image.NumberOfFrames = frames
    image.file_meta.TransferSyntaxUID = syntax
    if syntax == RLELossless:
        image.PixelData = encapsulate([_rle_frame()] * min(frames, 4))
    path = tmp_path / "bomb.dcm"
    image.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 4096
    return path


def _refused(receiver: Receiver, store: StudyStore, item: Dataset | Path, ts: str) -> Dataset:
    result = send(receiver.port, item, ts=ts)
    assert isinstance(result, list), "the association should be accepted"
    (status,) = result
    assert store.studies() == [] and not list(store.spool.rglob("*.dcm")), "something was stored"
    return status


def _max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


@pytest.mark.parametrize("syntax", [RLELossless, ExplicitVRLittleEndian], ids=["rle", "native"])
def test_decode_bomb_is_refused_before_it_is_decoded(
    receiver: Receiver,
    store: StudyStore,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    syntax: str,
) -> None:
    caplog.set_level(logging.WARNING)
    path = _bomb(tmp_path, syntax)
    before = _max_rss_kib()
    status = _refused(receiver, store, path, syntax)
    grown = _max_rss_kib() - before
    assert status.Status == 0xA700
    assert status.ErrorComment == "decoded frame 2 GiB over the limit of 64 MiB"
    assert grown < BALLOON_KIB, f"the receiver grew by {grown // 1024} MiB"
    assert (
        "dicom: instance from MODALITY1 refused (0xA700): decoded frame 2 GiB over the limit of "
        f"64 MiB ({BOMB_SIDE} x {BOMB_SIDE} pixels, 1 sample of 16 bits, 1 frame); "
        "if the sending device's images really are this large, raise dicom_max_frame_bytes"
    ) in caplog.text
    # The association and the service stay up for the peer's next, real image.
    assert [s.Status for s in send(receiver.port, make_image())] == [0]


def test_many_small_frames_over_the_instance_limit_are_refused(
    receiver: Receiver, store: StudyStore, tmp_path: Path
) -> None:
    # 5,000 frames of 512 x 512 at 16 bits: 2.4 GiB decoded, each frame well within its limit.
    path = _bomb(tmp_path, RLELossless, side=512, frames=5000)
    status = _refused(receiver, store, path, RLELossless)
    assert status.Status == 0xA700
    assert status.ErrorComment == "decoded pixel data 2.4 GiB over the limit of 1 GiB"


def test_rle_image_of_real_size_is_stored(
    receiver: Receiver, store: StudyStore, tmp_path: Path
) -> None:
    # A DR detector's frame, 4300 x 3500 at 16 bits (29 MiB decoded), RLE compressed.
    image = make_image("DX", rows=4300, columns=3500)
    image.compress(RLELossless)
    path = tmp_path / "dx.dcm"
    image.save_as(path, enforce_file_format=True)
    assert [s.Status for s in send(receiver.port, path, ts=RLELossless)] == [0]
    (stored,) = store.instance_files(str(image.StudyInstanceUID))
    assert dcmread(stored).file_meta.TransferSyntaxUID == RLELossless


def test_decode_bomb_uploaded_to_the_api_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    from appliance.api.studies import read_study
    from appliance.api.tensors import InputError

    body = _bomb(tmp_path, RLELossless).read_bytes()
    before = _max_rss_kib()
    with pytest.raises(InputError, match="decoded frame 2 GiB over the limit of 64 MiB"):
        read_study("application/dicom", body)
    grown = _max_rss_kib() - before
    assert grown < BALLOON_KIB, f"the check grew the process by {grown // 1024} MiB"


@pytest.fixture
def strict_receiver(box: Config, store: StudyStore) -> Iterator[Receiver]:
    """A receiver of a site that allows 256 bytes a frame (the test images have 512)."""
    config = dataclasses.replace(box, dicom_max_frame_bytes=256)
    rx = start_receiver(config, store, host="127.0.0.1", port=0)
    yield rx
    rx.stop()


def test_the_site_sets_the_limit(strict_receiver: Receiver, store: StudyStore) -> None:
    status = _refused(strict_receiver, store, make_image(), ExplicitVRLittleEndian)
    assert status.Status == 0xA700
    assert status.ErrorComment == "decoded frame 512 bytes over the limit of 256 bytes"
