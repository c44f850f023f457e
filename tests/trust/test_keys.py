"""Sealed keys on a real swtpm: enrollment, PCR policy, recovery, planned PCR changes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import ESYS_TR
from tpm2_pytss.types import TPM2B_PRIVATE, TPM2B_PUBLIC

from appliance.config import Config
from appliance.errors import (
    AlreadyEnrolledError,
    NotEnrolledError,
    PcrMismatchError,
    RecoveryCodeError,
    TrustError,
)
from appliance.trust import core
from appliance.trust.keys import KeyName, KeyStore
from appliance.trust.policy import predict_extend
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import SealedBlobRejectedError, Tpm, open_tpm

MEASUREMENT = hashlib.sha256(b"a new firmware component").digest()


def test_enroll_then_unseal_gives_back_the_keys(tpm: Tpm, config: Config) -> None:
    code = core.enroll(tpm, config)
    store = core.key_store(config)
    first = store.unseal_all(tpm)
    assert first == store.unseal_all(tpm)
    assert len(first[KeyName.MODEL_STORE]) == 32
    assert first[KeyName.MODEL_STORE] != first[KeyName.AUDIT]
    assert len(code.replace("-", "")) == 40
    for path in config.trust_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
        assert code.replace("-", "") not in path.read_text(), "recovery code stored on disk"


def test_key_files_do_not_hold_the_key(tpm: Tpm, config: Config) -> None:
    core.enroll(tpm, config)
    keys = core.key_store(config).unseal_all(tpm)
    for path in config.trust_dir.iterdir():
        blob = path.read_bytes()
        for key in keys.values():
            assert key not in blob and key.hex().encode() not in blob


def test_pcr_extend_refuses_unseal_and_names_the_pcr(tpm: Tpm, config: Config) -> None:
    core.enroll(tpm, config)
    tpm.pcr_extend(11, MEASUREMENT)
    with pytest.raises(PcrMismatchError) as err:
        core.key_store(config).unseal(tpm, KeyName.AUDIT)
    assert err.value.differing == (11,)
    assert "PCR 11 changed" in err.value.message
    assert "appliance trust recover" in (err.value.hint or "")
    assert tpm.loaded_handles() == 0, "a refused unseal leaked a TPM handle"


def test_editing_sealed_pcr_values_does_not_fool_the_tpm(tpm: Tpm, config: Config) -> None:
    """An attacker rewrites the key file so that its PCR values match the changed PCRs."""
    core.enroll(tpm, config)
    tpm.pcr_extend(7, MEASUREMENT)
    current = tpm.pcr_read([7, 11])
    path = config.trust_dir / "audit.sealed.json"
    doc = json.loads(path.read_text())
    doc["sealings"][0]["pcrs"] = {str(k): v.hex() for k, v in current.items()}
    path.write_text(json.dumps(doc))
    with pytest.raises(PcrMismatchError, match="although PCRs"):
        core.key_store(config).unseal(tpm, KeyName.AUDIT)


def test_unseal_from_a_new_process_after_swtpm_restart(swtpm: Swtpm, config: Config) -> None:
    with open_tpm(swtpm.tcti) as tpm:  # closed before the other process needs the TPM
        core.enroll(tpm, config)
        expected = core.key_store(config).unseal(tpm, KeyName.MODEL_STORE)
    swtpm.stop()
    swtpm.start()
    script = (
        "import sys; from pathlib import Path\n"
        "from appliance.trust.keys import KeyStore, KeyName\n"
        "from appliance.trust.tpm import open_tpm\n"
        "with open_tpm(sys.argv[1]) as t:\n"
        "    print(KeyStore(Path(sys.argv[2]), (7, 11)).unseal(t, KeyName.MODEL_STORE).hex())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, swtpm.tcti, str(config.trust_dir)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert bytes.fromhex(out.stdout.strip()) == expected


def test_recovery_code_reseals_after_a_pcr_change(tpm: Tpm, config: Config) -> None:
    code = core.enroll(tpm, config)
    store = core.key_store(config)
    before = store.unseal_all(tpm)
    tpm.pcr_extend(7, MEASUREMENT)
    with pytest.raises(PcrMismatchError):
        store.unseal_all(tpm)
    store.recover(tpm, code.lower().replace("-", " "))  # as typed from paper
    assert store.unseal_all(tpm) == before


def test_wrong_recovery_code_is_refused_and_changes_nothing(tpm: Tpm, config: Config) -> None:
    code = core.enroll(tpm, config)
    tpm.pcr_extend(7, MEASUREMENT)
    files = {p: p.read_bytes() for p in config.trust_dir.iterdir()}
    wrong = ("0" if code[0] != "0" else "1") + code[1:]
    store = core.key_store(config)
    with pytest.raises(RecoveryCodeError, match="wrong"):
        store.recover(tpm, wrong)
    with pytest.raises(RecoveryCodeError, match="not a recovery code"):
        store.recover(tpm, "guess")
    assert {p: p.read_bytes() for p in config.trust_dir.iterdir()} == files
    with pytest.raises(PcrMismatchError):
        store.unseal_all(tpm)


def test_keys_sealed_on_one_tpm_do_not_unseal_on_another(
    tpm: Tpm, config: Config, tmp_path: Path
) -> None:
    core.enroll(tpm, config)
    sock = Path(f"/tmp/o{os.getpid()}.sock")
    with (
        Swtpm(tmp_path / "other", sock=sock) as other,
        open_tpm(other.tcti) as tpm2,
        pytest.raises(SealedBlobRejectedError),
    ):
        core.key_store(config).unseal(tpm2, KeyName.MODEL_STORE)


def test_planned_pcr_change_unseals_before_and_after(tpm: Tpm, config: Config) -> None:
    core.enroll(tpm, config)
    store = core.key_store(config)
    keys = store.unseal_all(tpm)
    predicted = predict_extend(tpm.pcr_read([7])[7], [MEASUREMENT])
    store.plan_pcr_change(tpm, {7: predicted})
    assert store.unseal_all(tpm) == keys
    tpm.pcr_extend(7, MEASUREMENT)
    assert tpm.pcr_read([7])[7] == predicted
    assert store.unseal_all(tpm) == keys
    tpm.pcr_extend(7, MEASUREMENT)  # an unplanned change is still refused
    with pytest.raises(PcrMismatchError):
        store.unseal_all(tpm)


def test_recovery_can_seal_to_predicted_values(tpm: Tpm, config: Config) -> None:
    code = core.enroll(tpm, config)
    store = core.key_store(config)
    keys = store.unseal_all(tpm)
    predicted = predict_extend(tpm.pcr_read([11])[11], [MEASUREMENT])
    store.recover(tpm, code, {11: predicted})
    with pytest.raises(PcrMismatchError):
        store.unseal_all(tpm)
    tpm.pcr_extend(11, MEASUREMENT)
    assert store.unseal_all(tpm) == keys


def test_sealed_key_is_not_released_by_password_auth(tpm: Tpm, config: Config) -> None:
    """Another OS on the box loads the sealed blob and asks with the empty password instead of
    the PCR policy: the object has no user auth, so the TPM refuses."""
    core.enroll(tpm, config)
    tpm.pcr_extend(7, MEASUREMENT)  # what booting something else does
    doc = json.loads((config.trust_dir / "audit.sealed.json").read_text())["sealings"][0]
    public, _ = TPM2B_PUBLIC.unmarshal(base64.b64decode(doc["public"]))
    private, _ = TPM2B_PRIVATE.unmarshal(base64.b64decode(doc["private"]))
    esapi = tpm._esapi  # the test plays another TPM client, not the appliance
    with tpm._primary() as primary:
        sealed = esapi.load(primary, private, public)
        try:
            with pytest.raises(TSS2_Exception):
                esapi.unseal(sealed, session1=ESYS_TR.PASSWORD)
        finally:
            esapi.flush_context(sealed)
    assert tpm.loaded_handles() == 0


def test_recovered_keys_are_sealed_to_every_configured_pcr(tpm: Tpm, config: Config) -> None:
    """Recovery re-seals to the whole PCR set: afterwards a change of any of them still locks."""
    code = core.enroll(tpm, config)
    store = core.key_store(config)
    tpm.pcr_extend(7, MEASUREMENT)
    store.recover(tpm, code)
    for pcr in config.pcrs:
        tpm.pcr_extend(pcr, MEASUREMENT)
        with pytest.raises(PcrMismatchError) as err:
            store.unseal(tpm, KeyName.MODEL_STORE)
        assert err.value.differing == (pcr,)
        store.recover(tpm, code)


def test_planned_change_of_a_pcr_outside_the_sealed_set_is_refused(
    tpm: Tpm, config: Config
) -> None:
    core.enroll(tpm, config)
    store = core.key_store(config)
    files = {p: p.read_bytes() for p in config.trust_dir.iterdir()}
    with pytest.raises(TrustError, match=r"PCR 0 is not in the sealed PCR set \(7, 11\)"):
        store.plan_pcr_change(tpm, {0: bytes(32)})
    assert {p: p.read_bytes() for p in config.trust_dir.iterdir()} == files


def test_enrolling_twice_is_refused(tpm: Tpm, config: Config) -> None:
    core.enroll(tpm, config)
    with pytest.raises(AlreadyEnrolledError, match="recover"):
        core.enroll(tpm, config)


def test_interrupted_enrollment_is_redone(tpm: Tpm, config: Config) -> None:
    core.enroll(tpm, config)
    (config.trust_dir / "audit.sealed.json").unlink()  # power cut before the last file
    assert not core.key_store(config).is_enrolled()
    core.enroll(tpm, config)
    assert len(core.key_store(config).unseal_all(tpm)) == 2


def test_unseal_before_enrollment_says_what_to_do(tpm: Tpm, config: Config) -> None:
    with pytest.raises(NotEnrolledError, match="appliance trust enroll"):
        KeyStore(config.trust_dir, config.pcrs).unseal(tpm, KeyName.AUDIT)


def test_many_operations_leak_no_handles(tpm: Tpm, config: Config) -> None:
    """swtpm has three object slots: one leaked handle per call would fail by the fourth."""
    core.enroll(tpm, config)
    store = core.key_store(config)
    for _ in range(10):
        store.unseal_all(tpm)
    assert tpm.loaded_handles() == 0


UNSEALER = """
import sys
from pathlib import Path
from appliance.trust.keys import KeyStore, KeyName
from appliance.trust.tpm import open_tpm
for _ in range(int(sys.argv[3])):
    with open_tpm(sys.argv[1]) as t:
        KeyStore(Path(sys.argv[2]), (7, 11)).unseal(t, KeyName.AUDIT)
print("ok")
"""


def test_two_clients_at_once_share_the_swtpm(swtpm: Swtpm, config: Config) -> None:
    """swtpm serves one connection at a time; short trust calls from two processes interleave."""
    with open_tpm(swtpm.tcti) as tpm:
        core.enroll(tpm, config)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UNSEALER, swtpm.tcti, str(config.trust_dir), "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with open_tpm(swtpm.tcti) as tpm:
        assert tpm.loaded_handles() == 0
