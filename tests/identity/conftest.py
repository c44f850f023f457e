"""An enrolled box on a real swtpm, with its real sealed audit key, for identity tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.config import Config
from appliance.identity.roles import Principal, Role
from appliance.identity.service import IdentityService
from appliance.runtime import Runtime, open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm

ADMIN_PASSWORD = "correct horse battery staple"


class Clock:
    """A wall clock the test sets (IdentityService takes it as ``clock``)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def runtime(config: Config) -> Iterator[Runtime]:
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        yield rt


@pytest.fixture
def identity(runtime: Runtime) -> IdentityService:
    return runtime.identity


@pytest.fixture
def admin(identity: IdentityService) -> Principal:
    identity.bootstrap_admin("alice", ADMIN_PASSWORD)
    principal, _ = identity.login("alice", ADMIN_PASSWORD)
    assert principal.role is Role.ADMIN
    return principal


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def timed(runtime: Runtime, identity: IdentityService, clock: Clock) -> IdentityService:
    """The same store and audit log, on a clock the test moves."""
    return IdentityService(identity.store, runtime.audit, identity.policy, clock=clock)
