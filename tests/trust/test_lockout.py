"""Dictionary-attack safety: unclean stops must not lock the TPM; lockout is explained."""

from __future__ import annotations

from collections.abc import Callable

from tpm2_pytss.constants import ESYS_TR, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

from appliance.config import Config
from appliance.trust import core
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import Tpm, open_tpm


def _use_a_da_protected_key(tpm: Tpm) -> None:
    """What a careless TPM user does: authorise with a key that is *not* noDA."""
    esapi = tpm._esapi  # the test plays another TPM client, not the appliance
    template = TPM2B_PUBLIC.parse(
        "ecc256:aes128cfb",
        objectAttributes=TPMA_OBJECT.RESTRICTED
        | TPMA_OBJECT.DECRYPT
        | TPMA_OBJECT.FIXEDTPM
        | TPMA_OBJECT.FIXEDPARENT
        | TPMA_OBJECT.SENSITIVEDATAORIGIN
        | TPMA_OBJECT.USERWITHAUTH,
    )
    primary = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)[0]
    try:
        esapi.create(primary, TPM2B_SENSITIVE_CREATE(), TPM2B_PUBLIC.parse("ecc256"))
    finally:
        esapi.flush_context(primary)


def _restarts(swtpm: Swtpm, times: int, work: Callable[[Tpm], None], *, clean: bool) -> None:
    for _ in range(times):
        with open_tpm(swtpm.tcti) as tpm:
            work(tpm)
        if clean:
            swtpm.stop()
        else:
            swtpm.kill()
        swtpm.start()


def test_three_unclean_restarts_do_not_lock_the_tpm(swtpm: Swtpm, config: Config) -> None:
    with open_tpm(swtpm.tcti) as tpm:
        core.enroll(tpm, config)

    def appliance_work(tpm: Tpm) -> None:
        core.bring_up(tpm, config)

    _restarts(swtpm, 4, appliance_work, clean=False)
    with open_tpm(swtpm.tcti) as tpm:
        status = tpm.lockout_status()
        assert not status.in_lockout
        assert status.failed_tries == 0
        assert len(core.bring_up(tpm, config)) == 2


def test_orderly_stop_sends_shutdown(swtpm: Swtpm) -> None:
    """Even a DA-protected key costs no strike when the stop is orderly (TPM2_Shutdown)."""
    _restarts(swtpm, 4, _use_a_da_protected_key, clean=True)
    with open_tpm(swtpm.tcti) as tpm:
        assert tpm.lockout_status().failed_tries == 0


def test_lockout_is_detected_and_explained(swtpm: Swtpm, config: Config) -> None:
    """A TPM that another client drove into lockout is reported, and our keys still work."""
    with open_tpm(swtpm.tcti) as tpm:
        core.enroll(tpm, config)
    _restarts(swtpm, 3, _use_a_da_protected_key, clean=False)
    with open_tpm(swtpm.tcti) as tpm:
        state = core.state(tpm, config)
        assert state.lockout.in_lockout
        warning = core.lockout_warning(state.lockout) or ""
        assert "dictionary-attack lockout" in warning
        assert "tpm2_dictionarylockout --clear-lockout" in warning
        assert len(core.bring_up(tpm, config)) == 2
