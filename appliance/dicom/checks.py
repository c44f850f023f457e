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
resources) when the spool cannot be written, or when the pixel data would decode to more than
:class:`PixelLimits` allow (checked from the declared size, before anything is decoded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels
from pydicom.tag import Tag
from pydicom.uid import UID
from pydicom.valuerep import VR

from appliance.config import Config
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
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")
# A received file's values from this size up are read only when used: pixel data stays on disk.
_DEFER_BYTES = 256 * 1024
_PIXEL_TAGS = frozenset({Tag(0x7FE00008), Tag(0x7FE00009), Tag(0x7FE00010)})  # float, double, int
# What a received file may hold besides its pixel data (headers, overlays, icons, private tags).
_METADATA_ALLOWANCE = 64 * 1024 * 1024


class StoreStatus(IntEnum):
    """The C-STORE response statuses the receiver answers with."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_DECODE = 0xC210
    UNSUPPORTED_SYNTAX = 0xC220


class RefusedInstanceError(ApplianceError):
    """A received instance is refused; ``status`` goes back in the C-STORE response."""

    def __init__(self, status: StoreStatus, comment: str, detail: str | None = None) -> None:
        super().__init__(
            f"instance refused: {comment}",
            "The sending device must send a complete, well-formed image of a supported class.",
        )
        self.status = status
        self.comment = comment[:_COMMENT_MAX]
        # For the log line: the comment with what the 64 characters of the LO leave out.
        self.detail = detail or self.comment

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


@dataclass(frozen=True)
class PixelLimits:
    """The most decoded pixel data an instance may declare, in bytes: per frame and in all."""

    frame_bytes: int
    instance_bytes: int

    @classmethod
    def of(cls, config: Config) -> PixelLimits:
        return cls(config.dicom_max_frame_bytes, config.dicom_max_instance_bytes)


DEFAULT_LIMITS = PixelLimits.of(Config())  # a site that sets none


@dataclass(frozen=True)
class PixelGeometry:
    """What an instance declares about its pixel data (no PHI: sizes only)."""

    rows: int
    columns: int
    samples: int
    bits: int
    frames: int

    @property
    def native_bytes(self) -> int:
        """Bytes of native (uncompressed) Pixel Data this geometry calls for."""
        return (self.rows * self.columns * self.samples * self.frames * self.bits + 7) // 8

    @property
    def decoded_frame_bytes(self) -> int:
        """Bytes one decoded frame takes (a 1-bit pixel decodes to a byte)."""
        return self.rows * self.columns * self.samples * -(-self.bits // 8)

    def describe(self) -> str:
        samples = "1 sample" if self.samples == 1 else f"{self.samples} samples"
        frames = "1 frame" if self.frames == 1 else f"{self.frames} frames"
        return f"{self.rows} x {self.columns} pixels, {samples} of {self.bits} bits, {frames}"


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
    return pixel_geometry(ds).native_bytes


def pixel_geometry(ds: Dataset) -> PixelGeometry:
    """Rows, Columns, samples, bits and frames of ``ds``; raise RefusedInstanceError (0xA900)
    when one is missing or out of range."""
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
    return PixelGeometry(rows, columns, samples, int(bits), frames)


def size_text(count: int) -> str:
    """``count`` bytes in binary units, e.g. "64 MiB", "8.0 GiB"."""
    power = min(max(count.bit_length() - 1, 0) // 10, len(_UNITS) - 1)
    value = count / 1024**power
    return f"{value:.0f} {_UNITS[power]}" if value.is_integer() else f"{value:.1f} {_UNITS[power]}"


def _check_size(geometry: PixelGeometry, limits: PixelLimits) -> None:
    """Refuse what would decode to more than ``limits`` allow, from the declared size alone."""
    frame = geometry.decoded_frame_bytes
    if frame > limits.frame_bytes:
        what, size, limit, setting = "frame", frame, limits.frame_bytes, "frame"
    elif frame * geometry.frames > limits.instance_bytes:
        what, size, limit = "pixel data", frame * geometry.frames, limits.instance_bytes
        setting = "instance"
    else:
        return
    raise _over_limit(f"decoded {what}", size, limit, setting, f" ({geometry.describe()})")


def _over_limit(
    what: str, size: int, limit: int, setting: str, details: str = ""
) -> RefusedInstanceError:
    """The refusal of an instance larger than a ``dicom_max_<setting>_bytes`` limit."""
    comment = f"{what} {size_text(size)} over the limit of {size_text(limit)}"
    return RefusedInstanceError(
        StoreStatus.OUT_OF_RESOURCES,
        comment,
        f"{comment}{details}; if the sending device's images really are this large, raise "
        f"dicom_max_{setting}_bytes in the box's configuration",
    )


def _pixel_bytes(ds: Dataset) -> int | None:
    """How many bytes of Pixel Data ``ds`` holds (None when it has none), without reading a
    value that :func:`read_received` left on disk; an encapsulated value counts as 1."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    if elem is None:
        return None
    if isinstance(elem, RawDataElement) and elem.value is None:  # deferred, or empty
        if elem.length == _UNDEFINED_LENGTH:
            return 1
        return elem.length or None
    value = elem.value
    return len(value) if value else None  # pydicom reads an empty value as None


def _check_pixels(ds: Dataset, syntax: UID, limits: PixelLimits, source: Path | None) -> None:
    actual = _pixel_bytes(ds)
    if not actual:
        raise _mismatch("no pixel data")
    geometry = pixel_geometry(ds)
    # Before any decoding: a few kB of RLE or JPEG may declare gigabytes. Native data is checked
    # too, though its size is what arrived: the worker decodes it, as floats, later.
    _check_size(geometry, limits)
    expected = geometry.native_bytes
    if syntax.is_compressed:
        _check_decodable(ds, syntax, source)
        return
    if actual not in (expected, expected + (expected % 2)):
        raise _mismatch(f"pixel data {actual} bytes, expected {expected}")


def _check_decodable(ds: Dataset, syntax: UID, source: Path | None) -> None:
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(syntax)
        available = decoder.is_available
    except NotImplementedError:
        available = False
    if not available:
        raise RefusedInstanceError(
            StoreStatus.UNSUPPORTED_SYNTAX, f"transfer syntax {syntax} not decodable here"
        )
    try:
        # Frame by frame (not ds.pixel_array, all frames at once): one association holds at most
        # one decoded frame, which PixelLimits.frame_bytes bounds. From the file when there is
        # one: pydicom then reads one frame's fragments at a time, not the whole value.
        frames = iter_pixels(source) if source is not None else decoder.iter_array(ds)
        for _frame in frames:
            pass
    except Exception as exc:
        raise RefusedInstanceError(
            StoreStatus.CANNOT_DECODE, f"pixel data cannot be decoded ({type(exc).__name__})"
        ) from exc


def check_instance(
    ds: Dataset,
    *,
    context_class: str,
    syntax: str,
    claimed_uid: str | None,
    limits: PixelLimits = DEFAULT_LIMITS,
    source: Path | None = None,
) -> InstanceInfo:
    """The identifiers of ``ds`` if the box may store it; raise RefusedInstanceError otherwise.

    ``context_class`` and ``syntax`` are the presentation context's abstract and transfer syntax;
    ``claimed_uid`` the request's Affected SOP Instance UID; ``limits`` the largest decoded pixel
    data accepted (the site's, from its :class:`~appliance.config.Config`); ``source`` the file
    ``ds`` was read from by :func:`read_received`, whose pixel data stays there.
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
    _check_pixels(ds, transfer, limits, source)
    modality = str(ds.get("Modality") or STORAGE_CLASSES[sop_class])
    return InstanceInfo(sop_class, sop_uid, study_uid, series_uid, modality)


def transfer_cap(limits: PixelLimits) -> int:
    """The most bytes one data set may bring before its association is aborted in the middle:
    twice what :func:`read_received` refuses with a status. An instance a little over the limit
    is still received and refused with a reason the sender can show; one that never ends (a
    broken or hostile sender) cannot fill the state partition, where it arrives."""
    return 2 * (limits.instance_bytes + _METADATA_ALLOWANCE)


def read_received(path: Path, limits: PixelLimits = DEFAULT_LIMITS) -> Dataset:
    """The data set of the received Part 10 file ``path``, its large values (pixel data) left on
    disk, after :func:`decode_all`: memory stays bounded by the small elements and one frame.

    Raises RefusedInstanceError: OUT_OF_RESOURCES for a file larger than ``limits`` allow (before
    it is read), CANNOT_DECODE for one that is not DICOM, truncated or garbled.
    """
    size = path.stat().st_size
    if size > limits.instance_bytes + _METADATA_ALLOWANCE:
        raise _over_limit("instance", size, limits.instance_bytes, "instance")
    try:
        ds = dcmread(path, defer_size=_DEFER_BYTES)
    except Exception as exc:  # pydicom raises what its parser meets: InvalidDicomError, EOF, ...
        raise RefusedInstanceError(
            StoreStatus.CANNOT_DECODE, f"data set cannot be decoded ({type(exc).__name__})"
        ) from exc
    decode_all(ds, size=size)
    return ds


def decode_all(ds: Dataset, *, size: int | None = None) -> None:
    """Check that the stream behind ``ds`` was complete, then parse every element now.

    pydicom parses lazily and, at the end of a short stream, keeps what it could read: a cut
    shows only as an element whose value is shorter than its declared length, or as a failure when
    an element is first touched. A value read deferred (``ds`` from :func:`read_received`, whose
    file holds ``size`` bytes) is not read: it must end inside the file. Raises
    RefusedInstanceError (CANNOT_DECODE) naming the element.
    """
    for tag in list(ds.keys()):
        try:
            raw = ds.get_item(tag, keep_deferred=size is not None)
        except Exception as exc:  # pydicom raises what its value converters raise (an unknown VR)
            raise RefusedInstanceError(
                StoreStatus.CANNOT_DECODE, f"data set garbled in element {Tag(tag)}"
            ) from exc
        if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED_LENGTH:
            continue
        short = (
            len(raw.value) < raw.length
            if raw.value is not None
            else size is not None and raw.value_tell + raw.length > size
        )
        if short:
            raise RefusedInstanceError(
                StoreStatus.CANNOT_DECODE, f"data set truncated in element {Tag(tag)}"
            )
    where: Any = None
    try:
        for elem in _parsed(ds):
            where = elem.tag
    except Exception as exc:
        after = f" after {where}" if where is not None else ""
        raise RefusedInstanceError(StoreStatus.CANNOT_DECODE, f"data set garbled{after}") from exc


def _parsed(ds: Dataset) -> Iterator[DataElement]:
    """Every element of ``ds`` and its sequences, parsed, as ``Dataset.iterall`` gives them, but
    for pixel data left on disk (checked by its length and by decoding, not read whole)."""
    for tag in list(ds.keys()):
        if tag in _PIXEL_TAGS:
            raw = ds.get_item(tag, keep_deferred=True)
            if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
                continue
        elem = ds[tag]
        yield elem
        if elem.VR == VR.SQ:
            for item in elem.value:
                yield from _parsed(item)
