"""A box on a real swtpm with the update agent and a vendor repository (tests/api's fixtures)."""

from tests.api.conftest import prepared, sim  # noqa: F401  (fixtures, found by name)
