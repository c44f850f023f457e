"""Sessions, service tokens and lockouts when the box's wall clock is set back (ADR 0004): none
may live longer than its policy because of it, and none may lock a user out for the length of
the jump. Real store, real sealed audit key; the wall clock is the service's ``clock``."""

from __future__ import annotations

import logging

import pytest

from appliance.audit.records import AuditEvent
from appliance.console.screens.accounts import state_of
from appliance.errors import AccountLockedError, AuthenticationError, SessionExpiredError
from appliance.identity.roles import Principal, Role
from appliance.identity.service import IdentityService
from appliance.runtime import Runtime

from .conftest import Clock

PASSWORD = "a long enough passphrase"
YEAR = 365 * 86400.0


def test_clock_set_back_a_year_ends_a_session_instead_of_keeping_it_alive(
    runtime: Runtime, timed: IdentityService, admin: Principal, clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = timed.login("bob", PASSWORD)
    clock.now -= 60  # an NTP step: nothing to see
    assert timed.authenticate(issued.token).username == "bob"
    clock.now -= YEAR  # never idle, expiring in a year and eight hours
    with caplog.at_level(logging.WARNING), pytest.raises(SessionExpiredError, match="set back"):
        timed.authenticate(issued.token)
    assert "Time zone and clock" in caplog.text
    logoffs = [r for r in runtime.audit.records() if r.event is AuditEvent.LOGOUT]
    assert [r.detail["why"] for r in logoffs] == ["clock set back"]
    clock.now += YEAR  # put right again: the session stays over
    with pytest.raises(SessionExpiredError, match="ended or revoked"):
        timed.authenticate(issued.token)


def test_clock_set_back_refuses_a_service_token_until_the_clock_is_right(
    timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "pacs", Role.SERVICE, None)
    issued = timed.issue_service_token(admin, "pacs")
    clock.now -= YEAR  # the token would live two years
    with pytest.raises(SessionExpiredError, match="clock was set back"):
        timed.authenticate(issued.token)
    clock.now += YEAR + 60  # the clock put right: the integration needs no new token
    assert timed.authenticate(issued.token).username == "pacs"


def test_clock_set_back_a_year_does_not_lock_an_account_out_for_a_year(
    timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    for _ in range(timed.policy.lockout_threshold):
        with pytest.raises(AuthenticationError):
            timed.login("bob", "guess guess guess")
    clock.now -= YEAR
    # The accounts list (console and `users list`) shows the end a login enforces, not a year on.
    shown = {a.username: a for a in timed.accounts()}["bob"]
    assert clock.now < shown.locked_until <= clock.now + timed.policy.lockout_s
    assert state_of(shown, clock.now).startswith("LOCKED until")
    with pytest.raises(AccountLockedError):  # still locked: for the lockout's length
        timed.login("bob", PASSWORD)
    clock.now += timed.policy.lockout_s + 1
    timed.login("bob", PASSWORD)
