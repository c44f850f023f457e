"""An enrolled box on a real swtpm with an admin and a break-glass account, for console tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.config import Config
from appliance.console import ConsoleBackends, from_runtime
from appliance.identity.roles import Role
from appliance.runtime import Runtime, open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm

ADMIN_PASSWORD = "correct horse battery staple"
EMERGENCY_PASSWORD = "emergency ladder orange kettle"


@pytest.fixture
def runtime(config: Config) -> Iterator[Runtime]:
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        rt.identity.bootstrap_admin("alice", ADMIN_PASSWORD)
        admin, _ = rt.identity.login("alice", ADMIN_PASSWORD)
        rt.identity.add_account(admin, "er-doc", Role.BREAK_GLASS, EMERGENCY_PASSWORD)
        rt.identity.logout(admin)
        yield rt


@pytest.fixture
def backends(runtime: Runtime) -> ConsoleBackends:
    """The real backends; a refresh period longer than any test, so only the first runs."""
    return from_runtime(runtime, refresh_s=60.0)
