"""What a received instance must be before the box acknowledges it: pure checks that raise.

The receiver decodes the C-STORE data set and hands it here with what the association
negotiated (the presentation context's SOP class and transfer syntax) and what the request
claimed (its affected SOP instance UID). :func:`check_instance` either returns the identifiers the
spool needs or raises :class:`RefusedInstanceError` carrying the DIMSE status to answer and an
ErrorComment (at most 64 characters, the LO limit) that says what was wrong. Nothing refused is
stored.

Status codes (PS3.4 B.2.3): ``0xA900`` "Data Set does not match SOP Class" for a data set that
lacks what its class requires or contradicts the context; ``0xC210`` (Cannot understand, the code
pynetdicom uses for data sets it cannot decode) for a truncated or undecodable stream; ``0xC220``
(Cannot understand) for pixel data in a transfer syntax this box cannot decode; ``0xA700`` (Out of
resources) when the spool cannot be written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from appliance.errors import ApplianceError

# The storage SOP classes the receiver accepts, and the modality each stands for.
STORAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT Image Storage
    "1.2.840.10008.5.1.4.1.1.4": "MR",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.1": "CR",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Presentation
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.7": "OT",  # Secondary Capture Image Storage
}
_COMMENT_MAX = 64
_BITS = (1, 8, 16, 32)
_UNDEFINED_LENGTH = 0xFFFFFFFF


class StoreStatus(IntEnum):
    """The C-STORE response statuses the receiver answers with."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_DECODE = 0xC210
    UNSUPPORTED_SYNTAX = 0xC220


class RefusedInstanceError(ApplianceError):
    """A received instance is refused; ``status`` goes back in the C-STORE response."""

    def __init__(self, status: StoreStatus, comment: str) -> None:
        super().__init__(
            f"instance refused: {comment}",
            "The sending device must send a complete, well-formed image of a supported class.",
        )
        self.status = status
        self.comment = comment[:_COMMENT_MAX]

    def response(self) -> Dataset:
        """The status data set pynetdicom sends back: Status and ErrorComment."""
        rsp = Dataset()
        rsp.Status = int(self.status)
        rsp.ErrorComment = self.comment
        return rsp


@dataclass(frozen=True)
class InstanceInfo:
    """The identifiers of an accepted instance (the spool files and indexes it by them)."""

    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str


def _mismatch(comment: str) -> RefusedInstanceError:
    return RefusedInstanceError(StoreStatus.DATASET_MISMATCH, comment)


def _uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or not str(value).strip():
        raise _mismatch(f"{keyword} is missing")
    uid = UID(str(value).strip())
    if not uid.is_valid:
        raise _mismatch(f"{keyword} is not a valid UID")
    return str(uid)


def _positive(ds: Dataset, keyword: str) -> int:
    value = ds.get(keyword)
    if not isinstance(value, int) or value <= 0:
        raise _mismatch(f"{keyword} is missing or not positive")
    return value


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native (uncompressed) Pixel Data that Rows, Columns, bits and frames call for."""
    rows, columns = _positive(ds, "Rows"), _positive(ds, "Columns")
    bits = ds.get("BitsAllocated")
    if bits not in _BITS:
        raise _mismatch("BitsAllocated is missing or not 1/8/16/32")
    samples = ds.get("SamplesPerPixel", 1)
    if not isinstance(samples, int) or samples not in (1, 3):
        raise _mismatch("SamplesPerPixel is not 1 or 3")
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        raise _mismatch("NumberOfFrames is not a number") from None
    if frames <= 0:
        raise _mismatch("NumberOfFrames is not positive")
    return (rows * columns * samples * frames * int(bits) + 7) // 8


def _check_pixels(ds: Dataset, syntax: UID) -> None:
    data = ds.get("PixelData")
    if not data:  # absent, or present with no value (pydicom reads an empty value as None)
        raise _mismatch("no pixel data")
    expected = expected_pixel_bytes(ds)
    if syntax.is_compressed:
        _check_decodable(ds, syntax)
        return
    actual = len(data)
    if actual not in (expected, expected + (expected % 2)):
        raise _mismatch(f"pixel data {actual} bytes, expected {expected}")


def _check_decodable(ds: Dataset, syntax: UID) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise RefusedInstanceError(
            StoreStatus.UNSUPPORTED_SYNTAX, f"transfer syntax {syntax} not decodable here"
        )
    try:
        ds.pixel_array  # noqa: B018 (decoding is the check)
    except Exception as exc:
        raise RefusedInstanceError(
            StoreStatus.CANNOT_DECODE, f"pixel data cannot be decoded ({type(exc).__name__})"
        ) from exc


def check_instance(
    ds: Dataset, *, context_class: str, syntax: str, claimed_uid: str | None
) -> InstanceInfo:
    """The identifiers of ``ds`` if the box may store it; raise RefusedInstanceError otherwise.

    ``context_class`` and ``syntax`` are the presentation context's abstract and transfer syntax;
    ``claimed_uid`` the request's Affected SOP Instance UID.
    """
    transfer = UID(syntax)
    sop_class = _uid(ds, "SOPClassUID")
    if sop_class != context_class:
        raise _mismatch("SOPClassUID does not match the presentation context")
    if sop_class not in STORAGE_CLASSES:
        raise _mismatch("SOP class not accepted by this box")
    sop_uid = _uid(ds, "SOPInstanceUID")
    if claimed_uid is not None and sop_uid != claimed_uid:
        raise _mismatch("SOPInstanceUID differs from the C-STORE request")
    study_uid, series_uid = _uid(ds, "StudyInstanceUID"), _uid(ds, "SeriesInstanceUID")
    _check_pixels(ds, transfer)
    modality = str(ds.get("Modality") or STORAGE_CLASSES[sop_class])
    return InstanceInfo(sop_class, sop_uid, study_uid, series_uid, modality)


def decode_all(ds: Dataset) -> None:
    """Check that the stream behind ``ds`` was complete, then parse every element now.

    pydicom parses lazily and, at the end of a short stream, keeps what it could read: a cut
    shows only as an element whose value is shorter than its declared length, or as a failure when
    an element is first touched. Raises RefusedInstanceError (CANNOT_DECODE) naming the element.
    """
    for tag in list(ds.keys()):
        try:
            raw = ds.get_item(tag)
        except Exception as exc:  # pydicom raises what its value converters raise (an unknown VR)
            raise RefusedInstanceError(
                StoreStatus.CANNOT_DECODE, f"data set garbled in element {Tag(tag)}"
            ) from exc
        if (
            isinstance(raw, RawDataElement)
            and raw.length != _UNDEFINED_LENGTH
            and raw.value is not None
            and len(raw.value) < raw.length
        ):
            raise RefusedInstanceError(
                StoreStatus.CANNOT_DECODE, f"data set truncated in element {Tag(tag)}"
            )
    where: Any = None
    try:
        for elem in ds.iterall():
            where = elem.tag
    except Exception as exc:
        after = f" after {where}" if where is not None else ""
        raise RefusedInstanceError(StoreStatus.CANNOT_DECODE, f"data set garbled{after}") from exc
