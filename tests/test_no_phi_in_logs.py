"""No PHI in logs: plant patient identifiers in what the box handles, grep every log for them.

Journald/stderr logs (here: every Python log record at DEBUG and everything written to stderr)
and every file under the state folder must not carry the raw identifiers; the audit trail holds
only their keyed hashes. Entry points that take PHI (API, DICOM) extend this test as they land.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.audit.export import export_json, export_syslog
from appliance.audit.log import verify
from appliance.audit.records import AuditEvent, Outcome, hash_subject
from appliance.config import Config
from appliance.logs import setup_logging
from appliance.runtime import open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm

PHI = ("MRN-40917733", "Jane Quinn Public", "1.2.826.0.1.3680043.8.498.44444", "555-01-2345")


def test_planted_phi_reaches_no_log_and_no_file(
    config: Config, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    setup_logging("DEBUG", stderr=True)
    caplog.set_level(logging.DEBUG)
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        for identifier in PHI:
            rt.audit.append(
                AuditEvent.PHI_READ, actor="dr-who", role="clinician", outcome=Outcome.SUCCESS,
                subject=identifier,
            )  # fmt: skip
            rt.audit.append(
                AuditEvent.INFERENCE, actor="pacs", role="service", outcome=Outcome.SUCCESS,
                subject=identifier, model="chest-ct 1.0.0",
            )  # fmt: skip
        records = list(rt.audit.records())
        with (config.state_dir / "export.json").open("w") as out:
            export_json(records, out)
        with (config.state_dir / "export.log").open("w") as out:
            export_syslog(records, out, hostname="box")
        assert verify(config.audit_dir, rt.audit_key, rt.audit_anchor).ok
        hashed = {hash_subject(rt.audit_key, i) for i in PHI}
    assert hashed <= {r.subject for r in records}, "the audit trail lost the hashed subjects"
    logged = caplog.text + capfd.readouterr().err
    files = [p for p in config.state_dir.rglob("*") if p.is_file()]
    for identifier in PHI:
        assert identifier not in logged, f"PHI {identifier!r} in the logs"
        for path in files:
            assert identifier.encode() not in path.read_bytes(), f"PHI {identifier!r} in {path}"
    assert Path(config.state_dir / "export.log").stat().st_size > 0


def test_dicom_receiver_logs_no_phi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A study carrying the planted identifiers arrives over DICOM, one accepted and one refused
    instance: no log line names them; outside the spool and its index nothing on disk does."""
    from appliance.dicom.peers import Peer, save_peers
    from appliance.dicom.receiver import start_receiver
    from appliance.dicom.store import StudyStore
    from tests.dicom.conftest import make_image, send

    setup_logging("DEBUG", stderr=True)
    caplog.set_level(logging.DEBUG)
    config = Config(state_dir=tmp_path / "state", dicom_port=0)
    save_peers(config, [Peer("MODALITY1", "127.0.0.1", 104)])
    store = StudyStore.open(config)
    receiver = start_receiver(config, store, host="127.0.0.1", port=0)
    try:
        image = make_image("CT", study=PHI[2])
        image.PatientID, image.PatientName, image.OtherPatientIDs = PHI[0], PHI[1], PHI[3]
        bad = make_image("CT", study=PHI[2])
        bad.PatientID, bad.PixelData = PHI[0], b"\0" * 6
        assert [s.Status for s in send(receiver.port, image, bad)] == [0, 0xA900]
    finally:
        receiver.stop()
        store.close()
    logged = caplog.text + capfd.readouterr().err
    spool = config.state_dir / "dicom" / "spool"
    files = [
        p for p in config.state_dir.rglob("*")
        if p.is_file() and spool not in p.parents and not p.name.startswith("studies.db")
    ]  # fmt: skip
    for identifier in PHI:
        assert identifier not in logged, f"PHI {identifier!r} in the logs"
        for path in files:
            assert identifier.encode() not in path.read_bytes(), f"PHI {identifier!r} in {path}"
