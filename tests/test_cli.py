"""The `appliance` command as a user runs it: a real process, a real (embedded) swtpm."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.cli import build_parser
from appliance.config import Config
from appliance.setup.site import SiteIdentity, save_site
from appliance.trust.swtpm import Swtpm
from provisioning.__main__ import build_parser as build_vendor_parser
from tests.conftest import CTRL_C_REACHES, run_until_ready, wait_for_reader

APPLIANCE = [sys.executable, "-m", "appliance.cli"]
REPO = Path(__file__).resolve().parents[1]


def appliance(
    state: Path, *args: str, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_CONFIG"] = "/nonexistent"
    env["HOME"] = str(state / "home")  # the saved login session lives here
    proc = subprocess.run(
        [*APPLIANCE, "--state-dir", str(state), *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def state() -> Path:
    # The embedded swtpm's socket lives in the state dir: keep the path short.
    top = Path(f"/tmp/st{os.getpid()}-{time.monotonic_ns() % 10**6}")
    yield top
    Swtpm(top / "swtpm").kill()
    shutil.rmtree(top, ignore_errors=True)


def test_help_lists_the_commands() -> None:
    out = subprocess.run([*APPLIANCE, "--help"], capture_output=True, text=True, check=True).stdout
    for word in ("run", "trust", "model", "examples:", "--state-dir", "--tcti"):
        assert word in out
    out = subprocess.run(
        [*APPLIANCE, "trust", "--help"], capture_output=True, text=True, check=True
    )
    for word in ("status", "enroll", "recover", "plan-pcr-change", "counter"):
        assert word in out.stdout


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every command and command group below it."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _commands(sub)
    return found


@pytest.mark.parametrize("build", [build_parser, build_vendor_parser], ids=["appliance", "vendor"])
def test_every_command_and_argument_has_help(
    build: Callable[[], argparse.ArgumentParser],
) -> None:
    missing = []
    for parser in _commands(build()):
        if not parser.description:
            missing.append(f"{parser.prog}: no description under its usage line")
        for action in parser._actions:
            if action.help is None and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{parser.prog}: {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "without help text:\n" + "\n".join(missing)


def test_model_verify_help_describes_its_own_argument() -> None:
    out = subprocess.run(
        [*APPLIANCE, "model", "verify", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "plaintext" not in out and "the encrypted model file" in out


def test_unreachable_tpm_gives_a_clear_error(tmp_path: Path) -> None:
    proc = appliance(
        tmp_path, "--tcti", "swtpm:path=/nonexistent.sock", "trust", "status", check=False
    )
    assert proc.returncode == 1
    assert "cannot reach the TPM" in proc.stderr
    assert "what to do:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_hardware_looks_at_the_tpm_named_with_tcti(state: Path) -> None:
    """`--tcti` names the TPM for `appliance hardware` as for every other command."""
    state.mkdir()
    node = state / "tpm0"  # stands in for the device node: detection looks for the node
    node.touch()
    proc = appliance(state, "--tcti", f"device:{node}", "hardware", check=False)
    assert "Traceback" not in proc.stderr
    assert re.search(rf"^TPM +{re.escape(str(node))}$", proc.stdout, re.MULTILINE), proc.stdout
    proc = appliance(state, "--tcti", "swtpm:path=/nonexistent.sock", "hardware", check=False)
    assert re.search(r"^TPM +swtpm:path=/nonexistent.sock ", proc.stdout, re.MULTILINE)
    assert "embedded swtpm" not in proc.stdout, "it reported a TPM other than the one named"


def test_bad_config_is_named(tmp_path: Path) -> None:
    proc = appliance(tmp_path, "--pcrs", "7,99", "trust", "status", check=False)
    assert proc.returncode == 2
    assert "PCR index 99 is out of range" in proc.stderr


def login_admin(state: Path) -> None:
    """Provision the first admin and log in as her, as a technician would."""
    pw = state / "pw"
    pw.write_text("correct horse battery staple\n")
    appliance(state, "users", "bootstrap-admin", "alice", "--password-file", str(pw))
    out = appliance(state, "login", "--user", "alice", "--password-file", str(pw)).stdout
    assert "logged in as alice (admin)" in out


def test_enroll_status_recover_and_counter_through_the_cli(state: Path) -> None:
    proc = appliance(state, "trust", "status", check=False)
    assert proc.returncode == 1 and "appliance trust enroll" in proc.stdout
    enrolled = appliance(state, "trust", "enroll").stdout
    code = enrolled.split("ONCE")[1].split()[-1]
    denied = appliance(state, "trust", "counter", check=False)
    assert denied.returncode == 3 and "appliance login" in denied.stderr
    login_admin(state)
    assert "unseals" in appliance(state, "trust", "status").stdout
    assert appliance(state, "trust", "counter", "--advance-to", "2").stdout.strip() == "2"
    assert appliance(state, "trust", "counter").stdout.strip() == "2"
    assert (state / "swtpm" / "tpm2-00.permall").exists()
    assert not Swtpm(state / "swtpm").accepts(), "a CLI command left its swtpm running"
    wrong = appliance(state, "trust", "recover", stdin="0000\n", check=False)
    assert wrong.returncode == 1 and "not a recovery code" in wrong.stderr
    assert "re-sealed" in appliance(state, "trust", "recover", stdin=code + "\n").stdout


def test_planned_pcr_change_through_the_cli(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    m = hashlib.sha256(b"firmware 2.0").hexdigest()
    out = appliance(state, "trust", "plan-pcr-change", "--extend", f"7={m}").stdout
    assert "keys also sealed to PCR 7" in out
    bad = appliance(state, "trust", "plan-pcr-change", "--extend", "7=zz", check=False)
    assert bad.returncode == 2 and "PCR=SHA256" in bad.stderr


def test_model_encrypt_and_verify_through_the_cli(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    src, dst = state / "m.bin", state / "m.enc"
    src.write_bytes(os.urandom(3_000_000))
    appliance(state, "model", "encrypt", str(src), str(dst), "--name", "demo", "--version", "1")
    assert (
        "intact"
        in appliance(state, "model", "verify", str(dst), "--name", "demo", "--version", "1").stdout
    )
    bad = appliance(
        state, "model", "verify", str(dst), "--name", "demo", "--version", "2", check=False
    )
    assert bad.returncode == 1 and "Reinstall" in bad.stderr


def test_run_starts_swtpm_reports_ready_and_stops_orderly(state: Path) -> None:
    proc, lines = run_until_ready(state)
    text = "".join(lines)
    assert "embedded swtpm (pid" in text
    assert "trust core     ready" in text
    assert "Recovery code, shown ONCE" in text
    assert re.search(r"dicom +AE APPLIANCE on 0\.0\.0\.0:\d+ \(C-ECHO; C-STORE", text), text
    assert ("housekeeping   every 60 min: results kept 90 days, finished studies' images 30 "
            "days, audit log 2190 days") in text  # fmt: skip
    # While it runs, a CLI command shares its swtpm.
    assert "unseals" in appliance(state, "trust", "status").stdout
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in rest
    assert not Swtpm(state / "swtpm").accepts()
    proc, lines = run_until_ready(state)  # second start: same keys, no new recovery code
    assert "Recovery code" not in "".join(lines)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_run_checks_the_hardware_against_the_tpm_named_with_tcti(state: Path, swtpm: Swtpm) -> None:
    proc, lines = run_until_ready(state, "--tcti", swtpm.tcti)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    [line] = [x for x in lines if x.startswith("appliance: hardware ")]
    assert f"; TPM {swtpm.tcti} (configured; not an existing device node); " in line, line


def test_audit_verify_and_export_through_the_cli(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    appliance(state, "users", "list")
    out = appliance(state, "audit", "verify").stdout
    assert "audit log intact" in out
    export = appliance(state, "audit", "export", "--format", "syslog").stdout
    assert export.startswith("<") and "<AuditMessage" in export
    assert " appliance appliance " in export.splitlines()[0]  # HOSTNAME APP-NAME, before the wizard
    save_site(Config(state_dir=state), SiteIdentity("Clinic A", "clinic-a-box1"))
    export = appliance(state, "audit", "export", "--format", "syslog").stdout
    assert all(
        " clinic-a-box1 appliance " in line for line in export.splitlines()
    ), "the audit export does not name the box as the wizard set it up"
    # An attacker edits one byte of a record: verify says which record and exits 1.
    log_file = sorted((state / "audit").glob("audit-*.log"))[0]
    data = bytearray(log_file.read_bytes())
    data[data.index(b'"alice"') + 1] ^= 0x01
    log_file.write_bytes(bytes(data))
    tampered = appliance(state, "audit", "verify", check=False)
    assert tampered.returncode == 1
    assert "TAMPERED" in tampered.stdout and "was modified" in tampered.stdout


def test_permission_denied_through_the_cli_is_audited(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    pw = state / "pw"
    appliance(state, "users", "add", "carol", "--role", "clinician", "--password-file", str(pw))
    appliance(state, "login", "--user", "carol", "--password-file", str(pw))
    denied = appliance(state, "audit", "verify", check=False)
    assert denied.returncode == 3
    assert "carol (clinician) may not run `appliance audit verify`" in denied.stderr
    appliance(state, "login", "--user", "alice", "--password-file", str(pw))
    shown = appliance(state, "audit", "show").stdout
    assert "permission-denied" in shown and "carol" in shown


@pytest.mark.parametrize("name", ["missing", "folder", "binary"])
def test_an_unreadable_password_file_is_named_not_a_traceback(state: Path, name: str) -> None:
    state.mkdir()
    files = {"missing": state / "nope", "folder": state, "binary": state / "pw.bin"}
    files["binary"].write_bytes(b"\xff\xfe\x00\x81")
    proc = appliance(
        state, "users", "bootstrap-admin", "alice", "--password-file", str(files[name]),
        check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2
    assert f"cannot read the password from {files[name]}" in proc.stderr
    assert "what to do:" in proc.stderr


def test_no_terminal_and_no_input_is_refused_before_any_login_attempt(state: Path) -> None:
    state.mkdir()
    # Standard input empty (a script without the password piped in).
    proc = appliance(state, "users", "bootstrap-admin", "alice", stdin="", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "no password to read: standard input is not a terminal and is empty" in proc.stderr
    assert "--password-file" in proc.stderr
    # Standard input closed altogether (a service without StandardInput=).
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_CONFIG="/nonexistent", HOME=str(state / "home"))
    closed = subprocess.run(
        [*APPLIANCE, "--state-dir", str(state), "trust", "recover"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=120,
        preexec_fn=lambda: os.close(0), check=False,
    )  # fmt: skip
    assert closed.returncode == 2 and "Traceback" not in closed.stderr
    assert "no recovery code to read" in closed.stderr and "--code-file" in closed.stderr


@pytest.mark.parametrize("command", [["trust", "status"], ["login", "--user", "alice"], ["run"]])
def test_a_state_dir_that_is_not_a_folder_is_named(state: Path, command: list[str]) -> None:
    state.mkdir()
    not_a_folder = state / "a-file"
    not_a_folder.write_text("")
    for bad in (not_a_folder, not_a_folder / "below"):
        proc = appliance(state, "--state-dir", str(bad), *command, check=False)
        assert "Traceback" not in proc.stderr
        assert proc.returncode == 1
        assert f"cannot use {bad} as the state folder" in proc.stderr
        assert "--state-dir" in proc.stderr.split("what to do:")[1]


def test_an_empty_state_dir_is_refused_not_the_current_folder(state: Path) -> None:
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_CONFIG="/nonexistent", HOME=str(state / "home"))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout, from cwd
    proc = subprocess.run(
        [*APPLIANCE, "--state-dir", "", "trust", "status"],
        cwd=state, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "state_dir is empty" in proc.stderr and "what to do:" in proc.stderr
    assert list(state.iterdir()) == [], "the box's state went into the current folder"


def test_ctrl_c_says_the_command_did_not_finish(state: Path) -> None:
    state.mkdir()
    fifo = state / "pw"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_CONFIG="/nonexistent", HOME=str(state / "home"))
    proc = subprocess.Popen(
        [*CTRL_C_REACHES, *APPLIANCE, "--state-dir", str(state), "login", "--user", "alice",
         "--password-file", str(fifo)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip
    writer = wait_for_reader(fifo)  # the command waits for its password: the technician quits
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "interrupted (Ctrl-C) before the command finished" in err
    assert "what to do:" in err
    assert not Swtpm(state / "swtpm").accepts(), "the interrupted command left its swtpm running"


def console_script(name: str) -> str:
    """The code of the script an installer makes for ``[project.scripts]`` entry ``name``."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, func = scripts[name].split(":")
    return f"import sys\nfrom {module} import {func}\nsys.exit({func}())"


def test_ctrl_c_while_the_cli_imports_ends_with_one_line_not_a_traceback() -> None:
    """Ctrl-C while the command was still importing (before `appliance.cli.main` could catch
    it) ended it by SIGINT with a KeyboardInterrupt traceback. The console script, as pyproject
    declares it, runs here; `-X importtime` reports each import as it completes, so the signal
    comes once the appliance's own modules are being imported, not at a guessed moment."""
    for _ in range(5):  # again if the command finished before the signal (a very slow test host)
        proc = subprocess.Popen(
            [*CTRL_C_REACHES, sys.executable, "-X", "importtime", "-c", console_script("appliance"),
             "--help"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None
        before = []
        for line in proc.stderr:
            before.append(line)
            # An import of the CLI's own modules, after those of the entry point's module.
            if re.search(r"\| +appliance\.(?!__main__)\S+$", line):
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
        err = "".join(before) + err
        if out:  # the help was printed: the import was over before the signal
            continue
        said = [x for x in err.splitlines() if x and not x.startswith("import time:")]
        assert proc.returncode == 130, (proc.returncode, err[-600:])
        assert "Traceback" not in err and said == ["appliance: interrupted (Ctrl-C)."], said
        return
    pytest.fail("the command always finished its import before the signal came")


def test_the_console_without_a_terminal_is_refused_not_drawn_into_a_pipe(state: Path) -> None:
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_CONFIG="/nonexistent", HOME=str(state / "home"))
    try:
        proc = subprocess.run(
            [*APPLIANCE, "--state-dir", str(state), "console"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=30,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the console ran without a terminal: {str(exc.stderr)[-300:]}")
    assert proc.returncode == 2
    assert "the console needs a terminal" in proc.stderr and "what to do:" in proc.stderr


def test_a_second_run_on_the_same_state_is_refused(state: Path) -> None:
    proc, _ = run_until_ready(state)
    try:
        second = appliance(state, "run", check=False)
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert "another `appliance run` already uses" in second.stderr
        assert f"(pid {proc.pid})" in second.stderr
        assert "api_port" not in second.stderr  # not the port: the box itself runs already
        assert "ready" not in second.stdout
        assert proc.poll() is None, "the second run stopped the first"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_model_encrypt_of_a_missing_file_names_the_input(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    src, dst = state / "typo.bin", state / "m.enc"
    proc = appliance(
        state, "model", "encrypt", str(src), str(dst), "--name", "demo", "--version", "1",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"cannot read the model {src}: No such file or directory" in proc.stderr
    hint = proc.stderr.split("what to do:")[1]
    assert "plaintext model" in hint and "disk is not full" not in hint
    assert not dst.exists()


def test_update_scan_of_a_folder_that_is_not_there_fails(state: Path) -> None:
    state.mkdir()
    missing = state / "usb" / "sdb1"
    proc = appliance(state, "update", "scan", str(missing), check=False)
    assert proc.returncode == 2, "a stick that did not mount passed as 'nothing to do'"
    assert f"{missing} is not a folder" in proc.stderr and "what to do:" in proc.stderr


def test_revoking_an_unknown_token_says_which_id_to_give(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    proc = appliance(state, "users", "revoke", "apl_0123456789ab_secret", check=False)
    assert proc.returncode == 1
    assert "there is no token 'apl_0123456789ab_secret'" in proc.stderr
    assert "what to do:" in proc.stderr and "token id" in proc.stderr.split("what to do:")[1]


def test_audit_export_to_a_folder_says_to_name_a_file(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    usb = state / "usb"
    usb.mkdir()
    proc = appliance(state, "audit", "export", "-o", str(usb), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    hint = proc.stderr.split("what to do:")[1]
    assert "is a folder" in hint and "state folder" not in hint


def test_disabling_the_last_active_admin_is_refused(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)  # alice, the only admin
    proc = appliance(state, "users", "disable", "alice", check=False)
    assert proc.returncode == 1
    assert "'alice' is the last active admin" in proc.stderr
    assert "--role admin" in proc.stderr.split("what to do:")[1]
    listed = appliance(state, "users", "list").stdout
    assert re.search(r"alice +admin +active", listed)
    pw = state / "pw"
    appliance(state, "users", "add", "bea", "--role", "admin", "--password-file", str(pw))
    appliance(state, "users", "disable", "alice")  # with a second admin it is fine
    appliance(state, "login", "--user", "bea", "--password-file", str(pw))
    refused = appliance(state, "users", "disable", "bea", check=False)
    assert refused.returncode == 1 and "'bea' is the last active admin" in refused.stderr


def test_an_admin_enables_an_account_and_resets_a_password(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    pw = state / "pw"
    appliance(state, "users", "add", "bob", "--role", "clinician", "--password-file", str(pw))
    appliance(state, "users", "disable", "bob")
    assert re.search(r"bob +clinician +disabled", appliance(state, "users", "list").stdout)
    enabled = appliance(state, "users", "enable", "bob")
    assert "account 'bob' enabled" in enabled.stdout
    assert re.search(r"bob +clinician +active", appliance(state, "users", "list").stdout)
    again = appliance(state, "users", "enable", "bob", check=False)
    assert again.returncode == 1 and "'bob' is not disabled" in again.stderr
    new = state / "new-pw"
    new.write_text("a brand new passphrase, quietly\n")
    reset = appliance(state, "users", "password", "bob", "--password-file", str(new))
    assert "password of 'bob' reset; its sessions are ended" in reset.stdout
    refused = appliance(state, "login", "--user", "bob", "--password-file", str(pw), check=False)
    assert refused.returncode != 0
    appliance(state, "login", "--user", "bob", "--password-file", str(new))


def test_a_user_changes_their_own_password(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    pw, new = state / "pw", state / "new-pw"
    new.write_text("my own passphrase, not the admin's\n")
    appliance(state, "users", "add", "bob", "--role", "clinician", "--password-file", str(pw))
    appliance(state, "login", "--user", "bob", "--password-file", str(pw))
    wrong = appliance(state, "passwd", "--current-file", str(new), "--new-file", str(new),
                      check=False)  # fmt: skip
    assert wrong.returncode != 0 and "current password is wrong" in wrong.stderr
    changed = appliance(state, "passwd", "--current-file", str(pw), "--new-file", str(new))
    assert "password of 'bob' changed" in changed.stdout
    appliance(state, "login", "--user", "bob", "--password-file", str(new))


def test_adding_an_account_twice_says_what_to_do(state: Path) -> None:
    appliance(state, "trust", "enroll")
    login_admin(state)
    pw = "a different long passphrase\n"
    again = appliance(state, "users", "add", "alice", "--role", "admin", stdin=pw, check=False)
    assert again.returncode == 1 and "the account 'alice' exists already" in again.stderr
    assert "`appliance users list`" in again.stderr.split("what to do:")[1]


@pytest.mark.parametrize("host", ["999.1.1.1", "192.0.2.1"])  # not an address; not this box's
def test_dicom_serve_on_a_wrong_host_names_the_host_not_the_port(state: Path, host: str) -> None:
    state.mkdir()
    proc = appliance(state, "dicom", "serve", "--host", host, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"the DICOM receiver cannot listen on {host}" in proc.stderr
    hint = proc.stderr.split("what to do:")[1]
    assert "--host" in hint and "uses the port" not in hint


def test_a_reader_that_stops_early_gets_no_traceback(state: Path) -> None:
    """`appliance audit show | head -1`: the pipe closes before the command has written."""
    state.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(APPLIANCE_CONFIG="/nonexistent", HOME=str(state / "home"))
    proc = subprocess.Popen(
        [*APPLIANCE, "--state-dir", str(state), "trust", "status"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141  # as if SIGPIPE had ended it, like other commands in a pipe
