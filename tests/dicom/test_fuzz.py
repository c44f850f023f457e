"""Hypothesis fuzz of the data sets a modality may send, over real associations: every answer is
Success (and the instance is stored and well formed) or a failure status with an ErrorComment
(and nothing is stored); never a handler crash, never a dropped association, and the receiver
answers C-ECHO afterwards."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, reject, settings
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE

from appliance.dicom.checks import STORAGE_CLASSES, StoreStatus
from appliance.dicom.receiver import Receiver
from appliance.dicom.store import StudyStore

from .conftest import as_file, make_image, send

REFUSALS = {int(s) for s in StoreStatus} - {0}
KEYWORDS = [
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns",
    "BitsAllocated", "SamplesPerPixel", "PixelData", "Modality", "PatientName",
]  # fmt: skip
UID_VALUES = st.one_of(
    st.just(""),
    st.text(alphabet="0123456789.", max_size=70),
    st.sampled_from(list(STORAGE_CLASSES)),
)
INT_VALUES = st.one_of(st.integers(0, 65535), st.none())


@st.composite
def mutated(draw: Any) -> dict[str, Any]:
    return {
        "drop": draw(st.sets(st.sampled_from(KEYWORDS), max_size=3)),
        "uids": draw(st.dictionaries(st.sampled_from(KEYWORDS[1:4]), UID_VALUES, max_size=2)),
        "ints": draw(
            st.dictionaries(
                st.sampled_from(["Rows", "Columns", "BitsAllocated", "SamplesPerPixel"]),
                INT_VALUES,
                max_size=2,
            )
        ),  # fmt: skip
        "frames": draw(st.one_of(st.none(), st.sampled_from(["1", "2", "0", "-3", "x"]))),
        "pixels": draw(st.one_of(st.none(), st.integers(0, 600))),
        "cut": draw(st.one_of(st.none(), st.integers(1, 700))),
    }


def _build(m: dict[str, Any], folder: Path) -> Path:
    image = make_image("CT")
    path = folder / f"{generate_uid()}.dcm"
    try:
        for keyword, value in (m["uids"] | m["ints"]).items():
            setattr(image, keyword, value)
        if m["frames"] is not None:
            image.NumberOfFrames = m["frames"]
        if m["pixels"] is not None:
            image.PixelData = (bytes(range(256)) * 3)[: m["pixels"]]
        for keyword in m["drop"]:
            if keyword in image:
                delattr(image, keyword)
        as_file(image, path)
    except (ValueError, TypeError, OverflowError, AttributeError, OSError):
        reject()  # pydicom itself cannot hold or write it: no sender could send it either
    if m["cut"] is not None:
        data = path.read_bytes()
        path.write_bytes(data[: max(300, len(data) - m["cut"])])
    return path


def _check_one(receiver: Receiver, store: StudyStore, m: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _build(m, Path(tmp))
        before = store.instance_uids()
        result = send(receiver.port, path)
    assert isinstance(result, list), "the association must be accepted"
    (status,) = result
    code = getattr(status, "Status", None)
    assert code is not None, "no response: the receiver dropped the association"
    after = store.instance_uids()
    if code == 0:
        (new,) = after - before
        (file,) = store.execute("SELECT file FROM instances WHERE sop_uid = ?", (new,))
        stored = dcmread(store.root / file[0])
        assert str(stored.SOPInstanceUID) == new and "PixelData" in stored
    else:
        assert code in REFUSALS, f"unexpected status 0x{code:04X} (a handler crash is 0xC211)"
        assert status.ErrorComment, "a refusal must say what was wrong"
        assert after == before, "a refused instance left something behind"


def test_fuzzed_data_sets_get_a_status_never_a_crash(receiver: Receiver, store: StudyStore) -> None:
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
    @given(m=mutated())
    def one(m: dict[str, Any]) -> None:
        _check_one(receiver, store, m)

    one()
    ae = AE(ae_title="MODALITY1")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", receiver.port, ae_title="APPLIANCE")
    assert assoc.is_established and assoc.send_c_echo().Status == 0, "the receiver went down"
    assoc.release()
