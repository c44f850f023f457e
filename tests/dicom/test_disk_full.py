"""The receiver on a full state partition (a real ENOSPC on a small tmpfs): an instance it could
not store is answered with a failure the sender retries, and nothing of it lingers."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.status import code_to_category

from appliance.config import Config
from appliance.dicom.checks import StoreStatus
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.receiver import Receiver
from appliance.dicom.store import StudyStore
from tests.conftest import SmallDisk, small_disk

from .conftest import SCU_AE, make_image, send

PAGE = 4096


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "state", size_mb=8) as mounted:
        yield mounted


@pytest.fixture
def box(disk: SmallDisk) -> Config:
    """A box with its state on the small disk; its only peer is this test's SCU."""
    config = Config(state_dir=disk.path, dicom_port=0)
    save_peers(config, [Peer(SCU_AE, "127.0.0.1", 104, "test modality")])
    return config


def test_instance_whose_row_the_full_disk_refuses_is_answered_out_of_resources(
    receiver: Receiver, store: StudyStore, disk: SmallDisk
) -> None:
    """Room for the instance's file but not for its row: the answer is Out of Resources (the
    sender retries later), not an exception's 0xC211, and the file does not stay spooled."""
    study = make_image().StudyInstanceUID
    acknowledged = [make_image(study=study, seed=i) for i in range(3)]
    assert [s.Status for s in send(receiver.port, *acknowledged)] == [0x0000] * 3
    disk.fill(leave=PAGE)  # the file's page, none for the database's journal
    late = make_image(study=study, seed=9)
    (refused,) = send(receiver.port, late)
    assert refused.Status == StoreStatus.OUT_OF_RESOURCES, hex(refused.Status)
    assert code_to_category(refused.Status) == "Failure"
    assert len(list(store.spool.rglob("*.dcm"))) == len(acknowledged), "a refused file stayed"
    disk.free()
    (stored,) = send(receiver.port, late)
    assert stored.Status == 0x0000
    every = {str(ds.SOPInstanceUID) for ds in [*acknowledged, late]}
    assert store.instance_uids() == every
    assert store.recover() == 0
    with sqlite3.connect(store.root / "studies.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
