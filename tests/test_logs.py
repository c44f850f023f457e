"""Logs go to journald when it is there, to stderr otherwise."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance import logs


def test_stderr_without_journald(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", tmp_path / "missing")
    assert logs.setup_logging("INFO") == "stderr"
    assert isinstance(logging.getLogger().handlers[0], logging.StreamHandler)


def test_journald_when_its_socket_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from systemd.journal import JournalHandler

    sock = tmp_path / "socket"
    sock.touch()
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", sock)
    assert logs.setup_logging("INFO") == "journald"
    assert isinstance(logging.getLogger().handlers[0], JournalHandler)
    assert logs.setup_logging("INFO", stderr=True) == "stderr"
