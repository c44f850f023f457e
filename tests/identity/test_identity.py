"""Accounts, lockout, sessions, tokens and break-glass, audited by the real sealed audit key."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time

import pytest

from appliance.audit.records import AuditEvent
from appliance.errors import (
    AccountError,
    AccountLockedError,
    AuthenticationError,
    PermissionDeniedError,
    SessionExpiredError,
    StorageError,
    UnrecordedError,
)
from appliance.identity.roles import Principal, Role
from appliance.identity.service import IdentityPolicy, IdentityService
from appliance.runtime import Runtime
from tests.conftest import broken_trail

from .conftest import ADMIN_PASSWORD, Clock

PASSWORD = "a long enough passphrase"


def events(runtime: Runtime) -> list[AuditEvent]:
    return [r.event for r in runtime.audit.records()]


def test_a_new_box_has_no_accounts_and_no_default_password(identity: IdentityService) -> None:
    assert identity.needs_bootstrap()
    for name in ("admin", "root", "technician"):
        with pytest.raises(AuthenticationError):
            identity.login(name, "admin")


def test_first_admin_only_once(identity: IdentityService) -> None:
    identity.bootstrap_admin("alice", ADMIN_PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        identity.bootstrap_admin("mallory", ADMIN_PASSWORD)


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 12"), ("elevenchars", "at least 12"),
     ("bob-is-my-password", "contains the user name"),
     ("aaaaaaaaaaaaaaa", "too few characters")],
)  # fmt: skip
def test_weak_passwords_are_refused(
    identity: IdentityService, admin: Principal, password: str, message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        identity.add_account(admin, "bob", Role.CLINICIAN, password)


def test_login_is_audited_and_failures_do_not_say_which_part_was_wrong(
    runtime: Runtime, identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    with pytest.raises(AuthenticationError) as wrong_password:
        identity.login("bob", "not the password at all")
    with pytest.raises(AuthenticationError) as unknown_user:
        identity.login("nobody", PASSWORD)
    assert wrong_password.value.message == unknown_user.value.message
    principal, issued = identity.login("bob", PASSWORD)
    assert identity.authenticate(issued.token) == principal
    assert events(runtime).count(AuditEvent.LOGIN_FAILED) == 2
    assert events(runtime)[-1] is AuditEvent.LOGIN


def test_lockout_after_repeated_failures(
    runtime: Runtime, timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            timed.login("bob", "guess guess guess")
    with pytest.raises(AccountLockedError, match="locked after 5 failed logins") as err:
        timed.login("bob", PASSWORD)  # even the right password
    assert "appliance users unlock bob" in (err.value.hint or "")
    lockouts = [r for r in runtime.audit.records() if r.event is AuditEvent.LOCKOUT]
    assert len(lockouts) == 1 and lockouts[0].flagged
    clock.now += 16 * 60
    timed.login("bob", PASSWORD)  # the lock expires


def test_password_guessing_is_counted_while_the_trail_cannot_record_it(
    runtime: Runtime, timed: IdentityService, admin: Principal, clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # The attack: make the trail fail (fill the disk, pull the TPM at a checkpoint), then guess
    # passwords. Each guess must still count, and lock the account at the threshold; the guesser
    # gets the usual refusal, not a hint that the trail is down; the journal has every refusal.
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    before = len(events(runtime))
    with broken_trail(runtime), caplog.at_level(logging.ERROR, "appliance.identity"):
        for _ in range(5):
            with pytest.raises(AuthenticationError) as refused:
                timed.login("bob", "guess guess guess")
            assert "audit" not in refused.value.message
        with pytest.raises(AccountLockedError, match="locked after 5 failed logins"):
            timed.login("bob", PASSWORD)  # even the right password
    assert len(events(runtime)) == before  # the trail missed them: the journal has each
    journal = [r.getMessage() for r in caplog.records]
    assert all(line.startswith("identity: a login as 'bob' was refused (") and
               "but the audit trail could not record it: the audit log folder" in line
               for line in journal)  # fmt: skip
    assert [line.split("(")[1].split(")")[0] for line in journal] == [
        *["login-failed"] * 5, "lockout", "login-failed"]  # fmt: skip
    with pytest.raises(AccountLockedError):  # the trail is back: the lock stands
        timed.login("bob", PASSWORD)
    clock.now += 16 * 60
    timed.login("bob", PASSWORD)


def test_admin_unlocks_a_locked_account(timed: IdentityService, admin: Principal) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            timed.login("bob", "guess guess guess")
    timed.unlock(admin, "bob")
    timed.login("bob", PASSWORD)


def test_session_expires(timed: IdentityService, admin: Principal, clock: Clock) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = timed.login("bob", PASSWORD)
    for _ in range(8 * 6):  # active all shift long: every 10 minutes
        clock.now += 600
        if clock.now >= issued.expires:
            break
        timed.authenticate(issued.token)
    clock.now = issued.expires + 1
    with pytest.raises(SessionExpiredError, match="expired"):
        timed.authenticate(issued.token)


def test_idle_session_is_logged_off(
    runtime: Runtime, timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = timed.login("bob", PASSWORD)
    clock.now += 14 * 60
    timed.authenticate(issued.token)
    clock.now += 16 * 60
    with pytest.raises(SessionExpiredError, match="logged off after 15 minutes idle"):
        timed.authenticate(issued.token)
    last = list(runtime.audit.records())[-1]
    assert last.event is AuditEvent.LOGOUT and last.detail["why"] == "idle"
    with pytest.raises(SessionExpiredError):
        timed.authenticate(issued.token)


def test_access_is_taken_away_even_when_the_trail_cannot_record_it(
    runtime: Runtime, identity: IdentityService, admin: Principal,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # A trail that fails (full disk, TPM fault) must not keep a stolen token or a departed
    # user's account alive: the revocation stands, the caller and the journal are told.
    for name in ("bob", "carol"):
        identity.add_account(admin, name, Role.CLINICIAN, PASSWORD)
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    bob, bob_session = identity.login("bob", PASSWORD)
    _, carol_session = identity.login("carol", PASSWORD)
    pacs = identity.issue_service_token(admin, "pacs")
    before = len(events(runtime))
    with broken_trail(runtime), caplog.at_level(logging.ERROR, "appliance.identity"):
        with pytest.raises(UnrecordedError, match="session of bob is ended, but the audit trail "
                           "could not record it: the audit log folder"):  # fmt: skip
            identity.logout(bob)
        with pytest.raises(UnrecordedError, match=f"token {pacs.token_id} is revoked, but"):
            identity.revoke(admin, pacs.token_id)
        with pytest.raises(UnrecordedError, match="'carol' is disabled and its tokens revoked"):
            identity.disable(admin, "carol")
        # Granting access still waits for its record: no login without the trail.
        with pytest.raises(StorageError) as refused:
            identity.login("bob", PASSWORD)
        assert not isinstance(refused.value, UnrecordedError)
    for token in (bob_session.token, pacs.token, carol_session.token):
        with pytest.raises(SessionExpiredError):
            identity.authenticate(token)
    assert identity.store.account("carol").disabled  # type: ignore[union-attr]
    assert len(events(runtime)) == before  # the trail missed them: the journal has each
    assert [r.message.split(",")[0] for r in caplog.records] == [
        "identity: the session of bob is ended",
        f"identity: the token {pacs.token_id} is revoked",
        "identity: the account 'carol' is disabled and its tokens revoked",
    ]


def test_idle_logoff_stands_when_the_trail_cannot_record_it(
    runtime: Runtime, timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = timed.login("bob", PASSWORD)
    clock.now += 16 * 60
    with broken_trail(runtime), pytest.raises(SessionExpiredError, match="idle"):
        timed.authenticate(issued.token)
    with pytest.raises(SessionExpiredError, match="ended or revoked"):  # not idle again: over
        timed.authenticate(issued.token)


def test_logout_revokes_the_token(identity: IdentityService, admin: Principal) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    principal, issued = identity.login("bob", PASSWORD)
    identity.logout(principal)
    with pytest.raises(SessionExpiredError):
        identity.authenticate(issued.token)


def test_forged_or_altered_tokens_are_refused(identity: IdentityService, admin: Principal) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = identity.login("bob", PASSWORD)
    altered = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    for token in (altered, "apl_000000000000_x", "Bearer x", ""):
        with pytest.raises(SessionExpiredError):
            identity.authenticate(token)


def test_tokens_are_stored_hashed(identity: IdentityService, admin: Principal) -> None:
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    issued = identity.issue_service_token(admin, "pacs")
    # apl_<token id>_<secret>; the secret is URL-safe base64 and may itself hold "_", so split
    # from the left (splitting from the right sometimes left a 1-2 character fragment, which a
    # database file holds by chance: a flaky test).
    prefix, token_id, secret_text = issued.token.split("_", 2)
    assert (prefix, token_id) == ("apl", issued.token_id) and len(secret_text) >= 40
    secret = secret_text.encode()
    db = identity.store.path
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert secret not in path.read_bytes()


def test_service_token_revocation(identity: IdentityService, admin: Principal) -> None:
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    issued = identity.issue_service_token(admin, "pacs")
    assert identity.authenticate(issued.token).role is Role.SERVICE
    identity.revoke(admin, issued.token_id)
    with pytest.raises(SessionExpiredError, match="revoked"):
        identity.authenticate(issued.token)


def test_disabling_an_account_ends_its_sessions(
    identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, issued = identity.login("bob", PASSWORD)
    identity.disable(admin, "bob")
    with pytest.raises(SessionExpiredError):
        identity.authenticate(issued.token)
    with pytest.raises(AuthenticationError):
        identity.login("bob", PASSWORD)


def test_a_disabled_account_is_enabled_again_without_its_old_sessions(
    runtime: Runtime, identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, old = identity.login("bob", PASSWORD)
    identity.disable(admin, "bob")
    with pytest.raises(AccountError, match="'bob' is disabled already"):
        identity.disable(admin, "bob")
    identity.enable(admin, "bob")
    with pytest.raises(SessionExpiredError):
        identity.authenticate(old.token)  # a session revoked by the disable stays revoked
    _, new = identity.login("bob", PASSWORD)
    assert identity.authenticate(new.token).username == "bob"
    with pytest.raises(AccountError, match="'bob' is not disabled"):
        identity.enable(admin, "bob")
    with pytest.raises(AccountError, match="there is no account 'nobody'"):
        identity.enable(admin, "nobody")
    changes = [
        r.detail["action"]
        for r in runtime.audit.records()
        if r.event is AuditEvent.ACCOUNT_CHANGE and r.detail["account"] == "bob"
    ]
    assert changes == ["create", "disable", "enable"]


def test_the_last_active_admin_cannot_be_disabled_even_by_two_admins_at_once(
    identity: IdentityService, admin: Principal
) -> None:
    """Two admins disable each other at the same moment. The check and the change are one
    transaction, so whoever writes second finds its target the last admin; checked before the
    transaction, both passed and the box was left with no admin."""
    identity.add_account(admin, "bea", Role.ADMIN, PASSWORD)
    bea, _ = identity.login("bea", PASSWORD)
    outcomes: list[str] = []

    def disable(by: Principal, whom: str) -> None:
        try:
            identity.disable(by, whom)
            outcomes.append(f"disabled {whom}")
        except AccountError as exc:
            outcomes.append(str(exc))

    blocker = sqlite3.connect(identity.store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # both calls wait for the write lock...
    threads = [threading.Thread(target=disable, args=(admin, "bea")),
               threading.Thread(target=disable, args=(bea, "alice"))]  # fmt: skip
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # ...having read whatever they read before it
    blocker.execute("COMMIT")
    blocker.close()
    for thread in threads:
        thread.join(30)
    assert sum(o.startswith("disabled") for o in outcomes) == 1, outcomes
    assert any("is the last active admin" in o for o in outcomes), outcomes
    active = [a for a in identity.store.accounts() if a.role is Role.ADMIN and not a.disabled]
    assert len(active) == 1


def test_an_admin_reset_ends_sessions_and_lifts_a_lockout(
    runtime: Runtime, identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    _, session = identity.login("bob", PASSWORD)
    for _ in range(5):
        with pytest.raises(AuthenticationError):
            identity.login("bob", "guess guess guess")
    identity.set_password(admin, "bob", "a fresh long passphrase")
    with pytest.raises(SessionExpiredError):
        identity.authenticate(session.token)  # whoever knew the old password is out
    identity.login("bob", "a fresh long passphrase")  # not locked any more
    with pytest.raises(AuthenticationError):
        identity.login("bob", PASSWORD)
    last = [r for r in runtime.audit.records() if r.event is AuditEvent.ACCOUNT_CHANGE][-1]
    assert last.detail == {"action": "password reset", "account": "bob"}
    assert last.actor == "alice"
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    with pytest.raises(AccountError, match="'pacs' is a service account; it has no password"):
        identity.set_password(admin, "pacs", "a fresh long passphrase")
    with pytest.raises(AuthenticationError):
        identity.login("pacs", "a fresh long passphrase")


def test_a_user_changes_their_password_only_knowing_the_current_one(
    runtime: Runtime, identity: IdentityService, admin: Principal
) -> None:
    """An unattended session does not let a passer-by take the account: the current password
    is asked, and wrong guesses count towards the lockout like failed logins."""
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    bob, this = identity.login("bob", PASSWORD)
    _, other = identity.login("bob", PASSWORD)
    with pytest.raises(AuthenticationError, match="current password is wrong"):
        identity.change_password(bob, "a guess of a password", "a new long passphrase")
    assert events(runtime)[-1] is AuditEvent.LOGIN_FAILED
    with pytest.raises(AccountError, match="is the current one"):
        identity.change_password(bob, PASSWORD, PASSWORD)
    identity.change_password(bob, PASSWORD, "a new long passphrase")
    assert identity.authenticate(this.token).username == "bob"  # this session goes on
    with pytest.raises(SessionExpiredError):
        identity.authenticate(other.token)
    with pytest.raises(AuthenticationError):
        identity.login("bob", PASSWORD)
    identity.login("bob", "a new long passphrase")
    for _ in range(identity.policy.lockout_threshold):
        with pytest.raises(AuthenticationError):
            identity.change_password(bob, "another guess at it", "a third long passphrase")
    with pytest.raises(AccountLockedError):
        identity.login("bob", "a new long passphrase")
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    pacs = identity.authenticate(identity.issue_service_token(admin, "pacs").token)
    with pytest.raises(PermissionDeniedError, match="may not change a password"):
        identity.change_password(pacs, "", "a new long passphrase")


def test_only_admins_manage_accounts(identity: IdentityService, admin: Principal) -> None:
    identity.add_account(admin, "tech", Role.TECHNICIAN, PASSWORD)
    tech, _ = identity.login("tech", PASSWORD)
    with pytest.raises(PermissionDeniedError, match="may not manage accounts"):
        identity.add_account(tech, "eve", Role.ADMIN, PASSWORD)


def test_break_glass_is_flagged_until_an_admin_acknowledges(
    runtime: Runtime, identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "er-doctor", Role.BREAK_GLASS, PASSWORD)
    with pytest.raises(AccountError, match="needs a reason"):
        identity.login("er-doctor", PASSWORD)
    principal, _ = identity.login("er-doctor", PASSWORD, reason="trauma bay, PACS login down")
    assert principal.break_glass
    flagged = [r for r in runtime.audit.records() if r.flagged]
    assert {r.event for r in flagged} >= {AuditEvent.BREAK_GLASS, AuditEvent.LOGIN}
    uses = identity.unacknowledged_break_glass()
    assert [u.reason for u in uses] == ["trauma bay, PACS login down"]
    with pytest.raises(PermissionDeniedError):
        identity.acknowledge_break_glass(principal, uses[0].id)
    identity.acknowledge_break_glass(admin, uses[0].id)
    assert identity.unacknowledged_break_glass() == []
    assert events(runtime)[-1] is AuditEvent.BREAK_GLASS_ACK


def test_break_glass_stays_usable_after_failed_attempts(
    identity: IdentityService, admin: Principal
) -> None:
    identity.add_account(admin, "er-doctor", Role.BREAK_GLASS, PASSWORD)
    for _ in range(7):
        with pytest.raises(AuthenticationError):
            identity.login("er-doctor", "wrong wrong wrong", reason="x")
    principal, _ = identity.login("er-doctor", PASSWORD, reason="stroke alert")
    assert principal.break_glass


def test_policy_comes_from_config(runtime: Runtime) -> None:
    policy = IdentityPolicy.from_config(runtime.config)
    assert policy.session_idle_s == 15 * 60
    assert policy.lockout_threshold == 5


def test_token_issued_to_a_disabled_account_is_refused(
    identity: IdentityService, admin: Principal
) -> None:
    """Disabling revokes the tokens there are; a token minted or seeded later is refused too."""
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    identity.disable(admin, "pacs")
    issued = identity.issue_service_token(admin, "pacs")
    secret = "s" * 43
    digest = hashlib.sha256(secret.encode()).hexdigest()
    identity.enroll_service_token("pacs", "0123456789ab", digest)
    for token in (issued.token, f"apl_0123456789ab_{secret}"):
        with pytest.raises(SessionExpiredError, match="ended or revoked"):
            identity.authenticate(token)


def test_service_token_is_refused_at_the_second_it_expires(
    timed: IdentityService, admin: Principal, clock: Clock
) -> None:
    timed.add_account(admin, "pacs", Role.SERVICE, None)
    issued = timed.issue_service_token(admin, "pacs")
    clock.now = issued.expires - 1
    assert timed.authenticate(issued.token).username == "pacs"
    clock.now = issued.expires
    with pytest.raises(SessionExpiredError, match="the session expired"):
        timed.authenticate(issued.token)


def test_service_account_has_no_password_to_log_in_with(
    identity: IdentityService, admin: Principal
) -> None:
    """Service accounts authenticate by token only: no password opens an interactive login."""
    with pytest.raises(AccountError, match="service accounts have no password"):
        identity.add_account(admin, "pacs", Role.SERVICE, PASSWORD)
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    for guess in (PASSWORD, "", "any password at all"):
        with pytest.raises(AuthenticationError):
            identity.login("pacs", guess)


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.ADMIN, Role.BREAK_GLASS])
def test_service_token_for_a_person_is_refused(
    identity: IdentityService, admin: Principal, role: Role
) -> None:
    """A service token lives for days with no idle logoff: never for a person's account."""
    if role is not Role.ADMIN:
        identity.add_account(admin, "bob", role, PASSWORD)
    name = "alice" if role is Role.ADMIN else "bob"
    with pytest.raises(AccountError, match=f"'{name}' is not a service account"):
        identity.issue_service_token(admin, name)


def test_only_a_user_manager_sets_another_users_password(
    identity: IdentityService, admin: Principal
) -> None:
    """Setting someone else's password would take their account; one's own changes only with
    the current password (change_password)."""
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    bob, _ = identity.login("bob", PASSWORD)
    with pytest.raises(PermissionDeniedError, match="may not change another user's password"):
        identity.set_password(bob, "alice", "bob owns the admin now")
    identity.login("alice", ADMIN_PASSWORD)
    with pytest.raises(PermissionDeniedError):  # nor their own without the current one
        identity.set_password(bob, "bob", "a new long passphrase")
    with pytest.raises(AccountError, match="changed knowing the current one"):
        identity.set_password(admin, "alice", "a new long passphrase")  # an admin neither
    identity.change_password(bob, PASSWORD, "a new long passphrase")
    identity.login("bob", "a new long passphrase")


@pytest.mark.parametrize(
    "act",
    ["disable", "enable", "unlock", "issue_service_token", "revoke", "acknowledge_break_glass"],
)
def test_account_operations_need_their_permission(
    identity: IdentityService, admin: Principal, act: str
) -> None:
    """A clinician cannot unlock a brute-forced account, revoke others' tokens, and the like."""
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    token = identity.issue_service_token(admin, "pacs")
    identity.add_account(admin, "er-doctor", Role.BREAK_GLASS, PASSWORD)
    identity.login("er-doctor", PASSWORD, reason="stroke alert")
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    bob, _ = identity.login("bob", PASSWORD)
    use = identity.unacknowledged_break_glass()[0].id
    calls = {
        "disable": lambda: identity.disable(bob, "pacs"),
        "enable": lambda: identity.enable(bob, "pacs"),
        "unlock": lambda: identity.unlock(bob, "pacs"),
        "issue_service_token": lambda: identity.issue_service_token(bob, "pacs"),
        "revoke": lambda: identity.revoke(bob, token.token_id),
        "acknowledge_break_glass": lambda: identity.acknowledge_break_glass(bob, use),
    }
    with pytest.raises(PermissionDeniedError, match=r"bob \(clinician\) may not"):
        calls[act]()
    assert identity.authenticate(token.token).username == "pacs"
    assert [u.id for u in identity.unacknowledged_break_glass()] == [use]
