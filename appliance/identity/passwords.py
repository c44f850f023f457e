"""Password hashing (argon2id, RFC 9106 parameters via argon2-cffi) and the password policy."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.errors import AccountError

MIN_LENGTH = 12
_HASHER = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4: stateless and thread-safe


def check_policy(username: str, password: str) -> None:
    """Raise AccountError with what to change if ``password`` is too weak."""
    if len(password) < MIN_LENGTH:
        raise AccountError(
            f"the password has {len(password)} characters; at least {MIN_LENGTH} are needed.",
            "Use a passphrase of several words.",
        )
    if username.lower() in password.lower():
        raise AccountError("the password contains the user name.", "Choose another password.")
    if len(set(password)) < 5:  # noqa: PLR2004
        raise AccountError("the password repeats too few characters.", "Choose another one.")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches the stored hash; False for accounts without a password."""
    if not stored:
        # Spend the same time as a real check so that a missing account is not told apart.
        _HASHER.verify(_dummy_hash(), "not the password")
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)


@functools.cache
def _dummy_hash() -> str:
    return _HASHER.hash("not the password")
