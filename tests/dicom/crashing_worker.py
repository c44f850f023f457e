"""A worker process for test_worker.py, run as ``python -m tests.dicom.crashing_worker STATE``.

It starts the study worker on the state folder as ``appliance run`` does (the spool recovered,
then one round), with the conv model on real OpenVINO for the studies routed to it and, for the
studies routed to ``crash``, an analyser that kills its own process with SIGKILL as soon as it
reads an image, as the kernel's OOM killer or a decoder's segfault would end it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from appliance.audit.log import AuditLog
from appliance.config import Config
from appliance.dicom.analysis import Analyser, Findings, ModelAnalyser
from appliance.dicom.service import start_service
from appliance.logs import setup_logging

from .served import serve_conv_model

CRASH = "crash"
AUDIT_KEY = bytes(range(32))


class Crashing:
    """An analysis that takes the whole process down, every time."""

    def analyse(self, datasets: Iterable[Dataset], **_options: Any) -> Findings:
        for _image in datasets:
            os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("a study without images")


def main(state_dir: Path) -> None:
    setup_logging("DEBUG", stderr=True)
    config = Config(state_dir=state_dir, study_quiet_seconds=0)
    audit = AuditLog(config.audit_dir, AUDIT_KEY, None)
    source = serve_conv_model()

    def analyser_for(model: str) -> Analyser:
        return Crashing() if model == CRASH else ModelAnalyser(source, model)

    service = start_service(config, lambda: audit, analyser_for=analyser_for, receive=False,
                            poll_seconds=3600)  # fmt: skip
    try:
        service.poll()
    finally:
        service.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
