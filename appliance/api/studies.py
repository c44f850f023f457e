"""The body of ``POST /v1/tasks/studies``: DICOM instances of one study, read and checked.

A client (a RIS, a viewer, a script) sends the images of one study either as one DICOM Part 10
file (``Content-Type: application/dicom``) or as several in a STOW-RS style
``multipart/related; type="application/dicom"`` body (PS3.18 10.5), each part one Part 10 file.
:func:`read_study` turns the body into data sets and applies the same checks as the DICOM
receiver (appliance.dicom.checks): a complete, undamaged stream, a storage class the box accepts,
valid UIDs, pixel data of the size the attributes call for, or decodable when compressed. Every
refusal is an :class:`~appliance.api.tensors.InputError` (400) that names the part and what was
wrong; nothing of a refused request is stored.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from appliance.api.tensors import InputError
from appliance.dicom.checks import (
    DEFAULT_LIMITS,
    PixelLimits,
    RefusedInstanceError,
    check_instance,
    decode_all,
)

DICOM = "application/dicom"
MULTIPART = "multipart/related"
MAX_INSTANCES = 2000  # a large CT series; bigger studies go through DICOM C-STORE
_SEND_HINT = (
    'Send one Part 10 file as "Content-Type: application/dicom", or several as '
    '"multipart/related; type=\\"application/dicom\\"; boundary=..." (STOW-RS).'
)


class UnsupportedMediaError(InputError):
    """The body is not DICOM (answered 415)."""


@dataclass(frozen=True)
class Study:
    """The checked instances of one study, in the order they were sent."""

    study_uid: str
    datasets: list[Dataset]


def read_study(content_type: str, body: bytes, limits: PixelLimits = DEFAULT_LIMITS) -> Study:
    """The study in ``body``; raises InputError (or UnsupportedMediaError) saying what is wrong.
    ``limits``: the site's largest decoded pixel data, as the DICOM receiver applies them."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == DICOM:
        parts = [body]
    elif media == MULTIPART:
        parts = _parts(content_type, body)
    else:
        raise UnsupportedMediaError(
            f"the body is {media or 'untyped'}; this route takes DICOM instances.", _SEND_HINT
        )
    if not parts:
        raise InputError("the body holds no DICOM instance.", _SEND_HINT)
    if len(parts) > MAX_INSTANCES:
        raise InputError(
            f"the body holds {len(parts)} instances; at most {MAX_INSTANCES} per request.",
            "Send larger studies to the box's DICOM receiver (C-STORE).",
        )
    datasets = [_instance(index, part, len(parts), limits) for index, part in enumerate(parts)]
    return Study(_one_study(datasets), datasets)


def _parts(content_type: str, body: bytes) -> list[bytes]:
    """The payloads of a multipart/related body (each must be application/dicom).

    The body is split at its boundaries with ``bytes.find`` (RFC 2046 5.1.1), so the cost grows
    with its length alone: a line-based MIME parser spends about a third of a second per MB of
    newlines, and a 64 MiB body of them held a CPU for 20 s.
    """
    header = email.message.Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise InputError("the multipart body's Content-Type names no boundary.", _SEND_HINT)
    if len(boundary) > _MAX_BOUNDARY:
        raise InputError(
            f"the multipart boundary is {len(boundary)} characters long; at most "
            f"{_MAX_BOUNDARY} (RFC 2046).",
            _SEND_HINT,
        )
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    framed = b"\r\n" + body  # a first boundary at the very start follows a line break too
    at = framed.find(delimiter)
    if at < 0:
        raise InputError(
            "the multipart body holds no DICOM instance (no part between its boundaries).",
            _SEND_HINT,
        )
    parts: list[bytes] = []
    while True:
        at += len(delimiter)
        if framed.startswith(b"--", at):
            break  # the close delimiter; what follows is the epilogue
        line_end = framed.find(b"\r\n", at)
        if line_end < 0 or framed[at:line_end].strip(b" \t"):
            raise InputError(
                f"the multipart body is damaged after boundary {len(parts) + 1} "
                "(the boundary line does not end there).",
                _SEND_HINT,
            )
        start = line_end + 2
        end = framed.find(delimiter, start)
        if end < 0:
            raise InputError(
                f"part {len(parts) + 1} of the multipart body has no closing boundary "
                "(the body is truncated).",
                _SEND_HINT,
            )
        parts.append(_payload(len(parts) + 1, framed[start:end]))
        if len(parts) > MAX_INSTANCES:
            break  # read_study refuses it, counting no further
        at = end
    if not parts:
        raise InputError(
            "the multipart body holds no DICOM instance (no part between its boundaries).",
            _SEND_HINT,
        )
    return parts


_MAX_BOUNDARY = 70
_MAX_PART_HEADERS = 16 * 1024


def _payload(index: int, part: bytes) -> bytes:
    """The content of one body part, after its headers; it must be application/dicom."""
    if part.startswith(b"\r\n"):
        head, content = b"", part[2:]
    else:
        split = part.find(b"\r\n\r\n", 0, _MAX_PART_HEADERS)
        if split < 0:
            raise InputError(
                f"part {index} has no end to its headers (a blank line) within "
                f"{_MAX_PART_HEADERS // 1024} KiB.",
                _SEND_HINT,
            )
        head, content = part[: split + 2], part[split + 4 :]
    parser = email.parser.BytesParser(email.message.EmailMessage, policy=email.policy.HTTP)
    headers = parser.parsebytes(head, headersonly=True)
    kind = headers.get_content_type() if head else "text/plain"  # RFC 2046's default
    if kind != DICOM:
        raise UnsupportedMediaError(f"part {index} is {kind}, not {DICOM}.", _SEND_HINT)
    encoding = str(headers.get("Content-Transfer-Encoding", "binary")).strip().lower()
    if encoding not in ("binary", "8bit", "7bit"):
        raise InputError(
            f"part {index} is sent {encoding}-encoded; DICOM parts go as binary.",
            "Send each part's bytes as they are (Content-Transfer-Encoding: binary), as STOW-RS "
            "clients do.",
        )
    return content


def _instance(index: int, data: bytes, count: int, limits: PixelLimits) -> Dataset:
    """One checked Part 10 instance; ``index`` names it in refusals."""
    what = f"instance {index + 1} of {count}" if count > 1 else "the instance"
    try:
        ds = dcmread(io.BytesIO(data))  # Part 10 only: a preamble and "DICM", or InvalidDicomError
        decode_all(ds)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        check_instance(ds, context_class=str(ds.get("SOPClassUID", "")), syntax=syntax,
                       claimed_uid=None, limits=limits)  # fmt: skip
    except InvalidDicomError:
        raise InputError(
            f"{what} is not a DICOM Part 10 file (no 128-byte preamble and 'DICM').",
            "Send the files as the modality or PACS exported them, with their file meta header.",
        ) from None
    except RefusedInstanceError as exc:
        raise InputError(f"{what} is refused: {exc.comment}.", exc.hint) from None
    except (AttributeError, KeyError, ValueError, EOFError, OSError) as exc:
        raise InputError(
            f"{what} cannot be read as DICOM ({type(exc).__name__}).",
            "Check the file: it is truncated, damaged or lacks its transfer syntax.",
        ) from None
    return ds


def _one_study(datasets: list[Dataset]) -> str:
    studies = {str(ds.StudyInstanceUID) for ds in datasets}
    if len(studies) != 1:
        raise InputError(
            f"the instances belong to {len(studies)} studies; one request is one study.",
            "Send each study in its own request.",
        )
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    if len(set(uids)) != len(uids):
        raise InputError(
            "the same SOP Instance UID is sent twice.", "Send each image of the study once."
        )
    return studies.pop()
