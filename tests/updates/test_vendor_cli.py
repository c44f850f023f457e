"""The vendor's command line end to end: keys, repository, root rotation, bundles a box accepts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.updates import TrustedState, verify_bundle
from provisioning.__main__ import main
from provisioning.vendor import ROLES
from tests.conftest import CTRL_C_REACHES, wait_for_reader

from .conftest import BOX, manifest_doc, model_bin, write_model


class Vendor:
    """Runs ``appliance-vendor`` in-process, keeps its key files and repository in ``top``."""

    def __init__(self, top: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.top, self.capsys = top, capsys
        self.keys, self.repo, self.usb = top / "keys", top / "repo", top / "usb"
        self.keys.mkdir()
        self.usb.mkdir()

    def run(self, *argv: str | Path, code: int = 0) -> tuple[str, str]:
        assert main([str(a) for a in argv]) == code
        out, err = self.capsys.readouterr()
        return out, err

    def key(self, role: str, name: str) -> Path:
        path = self.keys / f"{name}.pem"
        self.run("keys", "create", "--role", role, "--out", path)
        return path

    def init(self) -> None:
        roots = [self.key("root", f"root{i}") for i in range(3)]
        targets = [self.key("targets", f"targets{i}") for i in range(3)]
        self.key("snapshot", "snapshot")
        self.key("timestamp", "timestamp")
        self.run(
            "repo", "init", "--repo", self.repo,
            *[a for k in roots for a in ("--root-key", k)], "--root-threshold", "2",
            *[a for k in targets for a in ("--targets-key", f"{k}.pub")],
            "--targets-threshold", "2",
            "--snapshot-key", self.keys / "snapshot.pem.pub",
            "--timestamp-key", self.keys / "timestamp.pem.pub",
        )  # fmt: skip

    def build(
        self,
        model: Path,
        *extra: str | Path,
        targets: tuple[str, ...] = ("targets0", "targets1"),
        code: int = 0,
    ) -> tuple[str, str]:
        return self.run(
            "bundle", "build", model, "--repo", self.repo, "--out", self.usb,
            *[a for t in targets for a in ("--targets-key", self.keys / f"{t}.pem")],
            "--snapshot-key", self.keys / "snapshot.pem",
            "--timestamp-key", self.keys / "timestamp.pem",
            *extra, code=code,
        )  # fmt: skip

    def one_key_each(self) -> dict[str, Path]:
        """A new key for every role, by role."""
        return {role: self.key(role, f"{role}0") for role in ROLES}

    def init_with(self, repo: Path, keys: dict[str, Path], threshold: str = "1") -> str:
        """`repo init` of ``repo`` with ``keys`` by role, expected to be refused; its stderr."""
        _, err = self.run(
            "repo", "init", "--repo", repo, "--root-threshold", threshold,
            *[a for role, key in keys.items() for a in (f"--{role}-key", key)], code=1,
        )  # fmt: skip
        return err

    def box(self) -> TrustedState:
        return TrustedState.from_root((self.repo / "metadata" / "1.root.json").read_bytes())


@pytest.fixture
def vendor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Vendor:
    return Vendor(tmp_path, capsys)


def test_keys_create_writes_a_private_file_and_a_public_file(vendor: Vendor) -> None:
    out, _ = vendor.run("keys", "create", "--role", "targets", "--out", vendor.keys / "t.pem")
    private, public = vendor.keys / "t.pem", vendor.keys / "t.pem.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    doc = json.loads(public.read_text())
    assert doc["role"] == "targets" and doc["keytype"] == "ed25519"
    assert f"created targets key {doc['keyid']}" in out
    _, err = vendor.run("keys", "create", "--role", "targets", "--out", private, code=1)
    assert "t.pem exists" in err and "keys are never replaced" in err


def test_cli_builds_bundles_the_box_verifies(vendor: Vendor) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "chest", "chest-xray", "1.0.0")
    out, err = vendor.build(model, "--not-before", "2026-12-01T00:00:00Z")
    bundle = vendor.usb / "chest-xray-1.0.0.aplbundle"
    assert f"wrote {bundle}" in out
    assert "chest-xray 1.0.0 (imaging-anomaly)" in out
    assert "version 1, root v1, not before 2026-12-01T00:00:00Z" in out
    assert f"size        {bundle.stat().st_size} bytes" in out
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() in out
    assert "hashing model.bin (4096 bytes)" in err and "checking the bundle as a box would" in err
    verified = verify_bundle(bundle, vendor.box(), 0, BOX)
    assert verified.file("model.bin") == model_bin("1.0.0")
    # The repository remembers the number: the next bundle (gzip'ed this time) is version 2.
    newer = write_model(vendor.top / "models" / "chest2", "chest-xray", "1.1.0")
    out, _ = vendor.build(newer, "--gzip")
    assert "version 2, root v1" in out
    second = verify_bundle(vendor.usb / "chest-xray-1.1.0.aplbundle", verified.trusted, 1, BOX)
    assert second.file("model.bin") == model_bin("1.1.0")


def test_cli_root_rotation_revokes_a_targets_key(vendor: Vendor) -> None:
    vendor.init()
    new_key = vendor.key("targets", "targets3")
    out, _ = vendor.run(
        "root", "rotate", "--repo", vendor.repo,
        "--sign-with", vendor.keys / "root0.pem", "--sign-with", vendor.keys / "root1.pem",
        *[a for t in ("targets1", "targets2") for a in ("--targets-key", vendor.keys / f"{t}.pem")],
        "--targets-key", f"{new_key}.pub", "--targets-threshold", "2",
    )  # fmt: skip
    assert "2.root.json" in out
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    _, err = vendor.build(model, targets=("targets0", "targets1"), code=1)
    assert "targets0.pem (keyid " in err
    assert "is not a key of root v2, given as a targets key" in err
    vendor.build(model, targets=("targets1", "targets3"))
    verified = verify_bundle(vendor.usb / "chest-xray-1.0.0.aplbundle", vendor.box(), 0, BOX)
    assert verified.root_version == 2


def test_root_rotation_needs_the_old_threshold(vendor: Vendor) -> None:
    vendor.init()
    _, err = vendor.run(
        "root", "rotate", "--repo", vendor.repo, "--sign-with", vendor.keys / "root0.pem", code=1
    )
    assert "has 1 of 2 signatures the previous root needs" in err
    assert not (vendor.repo / "metadata" / "2.root.json").exists()


def test_bundle_build_refuses_keys_below_threshold(vendor: Vendor) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    _, err = vendor.build(model, targets=("targets0",), code=1)
    assert "needs 2 targets signatures from its targets keys; too few keys given" in err
    assert not list(vendor.usb.iterdir())


def wrong_role(vendor: Vendor, err: str, name: str, owner: str, evidence: str, asked: str) -> None:
    """``err`` refuses key ``name`` of role ``owner`` given as an ``asked`` key, with a hint."""
    path = vendor.keys / f"{name}.pem"
    assert f"{path} is a {owner} key ({evidence}), given as a {asked} key." in err, err
    assert f"keys create --role {asked}" in err.split("what to do:")[1]


def test_bundle_build_refuses_a_root_key_given_as_a_targets_key(vendor: Vendor) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    _, err = vendor.build(model, targets=("root0", "targets1"), code=1)
    wrong_role(vendor, err, "root0", "root", "root v1 lists it", "targets")
    assert not list(vendor.usb.iterdir())
    assert sorted(p.name for p in (vendor.repo / "metadata").iterdir()) == ["1.root.json"]


@pytest.mark.parametrize("option", ["--sign-with", "--root-key"])
def test_root_rotation_refuses_a_targets_key_given_as_a_root_key(
    vendor: Vendor, option: str
) -> None:
    """With two root keys the old threshold is met: the targets key would have gone in unseen,
    as a stray signature (--sign-with) or as a root key of the new root (--root-key)."""
    vendor.init()
    roots = [vendor.keys / "root0.pem", vendor.keys / "root1.pem"]
    _, err = vendor.run(
        "root", "rotate", "--repo", vendor.repo, "--sign-with", *roots,
        option, vendor.keys / "targets0.pem", code=1,
    )  # fmt: skip
    wrong_role(vendor, err, "targets0", "targets", "root v1 lists it", "root")
    assert not (vendor.repo / "metadata" / "2.root.json").exists()


def test_repo_init_refuses_a_key_its_pub_file_gives_another_role(vendor: Vendor) -> None:
    keys = vendor.one_key_each()
    keys["root"], keys["targets"] = keys["targets"], keys["root"]
    err = vendor.init_with(vendor.repo, keys)
    wrong_role(vendor, err, "root0", "root", "its .pub file says so", "targets")
    assert not vendor.repo.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "1.0"}, "'1.0' is not a semantic version"),
        ({"task": "astrology"}, "'astrology' is not a valid task"),
        ({"colour": "blue"}, "unknown field(s) in manifest: colour"),
        ({"compatibility": {"min_openvino": "2024.0", "devices": ["TPU"]}}, "'TPU' is not a valid"),
        ({"reference": {"files": ["../x"], "metric": "auc", "expected": 0.9, "tolerance": 0.1}},
         "reference file '../x' is not a plain relative path"),
    ],
)  # fmt: skip
def test_bundle_build_refuses_an_invalid_manifest(
    vendor: Vendor, change: dict[str, object], message: str
) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    doc = {**manifest_doc("chest-xray", "1.0.0"), **change}
    (model / "manifest.json").write_text(json.dumps(doc))
    _, err = vendor.build(model, code=1)
    assert message in err
    assert "Fix manifest.json in the model folder" in err


def test_bundle_build_refuses_a_missing_model_file(vendor: Vendor) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    (model / "model.bin").unlink()
    _, err = vendor.build(model, code=1)
    assert "model.bin is missing or not a regular file" in err


def test_python_m_provisioning_shows_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "provisioning", "bundle", "build", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert "--targets-key KEY" in proc.stdout and "--not-before" in proc.stdout


def test_ctrl_c_says_the_command_did_not_finish(tmp_path: Path) -> None:
    fifo = tmp_path / "health.json"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*CTRL_C_REACHES, sys.executable, "-m", "provisioning", "report", "verify", str(fifo),
         "--ak", "0" * 64],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    writer = wait_for_reader(fifo)  # the command reads the report and then waits
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130 and "Traceback" not in err
    assert "appliance-vendor: error: interrupted (Ctrl-C) before the command finished" in err
    assert "what to do:" in err


def test_a_repository_path_that_is_a_file_is_named(vendor: Vendor) -> None:
    not_a_folder = vendor.top / "repo.json"
    not_a_folder.write_text("{}")
    err = vendor.init_with(not_a_folder, vendor.one_key_each())
    assert f"cannot use {not_a_folder} as the vendor repository" in err
    assert "--repo" in err.split("what to do:")[1]


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty-folder"])
def test_bundle_build_from_a_folder_that_is_no_repository_leaves_nothing_behind(
    vendor: Vendor, exists: bool
) -> None:
    vendor.init()  # the keys; the build is pointed at another folder
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    vendor.repo = vendor.top / "not-the-repo"
    if exists:
        vendor.repo.mkdir()
    _, err = vendor.build(model, code=1)
    assert f"{vendor.repo} is not a vendor repository" in err and "repo init" in err
    assert vendor.repo.exists() == exists, "the refused build created the folder"
    assert not exists or not list(vendor.repo.iterdir()), "the refused build wrote into it"
    assert not list(vendor.usb.iterdir())


def test_a_refused_repo_init_leaves_no_folder_behind(vendor: Vendor) -> None:
    err = vendor.init_with(vendor.repo, vendor.one_key_each(), threshold="2")
    assert "the root role would need 2 signatures from 1 keys" in err
    assert not vendor.repo.exists()


def test_bundle_build_to_a_folder_that_is_not_there_keeps_the_bundle_number(
    vendor: Vendor,
) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "m", "chest-xray", "1.0.0")
    unmounted = vendor.top / "media" / "usb" / "chest.aplbundle"
    _, err = vendor.build(model, "--out", unmounted, code=1)
    assert f"{unmounted} is neither an existing folder nor a *.aplbundle file in one" in err
    assert sorted(p.name for p in (vendor.repo / "metadata").iterdir()) == ["1.root.json"]
    out, _ = vendor.build(model)
    assert "version 1, root v1" in out


@pytest.mark.parametrize("days", ["0", "-5"])
def test_metadata_that_expires_at_once_is_refused_and_the_last_bundle_stays(
    vendor: Vendor, days: str
) -> None:
    vendor.init()
    model = write_model(vendor.top / "models" / "chest", "chest-xray", "1.0.0")
    vendor.build(model)
    bundle = vendor.usb / "chest-xray-1.0.0.aplbundle"
    good = bundle.read_bytes()
    with pytest.raises(SystemExit) as refused:
        vendor.build(model, "--expires-days", days)
    assert refused.value.code == 2
    assert "at least 1 day" in vendor.capsys.readouterr().err
    assert bundle.read_bytes() == good, "the refused build replaced the bundle on the stick"


@pytest.mark.parametrize("ak", ["nothex", "96dbdbf680691b5b", "0" * 63])
def test_report_verify_refuses_an_ak_that_is_not_a_fingerprint(vendor: Vendor, ak: str) -> None:
    report = vendor.top / "health.json"
    report.write_text("{}")
    with pytest.raises(SystemExit) as refused:
        vendor.run("report", "verify", report, "--ak", ak)
    assert refused.value.code == 2
    err = vendor.capsys.readouterr().err
    assert "is not a SHA-256 fingerprint (64 hex digits)" in err
    assert "another TPM" not in err


def test_a_key_file_below_a_file_names_that_file(vendor: Vendor) -> None:
    blocker = vendor.keys / "keys.txt"
    blocker.write_text("")
    _, err = vendor.run("keys", "create", "--role", "root", "--out", blocker / "r.pem", code=1)
    hint = err.split("what to do:")[1]
    assert f"Make sure {blocker} is a writable folder" in hint and "state folder" not in hint


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "provisioning", "keys", "create", "--role", "root",
         "--out", str(tmp_path / "root.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 141
    assert (tmp_path / "root.pem.pub").exists()  # the work was done; only the report was lost
