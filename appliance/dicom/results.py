"""The result objects sent back to PACS, written with highdicom.

* a **Comprehensive SR** in the source study: the study score, each image's score with a
  reference to that image, and the provenance (model name and version, bundle digest, device,
  OpenVINO version) as text items;
* a **Secondary Capture** of the heat map of the highest-scoring image, in the same study, its
  Source Image Sequence pointing at that image.

Both are new series of the source study (Patient and Study modules copied by highdicom from an
image's header), so the PACS files them with the study they describe. They need no pixel data
besides the heat map and two headers at most (any image's for the SR, the highest-scoring one's
for the SC); the other images are known by their UIDs alone, so a study of thousands of images is
never read whole. Codes the standard has (DCM 111001 Algorithm Name, 111003 Algorithm Version)
are used; the rest carry a private coding scheme, ``99APPLIANCE``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from appliance import __version__
from appliance.dicom.analysis import Findings

MANUFACTURER = "Clinical AI appliance"
_SCHEME = "99APPLIANCE"
_REPORT = Code("18748-4", "LN", "Diagnostic imaging report")
_ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
_ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
_SOURCE = Code("260753009", "SCT", "Source")
_SCORE = Code("study-score", _SCHEME, "AI abnormality score")
_IMAGE_SCORE = Code("image-score", _SCHEME, "AI abnormality score of image")
_NO_UNITS = Code("1", "UCUM", "no units")
_PROVENANCE = {
    "bundle_sha256": Code("bundle-sha256", _SCHEME, "Model bundle SHA-256"),
    "device": Code("device", _SCHEME, "Inference device"),
    "openvino_version": Code("openvino-version", _SCHEME, "OpenVINO version"),
}
SR_SERIES_NUMBER, SC_SERIES_NUMBER = 9901, 9902


@dataclass(frozen=True)
class ResultObject:
    """One object to send: its data set and what kind it is (``sr`` or ``sc``)."""

    kind: str
    dataset: Dataset


class SourceImage(Protocol):
    """What a result needs of each image it describes (store.Instance has it)."""

    @property
    def sop_uid(self) -> str: ...

    @property
    def series_uid(self) -> str: ...

    @property
    def sop_class(self) -> str: ...


def _evidence(study: Dataset, images: Sequence[SourceImage]) -> list[Dataset]:
    """``study`` first (highdicom copies its Patient and Study modules), then every image by its
    UIDs: the SR's evidence (highdicom skips ``study``'s own image the second time)."""
    evidence = [study]
    for image in images:
        ref = Dataset()
        ref.StudyInstanceUID = study.StudyInstanceUID
        ref.SeriesInstanceUID = image.series_uid
        ref.SOPClassUID = image.sop_class
        ref.SOPInstanceUID = image.sop_uid
        evidence.append(ref)
    return evidence


def _text(code: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=code,
        value=value[:1024] or "-",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )


def structured_report(study: Dataset, images: Sequence[SourceImage], findings: Findings) -> Dataset:
    """The Comprehensive SR of ``findings`` about ``images``; ``study`` is one of them (a header
    is enough: no pixel data is used)."""
    by_uid = {image.sop_uid: image for image in images}
    prov: Mapping[str, str] = findings.provenance
    root = hd.sr.ContainerContentItem(name=_REPORT, template_id=None)
    items: list[hd.sr.ContentItem] = [
        _text(_ALGORITHM_NAME, prov.get("model_name", "unknown")),
        _text(_ALGORITHM_VERSION, prov.get("model_version", "unknown")),
        *(_text(code, prov.get(key, "unknown")) for key, code in _PROVENANCE.items()),
        hd.sr.NumContentItem(
            name=_SCORE, value=round(findings.score, 6), unit=_NO_UNITS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    ]  # fmt: skip
    for sop_uid, finding in findings.slices:
        num = hd.sr.NumContentItem(
            name=_IMAGE_SCORE, value=round(float(finding.score), 6), unit=_NO_UNITS,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )  # fmt: skip
        image = hd.sr.ImageContentItem(
            name=_SOURCE,
            referenced_sop_class_uid=by_uid[sop_uid].sop_class,
            referenced_sop_instance_uid=sop_uid,
            relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
        )
        num.ContentSequence = hd.sr.ContentSequence([image])
        items.append(num)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return hd.sr.ComprehensiveSR(
        evidence=_evidence(study, images),
        content=root,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,  # not verified by a physician: an AI result awaiting review
        series_description="AI findings (unverified)",
        software_versions=f"appliance {__version__}",
    )


def heatmap_capture(source: Dataset, findings: Findings) -> Dataset:
    """A Secondary Capture of the heat map of the highest-scoring image, whose header (no pixel
    data needed) is ``source``; raises ValueError when ``source`` is another image."""
    sop_uid, finding = findings.worst
    if str(source.SOPInstanceUID) != sop_uid:
        raise ValueError("the heat map's source is not the highest-scoring image")
    heat = np.clip(np.asarray(finding.heatmap, dtype=np.float32), 0.0, 1.0)
    pixels = np.ascontiguousarray((heat * 255.0).round().astype(np.uint8))
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(),
        series_number=SC_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description="AI heat map (unverified)",
    )
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = f"heat map of {findings.provenance.get('model_name', 'a model')}"
    return sc


def result_objects(
    study: Dataset, worst: Dataset, images: Sequence[SourceImage], findings: Findings
) -> list[ResultObject]:
    """Everything the box sends back for one analysed study: ``images`` are its images, ``study``
    the header of any one of them and ``worst`` that of the highest-scoring one (headers: read
    without pixel data)."""
    # highdicom logs the UIDs of the data sets it copies from (INFO, DEBUG): identifiers of the
    # patient's study, which no log line may carry.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    return [
        ResultObject("sr", structured_report(study, images, findings)),
        ResultObject("sc", heatmap_capture(worst, findings)),
    ]
