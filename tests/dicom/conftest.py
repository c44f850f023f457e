"""DICOM fixtures: synthetic images, a configured box, a real receiver on an ephemeral port, and
an SCU that sends over real associations. Patient data here is made up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from appliance.config import Config
from appliance.dicom.checks import STORAGE_CLASSES
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.receiver import Receiver, start_receiver
from appliance.dicom.store import StudyStore

from .pacs import FakePacs

MODALITY_CLASS = {m: c for c, m in reversed(list(STORAGE_CLASSES.items()))}
SCU_AE = "MODALITY1"
PATIENT_NAME = "Quinn^Jane^Public"
PATIENT_ID = "MRN-40917733"


def make_image(
    modality: str = "CT",
    *,
    study: str | None = None,
    series: str | None = None,
    rows: int = 16,
    columns: int = 16,
    seed: int = 0,
) -> Dataset:
    """A small, valid single-frame image of ``modality`` (CT, MR, CR, DX, OT)."""
    ds = Dataset()
    ds.SOPClassUID = MODALITY_CLASS[modality]
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.AccessionNumber = "ACC0001"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.ReferringPhysicianName = ""
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, 0]
    ds.SliceThickness = 1
    ds.FrameOfReferenceUID = generate_uid()
    pixels = np.random.default_rng(seed).integers(0, 4096, (rows, columns), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


@pytest.fixture
def box(tmp_path: Path) -> Config:
    """A box whose only peer is this test's SCU (MODALITY1 at 127.0.0.1)."""
    config = Config(state_dir=tmp_path / "state", dicom_port=0)
    save_peers(config, [Peer(SCU_AE, "127.0.0.1", 104, "test modality")])
    return config


@pytest.fixture
def store(box: Config) -> Iterator[StudyStore]:
    st = StudyStore.open(box)
    yield st
    st.close()


@pytest.fixture
def receiver(box: Config, store: StudyStore) -> Iterator[Receiver]:
    rx = start_receiver(box, store, host="127.0.0.1", port=0)
    yield rx
    rx.stop()


@pytest.fixture
def pacs() -> Iterator[FakePacs]:
    """A fake PACS listening on loopback (not yet among the box's peers)."""
    fake = FakePacs().start()
    yield fake
    fake.stop()


def send(port: int, *items: Dataset | Path, ae_title: str = SCU_AE, ts: str | None = None) -> Any:
    """Send ``items`` in one association; return the list of response statuses (or the
    association when it was not established)."""
    ae = AE(ae_title=ae_title)
    classes = {str(i.SOPClassUID) if isinstance(i, Dataset) else _class_of(i) for i in items} or {
        MODALITY_CLASS["CT"]
    }
    for sop_class in classes:
        ae.add_requested_context(sop_class, [ts] if ts else [ExplicitVRLittleEndian])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
    if not assoc.is_established:
        return assoc
    from pynetdicom import _config

    # Files go out as they are, described by their file meta alone (no client-side checks), the
    # way a modality would send a damaged or lying file.
    chunked, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        return [assoc.send_c_store(item) for item in items]
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = chunked
        assoc.release()


def as_file(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` with its file meta as given (not rebuilt from the data set), so a test can
    send a data set that contradicts its meta or lacks required elements."""
    from pydicom import dcmwrite

    ds.preamble = b"\0" * 128
    dcmwrite(path, ds, enforce_file_format=False)
    return path


def _class_of(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info

    return str(read_file_meta_info(path).MediaStorageSOPClassUID)
