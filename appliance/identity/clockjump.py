"""What identity makes of a wall clock that was set back (ADR 0004: the box has no trusted clock).

Tokens and lockouts keep their times in wall time. A clock set back a year would keep a session
alive, never idle, for a year, and an account locked out for a year. These verdicts bound them:
a time stored more than :data:`SLACK_S` ahead of the clock (more than an NTP step) can only come
from a clock that went back since, and is judged here; the service does what they say. A clock
set forward ends sessions and lockouts early (users log in again), which needs nothing here.
"""

from __future__ import annotations

import logging

from appliance.errors import SessionExpiredError
from appliance.identity.store import TokenRow
from appliance.setup.clock import SET_CLOCK_HINT

log = logging.getLogger(__name__)

SLACK_S = 300.0
_DAY = 86400.0


def token_ahead(row: TokenRow, now: float) -> SessionExpiredError | None:
    """The error to refuse ``row`` with when its times are ahead of ``now``; None when not.

    A session used "later" than now must end (the caller ends it): how long it sat idle cannot
    be told, and it would outlive its policy by the jump. A service token issued "later" than
    now is refused, not ended: it works again once the clock is right, so an integration needs
    no new token after a clock is put right; one issued earlier lives at most its age longer.
    """
    if row.kind == "session" and row.last_used - now > SLACK_S:
        log.warning("identity: a session last used %.1f days after the time the clock shows is "
                    "ended: the clock was set back. %s", (row.last_used - now) / _DAY,
                    SET_CLOCK_HINT)  # fmt: skip
        return SessionExpiredError(
            "the box's clock was set back since this session was last used; it is ended.",
            "Log in again. " + SET_CLOCK_HINT,
        )
    if row.kind != "session" and row.issued - now > SLACK_S:
        log.warning("identity: token %s, issued %.1f days after the time the clock shows, is "
                    "refused until then: the clock was set back. %s", row.id,
                    (row.issued - now) / _DAY, SET_CLOCK_HINT)  # fmt: skip
        return SessionExpiredError(
            "this token was issued after the time the box's clock shows: the clock was set back.",
            SET_CLOCK_HINT + " Or issue a new token (`appliance users token`).",
        )
    return None


def bounded_lockout(locked_until: float, now: float, lockout_s: float) -> float | None:
    """The end of a lockout set before the clock went back, bounded to ``lockout_s`` from
    ``now`` (as when it was set), or None when it ends within that already."""
    return None if locked_until - now <= lockout_s + SLACK_S else now + lockout_s


def lockout_end(locked_until: float, now: float, lockout_s: float) -> float | None:
    """:func:`bounded_lockout`, saying so in the journal when it bounds one (at a login)."""
    if bounded_lockout(locked_until, now, lockout_s) is None:
        return None
    log.warning("identity: a lockout ended %.1f days after the time the clock shows: the clock "
                "was set back; it now ends in %d minutes. %s", (locked_until - now) / _DAY,
                lockout_s // 60, SET_CLOCK_HINT)  # fmt: skip
    return now + lockout_s
