"""The permission matrix: every entry point x every role, through the real CLI, on a real swtpm.

A denied call exits 3, says who may not do what, and leaves a PERMISSION_DENIED record on the
audit trail; an allowed call is never refused for permission (it may still fail for its own
reasons, which is not what this test looks at).
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.audit.records import AuditEvent
from appliance.cli import PUBLIC, build_parser, main
from appliance.config import Config
from appliance.identity.roles import ENTRY_POINTS, Role, may
from appliance.runtime import open_runtime
from appliance.trust import aead, core
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm
from tests.conftest import accounts_for_every_role


def _walk(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, f"{prefix} {name}".strip())
            return
    yield prefix


def test_every_cli_command_is_in_the_permission_table_or_public() -> None:
    commands = set(_walk(build_parser()))
    table = {e.removeprefix("cli:") for e in ENTRY_POINTS if e.startswith("cli:")}
    unchecked = commands - table - set(PUBLIC)
    assert not unchecked, f"commands with no permission check: {unchecked}"
    assert not (table & set(PUBLIC))


@pytest.fixture
def box(config: Config, tmp_path: Path) -> dict[Role, str]:
    """An enrolled box with one account per role; returns each role's bearer token."""
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
        key = core.key_store(config).unseal(tpm, KeyName.MODEL_STORE)
    plain = tmp_path / "model.bin"
    plain.write_bytes(os.urandom(1000))
    aead.encrypt_file(key, plain, tmp_path / "model.enc", model="m", version="1")
    (tmp_path / "pw").write_text("a long enough passphrase\n")
    with open_runtime(config) as rt:
        return accounts_for_every_role(rt.identity)


def _argv(entry: str, role: Role, tmp: Path) -> list[str]:
    tag = role.value
    measurement = hashlib.sha256(tag.encode()).hexdigest()
    samples = {
        "trust plan-pcr-change": ["--extend", f"16={measurement}"],
        "trust counter --advance-to": [],
        "model verify": [str(tmp / "model.enc"), "--name", "m", "--version", "1"],
        "model encrypt": [str(tmp / "model.bin"), str(tmp / f"{tag}.enc"), "--name", "m",
                          "--version", "1"],
        "audit export": ["-o", str(tmp / f"{tag}.log")],
        "audit ack-break-glass": ["999"],
        "users add": [f"new-{tag}", "--role", "clinician", "--password-file", str(tmp / "pw")],
        "users disable": ["nobody"],
        "users enable": ["nobody"],
        "passwd": ["--current-file", str(tmp / "pw"), "--new-file", str(tmp / "pw")],
        "users password": ["nobody", "--password-file", str(tmp / "pw")],
        "users unlock": ["nobody"],
        "users token": ["user-service"],
        "users revoke": ["000000000000"],
        "update install": [str(tmp / "missing.aplbundle")],
        "update rollback": ["no-such-model"],
        "update import-root": [str(tmp / "missing-root.json")],
    }  # fmt: skip
    if entry == "trust counter --advance-to":
        return ["trust", "counter", "--advance-to", "1"]
    return [*entry.split(), *samples.get(entry, [])]


@pytest.mark.parametrize(
    "entry", sorted(e.removeprefix("cli:") for e in ENTRY_POINTS if e.startswith("cli:"))
)
def test_permission_matrix(
    entry: str,
    box: dict[Role, str],
    config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    permission = ENTRY_POINTS[f"cli:{entry}"]
    base = ["--state-dir", str(config.state_dir), "--tcti", config.device_tcti()]
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("APPLIANCE_CONFIG", "/nonexistent")
    for role, token in box.items():
        monkeypatch.setenv("APPLIANCE_TOKEN", token)
        code = main([*base, *_argv(entry, role, tmp_path)])
        err = capsys.readouterr().err
        denied = code == 3 and "may not run" in err
        assert denied != may(role, permission), f"{entry} as {role}: exit {code}, {err}"
    monkeypatch.delenv("APPLIANCE_TOKEN")
    assert main([*base, *_argv(entry, Role.ADMIN, tmp_path)]) == 3
    assert "needs a logged-in user" in capsys.readouterr().err
    with open_runtime(config) as rt:
        denials = [r for r in rt.audit.records() if r.event is AuditEvent.PERMISSION_DENIED]
    expected = sum(not may(role, permission) for role in Role)
    assert len(denials) == expected
    assert all(r.detail["entry"] == f"cli:{entry}" for r in denials)
