"""A random audit key and a TPM checkpoint anchor on the test's own swtpm."""

from __future__ import annotations

import os

import pytest

from appliance.audit.anchor import DEFAULT_AUDIT_ANCHOR_INDEX, TpmCheckpointAnchor
from appliance.trust.swtpm import Swtpm


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def anchor(swtpm: Swtpm) -> TpmCheckpointAnchor:
    return TpmCheckpointAnchor(swtpm.tcti, DEFAULT_AUDIT_ANCHOR_INDEX)
