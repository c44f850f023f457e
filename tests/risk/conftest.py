"""The served box of tests/api (real swtpm, update agent, uvicorn over TLS), for the risk routes."""

from tests.api.conftest import prepared, served, sim  # noqa: F401  (fixtures, found by name)
