"""The study queue's pure-ish parts: crash recovery, quiet-time closing, reopening, routing, the
peer list's compatible extension, and the settings the DICOM path reads."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from appliance.config import Config, load_config
from appliance.dicom.analysis import Rule, load_rules, route
from appliance.dicom.checks import InstanceInfo
from appliance.dicom.peers import Peer, load_peers, peers_file
from appliance.dicom.store import StudyState, StudyStore, key_of
from appliance.errors import ConfigError

from .conftest import make_image


def _info(study: str) -> InstanceInfo:
    return InstanceInfo("1.2.840.10008.5.1.4.1.1.2", generate_uid(), study, generate_uid(), "CT")


def test_quiet_study_closes_and_a_late_instance_reopens_it(store: StudyStore) -> None:
    study = generate_uid()
    store.write_instance(b"x", _info(study), "CT1")
    assert store.close_quiet(60) == 0, "closed while instances may still come"
    assert store.close_quiet(60, now=10**10) == 1
    taken = store.take_closed()
    assert taken is not None and taken.state is StudyState.ANALYSING
    store.write_instance(b"y", _info(study), "CT1")  # arrives during the analysis
    store.finish(study, StudyState.DONE, "m")
    study_row = store.study(study)
    assert study_row is not None and study_row.state is StudyState.OPEN, "the late image is lost"


def test_recover_indexes_a_file_written_before_a_crash(store: StudyStore, tmp_path: Path) -> None:
    image = make_image()
    folder = store.spool / key_of(str(image.StudyInstanceUID))
    folder.mkdir()
    image.save_as(folder / "orphan.dcm", enforce_file_format=True)  # renamed, row never committed
    (folder / "junk.dcm").write_bytes(b"not dicom")
    assert store.recover() == 1
    assert str(image.SOPInstanceUID) in store.instance_uids()
    assert (folder / "junk.dcm").exists(), "an unreadable file is left for a human, not deleted"


def test_recover_puts_an_interrupted_analysis_back_in_the_queue(store: StudyStore) -> None:
    study = generate_uid()
    store.write_instance(b"x", _info(study), "CT1")
    store.close_quiet(0, now=10**10)
    assert store.take_closed() is not None  # ... and the process dies here
    store.recover()
    row = store.study(study)
    assert row is not None and row.state is StudyState.CLOSED


def test_attempts_count_the_analyses_that_never_ended(store: StudyStore) -> None:
    study = generate_uid()
    store.write_instance(b"x", _info(study), "CT1")
    for attempt in (1, 2):
        store.close_quiet(0, now=10**10)
        taken = store.take_closed()
        assert taken is not None and taken.attempts == attempt
        store.recover()  # ... the process died mid-analysis
    assert store.take_closed() is not None
    store.write_instance(b"y", _info(study), "CT1")  # reopened meanwhile: the analysis still ended
    store.finish(study, StudyState.DONE, "m")
    row = store.study(study)
    assert row is not None and row.state is StudyState.OPEN and row.attempts == 0


def test_a_study_database_of_the_first_release_is_brought_up_to_date(tmp_path: Path) -> None:
    root = tmp_path / "dicom"
    root.mkdir()
    with sqlite3.connect(root / "studies.db") as old:  # as the first release made it
        old.execute(
            "CREATE TABLE studies (study_uid TEXT PRIMARY KEY, key TEXT NOT NULL, state TEXT NOT "
            "NULL, calling_ae TEXT NOT NULL, last_at REAL NOT NULL, model TEXT, error TEXT)"
        )
        old.execute("INSERT INTO studies VALUES ('1.2.3', 'k', 'analysing', 'CT1', 0, NULL, NULL)")
    old.close()
    for attempt in (1, 2):  # the second start finds nothing to migrate
        store = StudyStore(root)
        try:
            store.recover()
            taken = store.take_closed()
            assert taken is not None and taken.study_uid == "1.2.3" and taken.attempts == attempt
        finally:
            store.close()
    store = StudyStore(root)
    try:
        assert store.execute("PRAGMA user_version") == [(1,)]
        row = store.study("1.2.3")
        assert row is not None and row.attempts == 2
    finally:
        store.close()


def test_a_commit_that_fails_leaves_no_transaction_open(store: StudyStore) -> None:
    # A COMMIT can fail (a full disk; here a deferred foreign key, which SQLite checks only
    # then): left open, the transaction would swallow every later write of the shared
    # connection, each "committed" in autocommit mode but never on disk.
    with pytest.raises(sqlite3.IntegrityError), store.transaction():
        store.execute("PRAGMA defer_foreign_keys = ON")
        store.execute(
            "INSERT INTO instances VALUES ('1.2.3', 'no such study', '1.2', 'cls', 'CT', 'f', 0)"
        )
    store.write_instance(b"x", _info(generate_uid()), "CT1")
    with sqlite3.connect(store.db.path) as other:  # what is on disk, not this connection's view
        rows = other.execute("SELECT sop_uid FROM instances").fetchall()
    assert [uid for (uid,) in rows if uid != "1.2.3"] and ("1.2.3",) not in rows


def test_spool_paths_carry_no_uid(store: StudyStore) -> None:
    info = _info(generate_uid())
    path = store.write_instance(b"x", info, "CT1")
    assert info.study_uid not in str(path) and info.sop_uid not in str(path)


def test_routing_rules(tmp_path: Path) -> None:
    assert load_rules(tmp_path) == []
    (tmp_path / "routing.json").write_text(json.dumps({"rules": [
        {"modality": "CT", "body_part": "CHEST", "model": "chest-ct"},
        {"modality": "CT", "model": "any-ct"},
    ]}))  # fmt: skip
    rules = load_rules(tmp_path)
    assert rules[0] == Rule("CT", "chest-ct", "CHEST")
    chest, head, mr = make_image("CT"), make_image("CT"), make_image("MR")
    chest.BodyPartExamined, head.BodyPartExamined = "CHEST", "HEAD"
    assert route(rules, [chest]) == "chest-ct"
    assert route(rules, [head]) == "any-ct"
    assert route(rules, [mr]) is None
    (tmp_path / "routing.json").write_text('{"rules": [{"modality": "CT"}]}')
    with pytest.raises(ConfigError, match="routing rules"):
        load_rules(tmp_path)


def test_peer_files_without_the_new_field_still_load(tmp_path: Path) -> None:
    config = Config(state_dir=tmp_path)
    peers_file(config).parent.mkdir(parents=True)
    peers_file(config).write_text('{"peers": [{"ae_title": "PACS", "host": "10.0.0.5", '
                                  '"port": 104, "description": ""}]}')  # fmt: skip
    assert load_peers(config) == [Peer("PACS", "10.0.0.5", 104)]
    assert load_peers(config)[0].results_destination is False


def test_dicom_settings_from_the_environment() -> None:
    env = {"APPLIANCE_DICOM_IN_RUN": "false", "APPLIANCE_STUDY_QUIET_SECONDS": "30"}
    config = load_config(Path("/nonexistent"), env=env)
    assert config.dicom_in_run is False and config.study_quiet_seconds == 30
    with pytest.raises(ConfigError, match="not true or false"):
        load_config(Path("/nonexistent"), env={"APPLIANCE_DICOM_IN_RUN": "maybe"})
    with pytest.raises(ConfigError, match="study_quiet_seconds"):
        load_config(Path("/nonexistent"), env={"APPLIANCE_STUDY_QUIET_SECONDS": "0"})
