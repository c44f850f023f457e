"""One exception hierarchy for the whole appliance.

Every error carries a message that says what went wrong *and what to do about it*; the CLI prints
it as is and exits non-zero. Third-party exceptions (tpm2-pytss, cryptography, OSError) are wrapped
once, where they enter, into one of these.
"""

from __future__ import annotations


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose.

    ``hint`` is the action the user should take; it is appended to the message.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}" if hint else message)


class ConfigError(ApplianceError):
    """The configuration is invalid or incomplete."""

    exit_code = 2


class StorageError(ApplianceError):
    """A file the appliance must keep could not be written or read."""


class UnrecordedError(StorageError):
    """An action that takes access away took effect, but the audit trail could not record it."""


class AlreadyRunningError(ApplianceError):
    """Another ``appliance run`` already serves the same state folder."""


class CommandError(ApplianceError):
    """An external command failed or is missing."""


class TrustError(ApplianceError):
    """Base of the trust core's errors (TPM, sealed keys, recovery, model encryption)."""


class TpmUnavailableError(TrustError):
    """The TPM cannot be reached through the configured TCTI."""


class TpmError(TrustError):
    """The TPM refused a command for a reason not covered by a narrower error."""


class TpmLockoutError(TrustError):
    """The TPM is in dictionary-attack lockout."""


class NotEnrolledError(TrustError):
    """The sealed keys do not exist yet."""


class AlreadyEnrolledError(TrustError):
    """Enrollment was asked for on a box that is already enrolled."""


class PcrMismatchError(TrustError):
    """The PCRs no longer hold the values the keys were sealed to."""

    def __init__(self, message: str, hint: str | None, differing: tuple[int, ...]) -> None:
        super().__init__(message, hint)
        self.differing = differing


class RecoveryCodeError(TrustError):
    """The recovery code is malformed or wrong."""


class CounterError(TrustError):
    """The anti-rollback counter cannot be read or moved as asked."""


class ModelIntegrityError(TrustError):
    """An encrypted model file was modified, truncated, reordered or belongs to another model."""


class IdentityError(ApplianceError):
    """Base of the identity errors: authentication, sessions, accounts, permissions."""


class AuthenticationError(IdentityError):
    """Unknown user or wrong password (deliberately not saying which)."""

    exit_code = 3


class AccountLockedError(IdentityError):
    """Too many failed logins: the account is locked for a while."""

    exit_code = 3


class SessionExpiredError(IdentityError):
    """The session token expired, was revoked, or was logged off for idleness."""

    exit_code = 3


class PermissionDeniedError(IdentityError):
    """The authenticated principal's role does not grant the permission asked for."""

    exit_code = 3


class AccountError(IdentityError):
    """An account cannot be created or changed as asked (exists, missing, weak password...)."""
