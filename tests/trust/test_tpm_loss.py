"""A TPM that goes away while a connection is open: a real swtpm, really stopped mid-command.

What the technician is told decides what they do: a TPM that stopped answering is to be brought
back, while "the TPM was cleared or replaced" sends them to re-seal every key with the recovery
code. The first must never read as the second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from tpm2_pytss import ESAPI

from appliance.config import Config
from appliance.errors import TpmUnavailableError
from appliance.trust import core
from appliance.trust.keys import KeyName
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import Tpm, open_tpm


class StopsBefore:
    """A real ESAPI connection to ``swtpm``; the swtpm is stopped (orderly, on a connection of
    its own) right before the command ``name`` is sent, so that this command is the first to
    find the TPM gone."""

    def __init__(self, esapi: ESAPI, swtpm: Swtpm, name: str) -> None:
        self._esapi = esapi
        self._swtpm = swtpm
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        command = getattr(self._esapi, attr)
        if attr != self._name:
            return command

        def stop_then(*args: Any, **kwargs: Any) -> Any:
            self._swtpm.stop()
            return command(*args, **kwargs)

        return stop_then


@pytest.fixture
def enrolled(config: Config) -> Config:
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    return config


@contextlib.contextmanager
def connection(swtpm: Swtpm, stop_before: str) -> Iterator[Tpm]:
    """A connection to ``swtpm`` that finds it gone at the command ``stop_before``."""
    esapi = ESAPI(swtpm.tcti)
    try:
        yield Tpm(StopsBefore(esapi, swtpm, stop_before))  # type: ignore[arg-type]
    finally:
        esapi.close()


def test_tpm_lost_while_the_sealed_key_loads_is_not_called_a_cleared_tpm(
    enrolled: Config, swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PCRs are read and the storage primary made; the TPM goes away before TPM2_Load."""
    monkeypatch.setenv("TSS2_LOG", "all+NONE")
    store = core.key_store(enrolled)
    with connection(swtpm, "load") as tpm, pytest.raises(TpmUnavailableError) as raised:
        store.unseal(tpm, KeyName.MODEL_STORE)
    said = str(raised.value)
    assert said.startswith("cannot reach the TPM: it stopped answering when asked to load")
    assert "cleared or replaced" not in said
    assert "appliance trust recover" not in said
    assert "do not re-seal them" in said
    swtpm.start()  # the same TPM back: the sealed key was never at fault
    with open_tpm(swtpm.tcti) as back:
        assert len(store.unseal(back, KeyName.MODEL_STORE)) == 32


def test_tpm_lost_between_two_commands_of_a_connection_is_unreachable_not_a_refusal(
    swtpm: Swtpm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSS2_LOG", "all+NONE")
    with (
        connection(swtpm, "get_random") as tpm,
        pytest.raises(TpmUnavailableError, match="cannot reach the TPM: it stopped answering"),
    ):
        tpm.get_random(8)
