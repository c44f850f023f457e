"""Accounts, logins, sessions and break-glass, each action on the audit trail.

HIPAA 45 CFR 164.312: unique user identification (named accounts, no shared or default ones),
emergency access (break-glass accounts, flagged until an admin acknowledges), automatic logoff
(sessions end after an idle time), audit controls (every login, failure, lockout, denial and
account change is appended to the audit log before the call returns).

What grants access waits for its record: when the trail cannot be written, no login, token or
account change goes ahead. What takes access away does not wait: a logoff, a revocation or a
disabled account takes effect first, and a trail that fails is reported (UnrecordedError, and
the journal) without keeping the session, token or account alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from appliance.audit.auditor import Auditor
from appliance.audit.records import AuditEvent, Outcome
from appliance.config import Config
from appliance.errors import (
    AccountError,
    AccountLockedError,
    ApplianceError,
    AuthenticationError,
    SessionExpiredError,
    UnrecordedError,
)
from appliance.identity import clockjump, passwords
from appliance.identity.roles import Permission, Principal, Role, require
from appliance.identity.store import Account, BreakGlassUse, IdentityStore, TokenRow

log = logging.getLogger(__name__)

TOKEN_PREFIX = "apl"  # noqa: S105 - a label, not a secret
# Writing last_used on every request would cost an fsync each; idleness is measured to this grain.
_TOUCH_GRAIN_S = 30.0
_SEEN_MAX = 4096
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")


@dataclass(frozen=True)
class IdentityPolicy:
    session_ttl_s: float
    session_idle_s: float
    lockout_threshold: int
    lockout_s: float
    service_token_s: float

    @classmethod
    def from_config(cls, config: Config) -> IdentityPolicy:
        return cls(
            session_ttl_s=config.session_ttl_minutes * 60.0,
            session_idle_s=config.session_idle_minutes * 60.0,
            lockout_threshold=config.lockout_threshold,
            lockout_s=config.lockout_minutes * 60.0,
            service_token_s=config.service_token_days * 86400.0,
        )


@dataclass(frozen=True)
class IssuedToken:
    """A bearer token, shown once: only its hash is stored."""

    token: str
    token_id: str
    expires: float


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _valid_username(username: str) -> None:
    if not 2 <= len(username) <= 64 or not set(username) <= _NAME_CHARS:  # noqa: PLR2004
        raise AccountError(
            f"'{username}' is not a valid user name.",
            "Use 2 to 64 lower-case letters, digits, dots, dashes or underscores.",
        )


class IdentityService:
    """The identity operations over one store, writing to one audit log."""

    def __init__(
        self,
        store: IdentityStore,
        audit: Auditor,
        policy: IdentityPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.audit = audit
        self.policy = policy
        self.clock = clock
        # Per thread (store versions are per thread): token id -> (store version, token row,
        # account) of a token that authenticated.
        self._seen = threading.local()

    # --- accounts -------------------------------------------------------------------------

    def needs_bootstrap(self) -> bool:
        """True until the first admin exists (the box is being provisioned)."""
        return self.store.count_accounts() == 0

    def bootstrap_admin(self, username: str, password: str) -> None:
        """Create the first admin; refused once any account exists."""
        if not self.needs_bootstrap():
            raise AccountError(
                "the first admin already exists.",
                "Log in as an admin and use `appliance users add`.",
            )
        self._create(username, Role.ADMIN, password, actor="provisioning")

    def add_account(self, by: Principal, username: str, role: Role, password: str | None) -> None:
        """Create a named account (a service account has no password, only tokens)."""
        require(by, Permission.USER_MANAGE, "manage accounts")
        if role is Role.SERVICE and password:
            raise AccountError("service accounts have no password.", "Issue a token instead.")
        if role is not Role.SERVICE and not password:
            raise AccountError(f"a {role} account needs a password.", "Give one.")
        self._create(username, role, password, actor=by.username)

    def _create(self, username: str, role: Role, password: str | None, actor: str) -> None:
        _valid_username(username)
        if password is not None:
            passwords.check_policy(username, password)
        hashed = passwords.hash_password(password) if password else None
        with self.store.transaction() as db:
            if self.store.account(username):
                raise AccountError(
                    f"the account '{username}' exists already.",
                    "Choose another name; `appliance users list` shows the accounts.",
                )
            db.execute(
                "INSERT INTO accounts (username, role, password_hash, created) VALUES (?,?,?,?)",
                (username, role.value, hashed, self.clock()),
            )
            self.audit.append(
                AuditEvent.ACCOUNT_CHANGE,
                actor=actor,
                outcome=Outcome.SUCCESS,
                detail={"action": "create", "account": username, "account_role": role.value},
            )

    def set_password(self, by: Principal, username: str, password: str) -> None:
        """An admin's reset of another account's password: it also ends the account's sessions
        and lifts a lockout (what a clinic does for a forgotten or exposed password).

        One's own password changes only with :meth:`change_password`, which asks for the
        current one: a session left open must not let anyone take its account over.
        """
        require(by, Permission.USER_MANAGE, "change another user's password")
        if by.username == username:
            raise AccountError(
                "your own password is changed knowing the current one, not reset.",
                "Use `appliance passwd`, or `p` on the console's dashboard.",
            )
        account = self.store.account(username)
        if account and account.role is Role.SERVICE:
            raise AccountError(
                f"'{username}' is a service account; it has no password, only tokens.",
                f"Issue it a new token (`appliance users token {username}`).",
            )
        passwords.check_policy(username, password)
        hashed = passwords.hash_password(password)
        with self.store.transaction() as db:
            self._existing(username)
            db.execute(
                "UPDATE accounts SET password_hash = ?, failed = 0, locked_until = 0 "
                "WHERE username = ?",
                (hashed, username),
            )
            db.execute("UPDATE tokens SET revoked = 1 WHERE username = ?", (username,))
            self._account_change(by, username, "password reset")

    def change_password(self, by: Principal, current: str, password: str) -> None:
        """Change the caller's own password, given the current one.

        A wrong current password counts as a failed login (towards the lockout) and is audited,
        so an unattended session does not let anyone guess it or take the account over. The
        caller's other sessions end; this one stays.
        """
        require(by, Permission.PASSWORD_OWN, "change a password")
        account = self._existing(by.username)
        if not passwords.verify_password(account.password_hash, current):
            self._count_failure(by.username, True, self.clock())
            raise AuthenticationError(
                "the current password is wrong; the password is unchanged.",
                "Type the password you logged in with; after "
                f"{self.policy.lockout_threshold} failures the account is locked for a while.",
            )
        if password == current:
            raise AccountError(
                "the new password is the current one.", "Choose a password you have not used."
            )
        passwords.check_policy(by.username, password)
        hashed = passwords.hash_password(password)
        with self.store.transaction() as db:
            db.execute(
                "UPDATE accounts SET password_hash = ?, failed = 0 WHERE username = ?",
                (hashed, by.username),
            )
            db.execute(
                "UPDATE tokens SET revoked = 1 WHERE username = ? AND id != ?",
                (by.username, by.session_id),
            )
            self._account_change(by, by.username, "password")

    def disable(self, by: Principal, username: str) -> None:
        """Disable the account and revoke its tokens, in one transaction.

        Raises AccountError for the last active admin: without an admin nobody could manage
        accounts (or enable this one again). The check runs inside the transaction, so two
        admins disabling each other at once cannot both succeed. Raises UnrecordedError when the
        trail could not record it: the account is disabled all the same (see :meth:`_taken_away`).
        """
        require(by, Permission.USER_MANAGE, "manage accounts")
        with self.store.transaction() as db:
            account = self._existing(username)
            admins = {
                a.username for a in self.store.accounts() if a.role is Role.ADMIN and not a.disabled
            }
            if admins == {username}:
                raise AccountError(
                    f"'{username}' is the last active admin; disabling it would leave nobody to "
                    "manage accounts.",
                    "Create another admin first (`appliance users add NAME --role admin`).",
                )
            if account.disabled:
                raise AccountError(
                    f"the account '{username}' is disabled already.",
                    f"`appliance users enable {username}` enables it again.",
                )
            db.execute("UPDATE accounts SET disabled = 1 WHERE username = ?", (username,))
            db.execute("UPDATE tokens SET revoked = 1 WHERE username = ?", (username,))
        self._taken_away(
            f"the account '{username}' is disabled and its tokens revoked",
            AuditEvent.ACCOUNT_CHANGE, actor=by.username, role=by.role.value,
            outcome=Outcome.SUCCESS, detail={"action": "disable", "account": username},
        )  # fmt: skip

    def enable(self, by: Principal, username: str) -> None:
        """Enable a disabled account again. Its old sessions and tokens stay revoked: its user
        logs in afresh, and a service account needs a new token."""
        require(by, Permission.USER_MANAGE, "manage accounts")
        with self.store.transaction() as db:
            if not self._existing(username).disabled:
                raise AccountError(
                    f"the account '{username}' is not disabled.",
                    "See `appliance users list`; a locked account is unlocked with "
                    f"`appliance users unlock {username}`.",
                )
            db.execute(
                "UPDATE accounts SET disabled = 0, failed = 0, locked_until = 0 "
                "WHERE username = ?",
                (username,),
            )
            self._account_change(by, username, "enable")

    def unlock(self, by: Principal, username: str) -> None:
        require(by, Permission.USER_MANAGE, "manage accounts")
        self._update(by, username, "unlock", failed=0, locked_until=0)

    def _update(self, by: Principal, username: str, action: str, **columns: object) -> None:
        sets = ", ".join(f"{c} = ?" for c in columns)
        with self.store.transaction() as db:
            self._existing(username)
            db.execute(
                f"UPDATE accounts SET {sets} WHERE username = ?",  # noqa: S608 - fixed names
                (*columns.values(), username),
            )
            self._account_change(by, username, action)

    def _existing(self, username: str) -> Account:
        account = self.store.account(username)
        if not account:
            raise AccountError(f"there is no account '{username}'.", "See `appliance users list`.")
        return account

    def _account_change(self, by: Principal, username: str, action: str) -> None:
        self.audit.append(
            AuditEvent.ACCOUNT_CHANGE,
            actor=by.username,
            role=by.role.value,
            outcome=Outcome.SUCCESS,
            detail={"action": action, "account": username},
        )

    # --- login and sessions ---------------------------------------------------------------

    def accounts(self) -> list[Account]:
        """Every account, its lockout end as a login would enforce it now: a lockout set before
        the clock went back shows its bounded end, not the stored one a year away."""
        now, out = self.clock(), []
        for account in self.store.accounts():
            end = clockjump.bounded_lockout(account.locked_until, now, self.policy.lockout_s)
            out.append(account if end is None else replace(account, locked_until=end))
        return out

    def login(
        self, username: str, password: str, *, reason: str | None = None
    ) -> tuple[Principal, IssuedToken]:
        """Check the password and open a session.

        Raises AuthenticationError (unknown user or wrong password, not told apart),
        AccountLockedError after too many failures, AccountError for a break-glass login
        without a reason.
        """
        now = self.clock()
        account = self.store.account(username)
        if account and (end := clockjump.lockout_end(account.locked_until, now,
                                                     self.policy.lockout_s)):  # fmt: skip
            with self.store.transaction() as db:
                db.execute("UPDATE accounts SET locked_until = ? WHERE username = ?",
                           (end, username))  # fmt: skip
            account = replace(account, locked_until=end)
        if account and account.locked_until > now and account.role is not Role.BREAK_GLASS:
            self._failed(username, "locked")
            until = time.strftime("%H:%M UTC", time.gmtime(account.locked_until))
            raise AccountLockedError(
                f"the account '{username}' is locked after {account.failed} failed logins, "
                f"until {until}.",
                f"Wait, or ask an admin to unlock it (`appliance users unlock {username}`).",
            )
        ok = passwords.verify_password(account.password_hash if account else None, password)
        if not account or not ok or account.disabled:
            self._count_failure(username, account is not None, now)
            raise AuthenticationError(
                "unknown user, wrong password, or disabled account.",
                "Check the user name and password; after "
                f"{self.policy.lockout_threshold} failures the account is locked for a while.",
            )
        if account.role is Role.BREAK_GLASS and not (reason and reason.strip()):
            raise AccountError(
                "a break-glass login needs a reason.", "Say why, e.g. --reason 'ED, PACS down'."
            )
        return self._open_session(account.username, account.role, now, reason)

    def _failed(self, username: str, why: str) -> None:
        self._refusal(AuditEvent.LOGIN_FAILED, username, {"why": why})

    def _refusal(
        self, event: AuditEvent, username: str, detail: dict[str, str | int], *,
        flagged: bool = False,
    ) -> None:  # fmt: skip
        """Audit a login refused (or the lockout it caused), after the refusal is counted.

        Like access taken away (:meth:`_taken_away`), a refusal stands without its record: a
        trail that cannot be written (a full disk, a TPM fault at a checkpoint) must neither stop
        the failures being counted, which would open the door to password guessing, nor tell the
        guesser that the trail is down. The caller gets the usual refusal; the journal says what
        the trail misses.
        """
        try:
            self.audit.append(event, actor=username, outcome=Outcome.FAILURE, detail=detail,
                              flagged=flagged)  # fmt: skip
        except ApplianceError as exc:
            # The reason, not a traceback: the journal line is the record the trail lacks.
            log.error("identity: a login as %r was refused (%s), but the audit trail could not "  # noqa: TRY400
                      "record it: %s", username, event.value, exc.message)  # fmt: skip

    def _count_failure(self, username: str, exists: bool, now: float) -> None:
        """Count a failed login against ``username`` and lock the account at the threshold:
        committed first, then audited, so that a trail that fails cannot undo the count."""
        locked_after = 0
        if exists:
            with self.store.transaction() as db:
                db.execute("UPDATE accounts SET failed = failed + 1 WHERE username = ?",
                           (username,))  # fmt: skip
                account = self.store.account(username)
                # A break-glass account is never locked: emergency access must stay possible;
                # every failure is audited.
                if (account and account.failed >= self.policy.lockout_threshold
                        and account.role is not Role.BREAK_GLASS):  # fmt: skip
                    db.execute("UPDATE accounts SET locked_until = ? WHERE username = ?",
                               (now + self.policy.lockout_s, username))  # fmt: skip
                    locked_after = account.failed
        self._failed(username, "bad credentials")
        if locked_after:
            log.warning("identity: account locked after %d failed logins", locked_after)
            self._refusal(AuditEvent.LOCKOUT, username,
                          {"failures": locked_after, "minutes": int(self.policy.lockout_s / 60)},
                          flagged=True)  # fmt: skip

    def _open_session(
        self, username: str, role: Role, now: float, reason: str | None
    ) -> tuple[Principal, IssuedToken]:
        issued = self._issue(username, "session", now, self.policy.session_ttl_s)
        with self.store.transaction() as db:
            db.execute(
                "UPDATE accounts SET failed = 0, locked_until = 0 WHERE username = ?", (username,)
            )
            detail: dict[str, str | int | bool] = {"session": issued.token_id}
            if role is Role.BREAK_GLASS:
                db.execute(
                    "INSERT INTO break_glass (username, at, reason) VALUES (?,?,?)",
                    (username, now, reason or ""),
                )
                detail["reason"] = reason or ""
                self.audit.append(
                    AuditEvent.BREAK_GLASS, actor=username, role=role.value,
                    outcome=Outcome.SUCCESS, detail=detail, flagged=True,
                )  # fmt: skip
            self.audit.append(
                AuditEvent.LOGIN, actor=username, role=role.value, outcome=Outcome.SUCCESS,
                detail=detail, flagged=role is Role.BREAK_GLASS,
            )  # fmt: skip
        return Principal(username, role, issued.token_id), issued

    def _issue(self, username: str, kind: str, now: float, ttl: float) -> IssuedToken:
        token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        idle = self.policy.session_idle_s if kind == "session" else 0.0
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO tokens (id, token_hash, username, kind, issued, expires, "
                "idle_timeout, last_used) VALUES (?,?,?,?,?,?,?,?)",
                (token_id, _hash_secret(secret), username, kind, now, now + ttl, idle, now),
            )
        return IssuedToken(f"{TOKEN_PREFIX}_{token_id}_{secret}", token_id, now + ttl)

    def authenticate(self, token: str) -> Principal:
        """The principal a bearer token stands for.

        Raises SessionExpiredError for an unknown, revoked, expired or idle token (an idle
        session is logged off and the logoff audited; when the trail cannot take the record,
        the session is logged off all the same and the journal says what the trail misses).
        """
        row, account = self._lookup(token)
        now = self.clock()
        if row.revoked or account is None or account.disabled:
            raise SessionExpiredError("the session was ended or revoked.", "Log in again.")
        if now >= row.expires:
            raise SessionExpiredError("the session expired.", "Log in again.")
        if (ahead := clockjump.token_ahead(row, now)) is not None:
            if row.kind == "session":
                with contextlib.suppress(UnrecordedError):  # logged by _end; the session is over
                    self._end(row.id, row.username, "clock set back")
            raise ahead
        if row.idle_timeout and now - row.last_used > row.idle_timeout:
            with contextlib.suppress(UnrecordedError):  # logged by _end; the session is over
                self._end(row.id, row.username, "idle")
            raise SessionExpiredError(
                f"you were logged off after {int(row.idle_timeout // 60)} minutes idle.",
                "Log in again.",
            )
        if now - row.last_used > _TOUCH_GRAIN_S:
            with self.store.transaction() as db:
                db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, row.id))
        return Principal(row.username, account.role, row.id)

    def _lookup(self, token: str) -> tuple[TokenRow, Account | None]:
        """The token's row and account; raises SessionExpiredError for an unknown token.

        A request per token would read both from SQLite each time; instead they are kept while
        the database's version stays the same, so that any commit (a revocation, a disable, a
        logoff, from this process or another) makes the very next call read them again.
        """
        prefix, _, rest = token.strip().partition("_")
        token_id, _, secret = rest.partition("_")
        digest = _hash_secret(secret)
        version = self.store.version()
        cache: dict[str, tuple[int, TokenRow, Account]] | None = getattr(self._seen, "d", None)
        if cache is None:
            cache = self._seen.d = {}
        seen = cache.get(token_id)
        if seen is not None and seen[0] == version and hmac.compare_digest(seen[1].token_hash,
                                                                           digest):  # fmt: skip
            return seen[1], seen[2]
        row = self.store.token(token_id) if prefix == TOKEN_PREFIX else None
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise SessionExpiredError("that token is not valid.", "Log in again.")
        account = self.store.account(row.username)
        if account is not None:
            if len(cache) >= _SEEN_MAX:
                cache.clear()
            cache[token_id] = (version, row, account)
        return row, account

    def logout(self, principal: Principal, why: str = "logout") -> None:
        """End the session (``why``: "logout", or "idle" for an automatic logoff).

        Raises UnrecordedError when the trail could not record it: the session is ended all the
        same (see :meth:`_taken_away`).
        """
        self._end(principal.session_id, principal.username, why)

    def _end(self, token_id: str, username: str, why: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,))
        self._taken_away(
            f"the session of {username} is ended", AuditEvent.LOGOUT, actor=username,
            outcome=Outcome.SUCCESS, detail={"session": token_id, "why": why},
        )  # fmt: skip

    def _taken_away(
        self, done: str, event: AuditEvent, *, actor: str, outcome: Outcome,
        detail: dict[str, str], role: str | None = None,
    ) -> None:  # fmt: skip
        """Audit access that was just taken away (a session ended, a token revoked, an account
        disabled), after the change is committed.

        Granting access waits for its record: no record, no access. Taking access away does not:
        a trail that cannot be written (a full disk, a TPM fault at a checkpoint) must not keep a
        stolen token or a departed user's account alive. So the change stands, the journal says
        what the trail misses, and UnrecordedError tells the caller (``done``: what happened).
        """
        try:
            self.audit.append(event, actor=actor, role=role, outcome=outcome, detail=detail)
        except ApplianceError as exc:
            # The reason, not a traceback: the journal line is the record the trail lacks.
            log.error("identity: %s, but the audit trail could not record it (%s): %s",  # noqa: TRY400
                      done, event.value, exc.message)  # fmt: skip
            raise UnrecordedError(
                f"{done}, but the audit trail could not record it: {exc.message}",
                exc.hint or "Run `appliance audit verify` and check the state partition.",
            ) from exc

    # --- service tokens and break-glass ---------------------------------------------------

    def issue_service_token(self, by: Principal, username: str) -> IssuedToken:
        """A long-lived bearer token for a service account (PACS, EHR)."""
        require(by, Permission.USER_MANAGE, "issue tokens")
        account = self.store.account(username)
        if account is None or account.role is not Role.SERVICE:
            raise AccountError(
                f"'{username}' is not a service account.", "See `appliance users list`."
            )
        issued = self._issue(username, "service", self.clock(), self.policy.service_token_s)
        self.audit.append(
            AuditEvent.TOKEN_ISSUED, actor=by.username, role=by.role.value,
            outcome=Outcome.SUCCESS, detail={"account": username, "token": issued.token_id},
        )  # fmt: skip
        return issued

    def enroll_service_token(
        self, username: str, token_id: str, secret_sha256: str, actor: str = "provisioning"
    ) -> None:
        """Store a service token minted off the box (a factory seed): only its hash arrives.

        The account is created as a service account if it does not exist. The token then
        authenticates as ``apl_<token_id>_<secret>`` like any other, until it expires or is
        revoked.
        """
        if not re.fullmatch(r"[0-9a-f]{12}", token_id) or not re.fullmatch(
            r"[0-9a-f]{64}", secret_sha256
        ):
            raise AccountError(
                "a seeded token needs a 12-hex-digit id and the SHA-256 (hex) of its secret.",
                "Make the seed with `appliance-vendor` or see appliance/provision.py.",
            )
        account = self.store.account(username)
        if account is None:
            self._create(username, Role.SERVICE, None, actor=actor)
        elif account.role is not Role.SERVICE:
            raise AccountError(
                f"'{username}' is not a service account.", "See `appliance users list`."
            )
        if self.store.token(token_id) is not None:
            return  # applied before (the seed runs again after a restart): nothing to do
        now = self.clock()
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO tokens (id, token_hash, username, kind, issued, expires, "
                "idle_timeout, last_used) VALUES (?,?,?,?,?,?,?,?)",
                (token_id, secret_sha256, username, "service", now,
                 now + self.policy.service_token_s, 0.0, now),
            )  # fmt: skip
            self.audit.append(
                AuditEvent.TOKEN_ISSUED, actor=actor, outcome=Outcome.SUCCESS,
                detail={"account": username, "token": token_id, "how": "seed"},
            )  # fmt: skip

    def revoke(self, by: Principal, token_id: str) -> None:
        """Revoke a session or service token. Raises UnrecordedError when the trail could not
        record it: the token is revoked all the same (see :meth:`_taken_away`)."""
        require(by, Permission.USER_MANAGE, "revoke tokens")
        if self.store.token(token_id) is None:
            raise AccountError(
                f"there is no token '{token_id}'.",
                "Give the token id shown when it was issued (`token <id> for ...`), not the "
                "token itself.",
            )
        with self.store.transaction() as db:
            db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (token_id,))
        self._taken_away(
            f"the token {token_id} is revoked", AuditEvent.TOKEN_REVOKED, actor=by.username,
            role=by.role.value, outcome=Outcome.SUCCESS, detail={"token": token_id},
        )  # fmt: skip

    def unacknowledged_break_glass(self) -> list[BreakGlassUse]:
        return self.store.break_glass_uses(unacknowledged_only=True)

    def acknowledge_break_glass(self, by: Principal, use_id: int) -> None:
        require(by, Permission.BREAK_GLASS_ACK, "acknowledge break-glass use")
        with self.store.transaction() as db:
            cur = db.execute(
                "UPDATE break_glass SET acked_by = ?, acked_at = ? "
                "WHERE id = ? AND acked_at IS NULL",
                (by.username, self.clock(), use_id),
            )
            if cur.rowcount != 1:
                raise AccountError(
                    f"there is no unacknowledged break-glass use #{use_id}.",
                    "See `appliance audit show --break-glass`.",
                )
            self.audit.append(
                AuditEvent.BREAK_GLASS_ACK, actor=by.username, role=by.role.value,
                outcome=Outcome.SUCCESS, detail={"use": use_id},
            )  # fmt: skip

    def record_denial(self, principal: Principal, entry_point: str, permission: Permission) -> None:
        """Put a permission denial on the audit trail."""
        self.audit.append(
            AuditEvent.PERMISSION_DENIED, actor=principal.username, role=principal.role.value,
            outcome=Outcome.DENIED, detail={"entry": entry_point, "permission": permission.value},
            flagged=principal.break_glass,
        )  # fmt: skip
