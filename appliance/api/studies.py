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
from appliance.dicom.checks import RefusedInstanceError, check_instance, decode_all

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


def read_study(content_type: str, body: bytes) -> Study:
    """The study in ``body``; raises InputError (or UnsupportedMediaError) saying what is wrong."""
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
    datasets = [_instance(index, part, len(parts)) for index, part in enumerate(parts)]
    return Study(_one_study(datasets), datasets)


def _parts(content_type: str, body: bytes) -> list[bytes]:
    """The payloads of a multipart/related body (each must be application/dicom)."""
    if "boundary=" not in content_type.lower():
        raise InputError("the multipart body's Content-Type names no boundary.", _SEND_HINT)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parser = email.parser.BytesParser(email.message.EmailMessage, policy=email.policy.HTTP)
    message = parser.parsebytes(head + body)
    if not message.is_multipart():
        raise InputError(
            "the multipart body holds no DICOM instance (no part between its boundaries).",
            _SEND_HINT,
        )
    parts: list[bytes] = []
    for index, part in enumerate(message.iter_parts(), start=1):
        kind = part.get_content_type()
        if kind != DICOM:
            raise UnsupportedMediaError(f"part {index} is {kind}, not {DICOM}.", _SEND_HINT)
        payload = part.get_payload(decode=True)
        parts.append(payload if isinstance(payload, bytes) else b"")
    return parts


def _instance(index: int, data: bytes, count: int) -> Dataset:
    """One checked Part 10 instance; ``index`` names it in refusals."""
    what = f"instance {index + 1} of {count}" if count > 1 else "the instance"
    try:
        ds = dcmread(io.BytesIO(data))  # Part 10 only: a preamble and "DICM", or InvalidDicomError
        decode_all(ds)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        check_instance(ds, context_class=str(ds.get("SOPClassUID", "")), syntax=syntax,
                       claimed_uid=None)  # fmt: skip
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
