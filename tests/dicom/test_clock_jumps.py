"""The DICOM path when the box's wall clock jumps (ADR 0004: anyone at the console may set it, a
dead RTC battery boots it in 2000, a clinic's NTP server steps it). Real store, audit log, outbox
and a fake PACS over real associations; the clocks are the components' own parameters."""

from __future__ import annotations

import logging
import time

import pytest
from pydicom.uid import generate_uid

from appliance.audit.log import AuditLog
from appliance.config import Config
from appliance.dicom.checks import InstanceInfo
from appliance.dicom.outbox import Outbox, destinations
from appliance.dicom.peers import Peer, load_peers, save_peers
from appliance.dicom.results import ResultObject
from appliance.dicom.store import StudyState, StudyStore

from .conftest import make_image
from .pacs import FakePacs

YEAR = 365 * 86400.0
NOW = 1_800_000_000.0
AUDIT_KEY = b"k" * 32


@pytest.mark.parametrize("tried_before", [False, True], ids=["queued", "retrying"])
def test_clock_set_back_a_year_does_not_stall_the_outbox(
    box: Config, store: StudyStore, pacs: FakePacs, tried_before: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    save_peers(box, [*load_peers(box), Peer("PACS", "127.0.0.1", pacs.port, "main PACS",
                                            results_destination=True)])  # fmt: skip
    audit = AuditLog(box.audit_dir, AUDIT_KEY, None)
    clock = [NOW]
    outbox = Outbox(box, store, lambda: audit, clock=lambda: clock[0], timeout=10)
    written = outbox.write_objects([ResultObject("sc", make_image("OT"))])
    with store.transaction():
        outbox.queue_rows(generate_uid(), written, destinations(box))
    if tried_before:  # the PACS was down: the row waits 10 s, by the clock as it was
        pacs.refuse = True
        assert outbox.send_due() == 0
        pacs.refuse = False
    clock[0] -= YEAR  # the clock is set back a year before the row's time comes
    with caplog.at_level(logging.WARNING, "appliance.dicom.outbox"):
        assert outbox.send_due() == 1, "the result waits for the clock to catch up a year"
    assert len(pacs.received) == 1 and outbox.pending() == []
    assert "set back" in caplog.text and "Time zone and clock" in caplog.text


def test_clock_set_back_a_year_does_not_keep_a_study_open(
    store: StudyStore, caplog: pytest.LogCaptureFixture
) -> None:
    study = generate_uid()
    info = InstanceInfo("1.2.840.10008.5.1.4.1.1.2", generate_uid(), study, generate_uid(), "CT")
    store.write_instance(b"x", info, "CT1")  # received by the clock as it is
    back = time.time() - YEAR  # then the clock is set back a year
    with caplog.at_level(logging.WARNING, "appliance.dicom.store"):
        assert store.close_quiet(120, now=back) == 0, "closed while instances may still come"
    assert "set back" in caplog.text and "Time zone and clock" in caplog.text
    assert store.close_quiet(120, now=back + 121) == 1, "the study waits a year to be analysed"
    row = store.study(study)
    assert row is not None and row.state is StudyState.CLOSED
