"""TSS2 exceptions into the appliance's error hierarchy: the one place that reads their codes.

``tpm.py``, the only module that sends commands to the TPM, runs every command through
:func:`wrap_tss` (or :func:`translate` where a code means something to the command itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tpm2_pytss import TSS2_Exception
from tpm2_pytss.constants import TPM2_RC, TSS2_RC

from appliance.errors import TpmError, TpmLockoutError, TpmUnavailableError, TrustError

T = TypeVar("T")


class PolicyCheckFailedError(TpmError):
    """The PCR policy did not match; the key store turns this into PcrMismatchError."""


class SealedBlobRejectedError(TpmError):
    """The TPM would not load a sealed blob: another TPM's, a cleared owner seed, or damaged."""


def error_code(exc: TSS2_Exception) -> int:
    """The code of ``exc`` without its parameter, handle or session number."""
    return int(exc.error)


_OUT_OF_SLOTS = (TPM2_RC.OBJECT_MEMORY, TPM2_RC.SESSION_MEMORY)
# A TSS2 code names its layer in bits 16-23. Layer 0 and the resource manager's TPM layer carry
# the TPM's own answer; the others (TCTI, SYS, ESYS, ...) come from the software between us and
# the TPM, and with these base codes they say that the command got no answer at all.
_TPM_LAYERS = (TSS2_RC.TPM_RC_LAYER, TSS2_RC.RESMGR_TPM_RC_LAYER)
_NO_ANSWER = (
    TSS2_RC.BASE_RC_IO_ERROR,
    TSS2_RC.BASE_RC_NO_CONNECTION,
    TSS2_RC.BASE_RC_TRY_AGAIN,
    TSS2_RC.BASE_RC_MALFORMED_RESPONSE,
    TSS2_RC.BASE_RC_INSUFFICIENT_RESPONSE,
)
_BASE_MASK = 0xFFFF


def no_answer(exc: TSS2_Exception) -> bool:
    """Whether ``exc`` says the TPM did not answer (gone, hung, the link cut), as opposed to an
    answer of the TPM's that refused the command."""
    rc = int(exc.rc)
    return rc & TSS2_RC.RC_LAYER_MASK not in _TPM_LAYERS and rc & _BASE_MASK in _NO_ANSWER


def blob_refused(exc: TSS2_Exception) -> bool:
    """Whether a failed TPM2_Load refused the blob itself (another TPM's, a cleared owner seed,
    a damaged file), not a TPM out of slots or one that did not answer."""
    return error_code(exc) not in _OUT_OF_SLOTS and not no_answer(exc)


def translate(what: str, exc: TSS2_Exception) -> TrustError:
    """The appliance error for a TSS2 exception raised while trying to ``what``."""
    if no_answer(exc):
        return TpmUnavailableError(
            f"cannot reach the TPM: it stopped answering when asked to {what} ({exc}).",
            "The sealed keys and their files are not at fault: do not re-seal them. Retry once "
            "the TPM answers again (`appliance trust status` says whether it does); if it stays "
            "silent, restart the box.",
        )
    code = error_code(exc)
    if code == TPM2_RC.LOCKOUT:
        return TpmLockoutError(
            f"the TPM is in dictionary-attack lockout and refused to {what}.",
            "Wait for the lockout to expire (see `appliance trust status`), or clear it with "
            "the lockout authorization: `tpm2_dictionarylockout --clear-lockout`.",
        )
    if code in _OUT_OF_SLOTS:
        return TpmError(
            f"the TPM has no free object or session slot to {what}.",
            "Another program holds TPM objects without flushing them; stop it, or restart "
            "the TPM service (`tpm2_flushcontext -t -s` clears them).",
        )
    if code in (TPM2_RC.POLICY_FAIL, TPM2_RC.VALUE) and what == "unseal":
        return PolicyCheckFailedError(f"the TPM refused to {what}: PCR policy failed.")
    return TpmError(
        f"the TPM refused to {what}: {exc}.",
        "Check `appliance trust status`; if it persists, collect the journal for support.",
    )


def wrap_tss(what: str, func: Callable[[], T]) -> T:
    """Run ``func`` and translate a TSS2 exception into the appliance's error hierarchy."""
    try:
        return func()
    except TSS2_Exception as exc:
        raise translate(what, exc) from exc
