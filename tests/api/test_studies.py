"""``POST /v1/tasks/studies`` on a served box with the imaging reference model installed through
the update channel: real DICOM files in (one Part 10 file, or several as multipart/related),
real OpenVINO, a durable result and an audit record out; every bad body a 4xx that says what was
wrong, with nothing stored, and never a 500."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from appliance.api.studies import read_study
from appliance.audit.records import AuditEvent
from appliance.identity.roles import Role

from .conftest import Served, serving

IMAGING = Path(__file__).resolve().parents[2] / "models" / "imaging-anomaly"
PATH = "/v1/tasks/studies"
DICOM = {"Content-Type": "application/dicom"}


@pytest.fixture
def studied(prepared: Served) -> Iterator[Served]:
    """The served box with the committed imaging model installed (signed, gated, committed)."""
    prepared.install_folder(IMAGING)
    yield from serving(prepared)


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def sample(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None
    return dcmread(path)


def multipart(parts: list[bytes], kinds: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """A STOW-RS style body of ``parts`` (each application/dicom unless ``kinds`` says)."""
    boundary = "appliance-test-boundary-5b1d"
    kinds = kinds or ("application/dicom",) * len(parts)
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + part + b"\r\n"
        for part, kind in zip(parts, kinds, strict=True)
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def two_slices_of_one_study() -> list[Dataset]:
    first = sample("MR_small.dcm")
    second = sample("MR_small.dcm")
    second.SOPInstanceUID = generate_uid()
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    arr = second.pixel_array.copy()
    arr[20:30, 20:30] = arr.max()  # a bright square: the second slice differs from the first
    second.PixelData = arr.tobytes()
    return [first, second]


def test_one_ct_slice_is_scored_stored_and_audited(studied: Served) -> None:
    ds = sample("CT_small.dcm")
    with studied.client(Role.SERVICE) as http:
        answer = http.post(PATH, content=part10(ds), headers=DICOM)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        stored = http.get(f"/v1/results/{body['request_id']}")
    result = body["result"]
    assert result["study_instance_uid"] == str(ds.StudyInstanceUID)
    ((instance,),) = [result["instances"]]
    assert instance["sop_instance_uid"] == str(ds.SOPInstanceUID)
    assert 0.0 <= instance["score"] <= 1.0 and result["score"] == instance["score"]
    assert 0 <= instance["peak"]["row"] < ds.Rows and 0 <= instance["peak"]["column"] < ds.Columns
    assert body["provenance"]["model_name"] == "imaging-anomaly"
    assert body["provenance"]["device"] == "CPU"
    assert stored.status_code == 200 and stored.json()["outputs"] == result
    audits = [r for r in studied.rt.audit.records() if r.event is AuditEvent.INFERENCE]
    assert audits[-1].detail["route"] == "studies"
    assert audits[-1].subject != str(ds.StudyInstanceUID)  # stored hashed, not in clear


def test_a_study_of_several_instances_as_multipart_related(studied: Served) -> None:
    slices = two_slices_of_one_study()
    body, content_type = multipart([part10(ds) for ds in slices])
    with studied.client(Role.CLINICIAN) as http:
        answer = http.post(PATH, content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 200, answer.text
    result = answer.json()["result"]
    scores = {i["sop_instance_uid"]: i["score"] for i in result["instances"]}
    assert list(scores) == [str(ds.SOPInstanceUID) for ds in slices]
    assert result["score"] == max(scores.values())
    assert scores[result["worst_sop_instance_uid"]] == result["score"]


def _bad_bodies() -> dict[str, tuple[bytes, str, int, str]]:
    ct = part10(sample("CT_small.dcm"))
    other_study = sample("CT_small.dcm")
    other_study.StudyInstanceUID = generate_uid()
    other_study.SOPInstanceUID = generate_uid()
    two_studies, two_type = multipart([ct, part10(other_study)])
    twice, twice_type = multipart([ct, ct])
    not_dicom_part, not_dicom_type = multipart([ct, b"hello"], ("application/dicom", "text/plain"))
    no_pixels = sample("CT_small.dcm")
    del no_pixels.PixelData
    short_pixels = sample("CT_small.dcm")
    short_pixels.PixelData = short_pixels.PixelData[:1000]
    structured_report = part10(sample("test-SR.dcm"))
    # Values pydicom reads with a warning and apply_rescale then fails on (each was a 500).
    bad_slope = sample("CT_small.dcm")
    bad_slope.RescaleSlope = "98765"
    slope_x = part10(bad_slope).replace(b"98765 ", b"x     ")
    no_lut_descriptor = sample("CT_small.dcm")
    del no_lut_descriptor.RescaleSlope, no_lut_descriptor.RescaleIntercept
    no_lut_descriptor.ModalityLUTSequence = [Dataset()]
    no_lut_descriptor.ModalityLUTSequence[0].ModalityLUTType = "HU"
    dicom = "application/dicom"
    return {
        "json": (b'{"study_instance_uid": "1.2.3"}', "application/json", 415, "DICOM instances"),
        "not part 10": (b"\x00" * 300, dicom, 400, "not a DICOM Part 10 file"),
        "no preamble": (ct[132:], dicom, 400, "not a DICOM Part 10 file"),
        "truncated": (ct[: len(ct) // 2], dicom, 400, "instance"),
        "two studies": (two_studies, two_type, 400, "2 studies"),
        "same instance twice": (twice, twice_type, 400, "sent twice"),
        "a text part": (not_dicom_part, not_dicom_type, 415, "part 2 is text/plain"),
        "no boundary": (ct, "multipart/related", 400, "no boundary"),
        "empty multipart": (b"--x--\r\n", "multipart/related; boundary=x", 400, "no DICOM"),
        "multipart cut short": (two_studies[:-40], two_type, 400, "no closing boundary"),
        "a damaged boundary line": (
            twice.replace(b"5b1d\r\n", b"5b1dX\r\n", 1),
            twice_type,
            400,
            "damaged after",
        ),
        "a part without headers": (
            b"--x\r\n\r\n" + ct + b"\r\n--x--",
            "multipart/related; boundary=x",
            415,
            "part 1 is text/plain",
        ),
        "part headers without end": (
            b"--x\r\nContent-Type: application/dicom\r\n" + b"X-Pad: y\r\n" * 2000 + b"\r\n--x--",
            "multipart/related; boundary=x",
            400,
            "no end to its headers",
        ),
        "a base64 part": (
            b"--x\r\nContent-Type: application/dicom\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.b64encode(ct)
            + b"\r\n--x--",
            "multipart/related; boundary=x",
            400,
            "base64-encoded",
        ),
        "a boundary over 70 characters": (
            ct,
            "multipart/related; boundary=" + "b" * 71,
            400,
            "71 characters",
        ),  # fmt: skip
        "no pixel data": (part10(no_pixels), dicom, 400, "no pixel data"),
        "short pixel data": (part10(short_pixels), dicom, 400, "pixel data 1000 bytes"),
        "not an image class": (structured_report, dicom, 400, "SOP class not accepted"),
        "rescale slope not a number": (slope_x, dicom, 400, "rescale"),
        "modality LUT without descriptor": (part10(no_lut_descriptor), dicom, 400, "rescale"),
    }


BAD = _bad_bodies()


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_body_is_refused_saying_why_and_nothing_is_stored(studied: Served, case: str) -> None:
    body, content_type, status, words = BAD[case]
    before = studied.api.services.results.count()
    with studied.client(Role.SERVICE) as http:
        answer = http.post(PATH, content=body, headers={"Content-Type": content_type})
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"] and answer.json()["hint"]
        assert http.get("/v2/health/live").status_code == 200
    assert studied.api.services.results.count() == before


def test_the_sites_pixel_limit_applies_to_uploads_too(prepared: Served) -> None:
    # One setting for the receiver and the upload: a site that lowered it is not bypassed here.
    prepared.rt.config = dataclasses.replace(prepared.rt.config, dicom_max_frame_bytes=1024)
    for box in serving(prepared):
        with box.client(Role.SERVICE) as http:
            answer = http.post(PATH, content=part10(sample("CT_small.dcm")), headers=DICOM)
        assert answer.status_code == 400, answer.text
        assert "decoded frame 32 KiB over the limit of 1 KiB" in answer.json()["error"]


def test_a_slice_the_model_cannot_read_is_a_400(studied: Served) -> None:
    """A colour CT passes the receiver's checks (a valid object) but not the imaging model's."""
    colour = sample("CT_small.dcm")
    colour.SamplesPerPixel, colour.PlanarConfiguration = 3, 0
    colour.PhotometricInterpretation = "RGB"
    colour.BitsAllocated, colour.BitsStored, colour.HighBit, colour.PixelRepresentation = 8, 8, 7, 0
    colour.PixelData = np.random.default_rng(1).integers(0, 255, (128, 128, 3), np.uint8).tobytes()
    with studied.client(Role.SERVICE) as http:
        answer = http.post(PATH, content=part10(colour), headers=DICOM)
    assert answer.status_code == 400, answer.text
    assert "colour" in answer.json()["error"] or "RGB" in answer.json()["error"], answer.text


def test_without_the_infer_permission_nothing_is_read(studied: Served) -> None:
    with studied.client(Role.TECHNICIAN) as http:
        answer = http.post(PATH, content=b"not even dicom", headers=DICOM)
    assert answer.status_code == 403


def test_an_element_of_unknown_vr_is_a_400_naming_it(studied: Served) -> None:
    """Found by the fuzz test below: an element of unknown VR and undefined length, which pydicom
    reads only when it is first touched (and then raises NotImplementedError), was a 500."""
    element = b"\xe1\x7f\x10\x00" + b"S\x02" + b"\x00\x00" + b"\xff" * 4  # (7FE1,0010)
    delimiter = b"\xfe\xff\xdd\xe0" + b"\x00" * 4
    body = part10(sample("CT_small.dcm")) + element + delimiter
    with studied.client(Role.SERVICE) as http:
        answer = http.post(PATH, content=body, headers=DICOM)
    assert answer.status_code == 400, answer.text
    assert "garbled in element (7FE1,0010)" in answer.json()["error"], answer.text


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_damaged_dicom_never_gets_a_500(studied: Served, data: st.DataObject) -> None:
    """Bytes of a real CT file overwritten, cut or repeated: 200 or a 4xx, never a 500."""
    ct = bytearray(part10(sample("CT_small.dcm")))
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(ct) - 1))
        ct[at : at + data.draw(st.integers(1, 8))] = data.draw(st.binary(min_size=0, max_size=8))
    with studied.client(Role.SERVICE) as http:
        answer = http.post(PATH, content=bytes(ct), headers=DICOM)
    assert answer.status_code in (200, 400, 415), answer.text
    if answer.status_code != 200:
        assert answer.json()["error"] and answer.json()["hint"]


def test_a_study_for_a_model_that_is_not_served_is_a_404(studied: Served) -> None:
    """A typo in ?model= is the client's error, not the box's: it was a 503."""
    with studied.client(Role.SERVICE) as http:
        answer = http.post(f"{PATH}?model=no-such-model", content=part10(sample("CT_small.dcm")),
                           headers=DICOM)  # fmt: skip
    assert answer.status_code == 404, answer.text
    assert "no-such-model" in answer.json()["error"] and answer.json()["hint"]


def test_multipart_parts_are_cut_at_their_boundaries_only() -> None:
    """Payloads are kept byte for byte, whatever line breaks or near-boundaries they hold: a
    preamble, an epilogue, a quoted boundary, transport padding, LF-only and CRLF CRLF inside a
    part, and the boundary's characters without the CRLF before them."""
    ct = part10(sample("CT_small.dcm"))
    mr = part10(sample("MR_small.dcm"))
    mr_ds = dcmread(io.BytesIO(mr))
    mr_ds.StudyInstanceUID = dcmread(io.BytesIO(ct)).StudyInstanceUID
    mr_ds.add_new(0x00091010, "OB", b"\n--b x\r\n\r\n-b\n\r--b\r\n-\r\n")  # private, kept
    mr = part10(mr_ds)
    body = (
        b"a preamble that is ignored\r\n--b \t\r\nContent-Type: application/dicom\r\n\r\n"
        + ct
        + b"\r\n--b\r\ncontent-type: Application/DICOM\r\nX-Note: two parts\r\n\r\n"
        + mr
        + b"\r\n--b--\r\nan epilogue, also ignored\r\n--b\r\n"
    )
    study = read_study('multipart/related; type="application/dicom"; boundary="b"', body)
    assert [part10(ds) for ds in study.datasets] == [ct, mr]
    assert study.datasets[1][0x00091010].value.startswith(b"\n--b x")


def test_a_body_of_line_breaks_is_refused_as_one_part() -> None:
    """The cost of a body is its length: 32 MiB of line breaks (which a line-based MIME parser
    took about 10 s of CPU for) are one part, refused as not DICOM."""
    body = b"--b\r\nContent-Type: application/dicom\r\n\r\n" + b"\n" * (32 << 20) + b"\r\n--b--"
    with pytest.raises(Exception, match="not a DICOM Part 10 file"):
        read_study("multipart/related; boundary=b", body)
