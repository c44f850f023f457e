"""The console's screens check the same permission table as the CLI and the API."""

from __future__ import annotations

import pytest

from appliance.console.screens.audit import may_read
from appliance.console.screens.update import may_install
from appliance.identity.roles import ENTRY_POINTS, Principal, Role, may


@pytest.mark.parametrize("role", list(Role))
def test_console_screens_follow_the_permission_table(role: Role) -> None:
    who = Principal("someone", role, "s")
    assert may_install(who) == may(role, ENTRY_POINTS["console:update"])
    assert may_read(who) == may(role, ENTRY_POINTS["console:audit"])
