"""The Textual console on the box's screen or serial line: the first-boot wizard, login, idle
logoff, the health dashboard, update import with a preview, the audit view, the health report.

``create_app(from_runtime(rt)).run()`` is all ``appliance console`` does.
"""

from appliance.console.app import ConsoleApp, create_app
from appliance.console.backends import ConsoleBackends, from_runtime
from appliance.console.health import HealthReport, Level, Problem

__all__ = [
    "ConsoleApp",
    "ConsoleBackends",
    "HealthReport",
    "Level",
    "Problem",
    "create_app",
    "from_runtime",
]
