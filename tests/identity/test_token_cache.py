"""The authenticated-token cache (ADR 0009) as an attack: whatever ends a token or an account,
from this process or another one, is refused on the very next request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.errors import SessionExpiredError
from appliance.identity.roles import Principal, Role
from appliance.identity.service import IdentityService
from appliance.identity.store import IdentityStore

PASSWORD = "a long enough passphrase"

# Another process (the CLI, the console) ending a token behind the API's back.
REVOKE = """
import sys
from pathlib import Path
from appliance.identity.store import IdentityStore
store = IdentityStore(Path(sys.argv[1]))
with store.transaction() as db:
    db.execute("UPDATE tokens SET revoked = 1 WHERE id = ?", (sys.argv[2],))
"""


def _warm(identity: IdentityService, token: str) -> None:
    """Authenticate until the answer comes from the cache (no SQLite read of the token)."""
    identity.authenticate(token)
    reads = 0
    real = identity.store.token

    def counted(token_id: str) -> object:
        nonlocal reads
        reads += 1
        return real(token_id)

    identity.store.token = counted  # type: ignore[method-assign]
    try:
        identity.authenticate(token)
    finally:
        del identity.store.token
    assert reads == 0, "the second call did not come from the cache"


@pytest.fixture
def service_token(identity: IdentityService, admin: Principal) -> str:
    identity.add_account(admin, "pacs", Role.SERVICE, None)
    return identity.issue_service_token(admin, "pacs").token


def test_token_revoked_by_another_process_is_refused_on_the_next_request(
    identity: IdentityService, service_token: str
) -> None:
    _warm(identity, service_token)
    token_id = service_token.split("_")[1]
    subprocess.run([sys.executable, "-c", REVOKE, str(identity.store.path), token_id], check=True)
    with pytest.raises(SessionExpiredError, match="ended or revoked"):
        identity.authenticate(service_token)


def test_token_revoked_through_another_connection_is_refused_on_the_next_request(
    identity: IdentityService, admin: Principal, service_token: str
) -> None:
    _warm(identity, service_token)
    other = IdentityService(IdentityStore(identity.store.path), identity.audit, identity.policy)
    other.revoke(admin, service_token.split("_")[1])
    with pytest.raises(SessionExpiredError, match="ended or revoked"):
        identity.authenticate(service_token)


def test_revoke_logout_and_disable_in_this_process_take_effect_at_once(
    identity: IdentityService, admin: Principal, service_token: str
) -> None:
    _warm(identity, service_token)
    identity.revoke(admin, service_token.split("_")[1])
    with pytest.raises(SessionExpiredError):
        identity.authenticate(service_token)
    identity.add_account(admin, "bob", Role.CLINICIAN, PASSWORD)
    principal, issued = identity.login("bob", PASSWORD)
    _warm(identity, issued.token)
    identity.logout(principal)
    with pytest.raises(SessionExpiredError):
        identity.authenticate(issued.token)
    _, again = identity.login("bob", PASSWORD)
    _warm(identity, again.token)
    identity.disable(admin, "bob")
    with pytest.raises(SessionExpiredError):
        identity.authenticate(again.token)


def test_a_cached_token_with_a_wrong_secret_is_refused(
    identity: IdentityService, service_token: str
) -> None:
    _warm(identity, service_token)
    altered = service_token[:-1] + ("A" if service_token[-1] != "A" else "B")
    with pytest.raises(SessionExpiredError, match="not valid"):
        identity.authenticate(altered)
