"""A thin ESAPI adapter over tpm2-pytss: the only module that sends commands to the TPM.

Every method opens and flushes the transient objects and sessions it needs before it returns,
success or failure: swtpm has three object slots and no resource manager, so a leaked handle
breaks the next caller. Sealed objects and NV indexes are created with ``noDA`` so that wrong
guesses or unclean power-offs never feed the dictionary-attack counter.

TSS2 exceptions are wrapped here, once, into the appliance's error hierarchy (``tss.py`` reads
their codes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HR,
    TPM2_NT,
    TPM2_PT,
    TPM2_RC,
    TPM2_SE,
    TPM2_SU,
    TPMA_NV,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_NV_PUBLIC,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_DIGEST_VALUES,
    TPMS_NV_PUBLIC,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_SYM_DEF,
)

from appliance.errors import CounterError, TpmError, TpmUnavailableError
from appliance.trust.policy import DIGEST_SIZE, normalize_pcrs
from appliance.trust.tss import (
    SealedBlobRejectedError,
    blob_refused,
    error_code,
    translate,
    wrap_tss,
)

# The storage primary is derived from the owner seed and this template alone, so it is the same
# key on every boot without being stored: an ECC P-256 restricted decryption key (TCG SRK shape).
_PRIMARY_ATTRS = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.DECRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
)
# No USERWITHAUTH: the sealed data is released by the PCR policy alone, never by a password.
_SEALED_ATTRS = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.NODA
_COUNTER_ATTRS = (
    TPMA_NV.OWNERWRITE
    | TPMA_NV.OWNERREAD
    | TPMA_NV.AUTHREAD
    | TPMA_NV.NO_DA
    | (int(TPM2_NT.COUNTER) << int(TPMA_NV.TPM2_NT_SHIFT))
)
# The attestation key: a restricted ECC P-256 signing primary under the owner hierarchy. Derived
# from the owner seed and this template alone, it is the same key on every call (its fingerprint
# identifies the box's TPM to the vendor) and never stored.
_AK_ATTRS = (
    TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
    | TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.NODA
)
_TPMA_PERMANENT_IN_LOCKOUT = 1 << 9
_SESSION_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.AES)
_SESSION_SYM.keyBits.aes = 128
_SESSION_SYM.mode.aes = TPM2_ALG.CFB
MAX_SEALED_SIZE = 128


@dataclass(frozen=True)
class SealedBlob:
    """The public and private parts of a sealed object, as TPM2B marshalled bytes."""

    public: bytes
    private: bytes


@dataclass(frozen=True)
class Quote:
    """A TPM2_Quote and what it needs to be checked, as TPM marshalled bytes."""

    attest: bytes  # TPMS_ATTEST: magic, qualifying data, clock, PCR selection and digest
    signature: bytes  # TPMT_SIGNATURE (ECDSA P-256 over SHA-256 of ``attest``)
    ak_public: bytes  # TPM2B_PUBLIC of the attestation key
    pcrs: dict[int, bytes]  # the SHA-256 PCR values read right after the quote


@dataclass(frozen=True)
class LockoutStatus:
    """The TPM's dictionary-attack state."""

    in_lockout: bool
    failed_tries: int
    max_tries: int
    recovery_s: int
    lockout_recovery_s: int


class Tpm:
    """One ESAPI connection. Use :func:`open_tpm` to get one."""

    def __init__(self, esapi: ESAPI) -> None:
        self._esapi = esapi

    @contextlib.contextmanager
    def _primary(self) -> Iterator[ESYS_TR]:
        template = TPM2B_PUBLIC.parse(
            alg="ecc256:aes128cfb", objectAttributes=_PRIMARY_ATTRS, nameAlg="sha256"
        )
        handle = wrap_tss(
            "create the storage primary key",
            lambda: self._esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)[
                0
            ],
        )
        try:
            yield handle
        finally:
            self._flush(handle)

    @contextlib.contextmanager
    def _session(self, salt_key: ESYS_TR, kind: TPM2_SE, attrs: int) -> Iterator[ESYS_TR]:
        """A session salted with the primary, so that secrets cross the bus encrypted."""
        session = wrap_tss(
            "start a session",
            lambda: self._esapi.start_auth_session(
                salt_key, ESYS_TR.NONE, kind, _SESSION_SYM, TPM2_ALG.SHA256
            ),
        )
        try:
            self._esapi.trsess_set_attributes(session, attrs | TPMA_SESSION.CONTINUESESSION)
            yield session
        finally:
            self._flush(session)

    def _flush(self, handle: ESYS_TR) -> None:
        with contextlib.suppress(TSS2_Exception):
            self._esapi.flush_context(handle)

    def seal(self, secret: bytes, policy_digest: bytes) -> SealedBlob:
        """Create a sealed keyed-hash object holding ``secret``, released only by the policy."""
        if not 0 < len(secret) <= MAX_SEALED_SIZE:
            raise ValueError(f"sealed data must be 1..{MAX_SEALED_SIZE} bytes")
        public = TPM2B_PUBLIC.parse(
            alg="keyedhash", objectAttributes=_SEALED_ATTRS, nameAlg="sha256"
        )
        public.publicArea.authPolicy = policy_digest
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
        with (
            self._primary() as primary,
            self._session(primary, TPM2_SE.HMAC, TPMA_SESSION.DECRYPT) as session,
        ):
            private, out_public, *_ = wrap_tss(
                "seal a key",
                lambda: self._esapi.create(primary, sensitive, public, session1=session),
            )
        return SealedBlob(public=bytes(out_public.marshal()), private=bytes(private.marshal()))

    def unseal(self, blob: SealedBlob, pcrs: Sequence[int]) -> bytes:
        """Release the secret of ``blob`` if the PCRs match its policy.

        Raises PolicyCheckFailedError when they do not.
        """
        public, _ = TPM2B_PUBLIC.unmarshal(blob.public)
        private, _ = TPM2B_PRIVATE.unmarshal(blob.private)
        selection = _selection(pcrs)
        with self._primary() as primary:
            try:
                obj = self._esapi.load(primary, private, public)
            except TSS2_Exception as exc:
                if not blob_refused(exc):
                    raise translate("load a sealed key", exc) from exc
                raise SealedBlobRejectedError(
                    f"the TPM would not load the sealed key: {exc}.",
                    "The TPM was cleared or replaced, or the key file is damaged: re-seal the "
                    "keys with the recovery code (`appliance trust recover`).",
                ) from exc
            try:
                with self._session(primary, TPM2_SE.POLICY, TPMA_SESSION.ENCRYPT) as session:
                    wrap_tss(
                        "unseal",
                        lambda: self._esapi.policy_pcr(session, b"", selection),
                    )
                    data = wrap_tss("unseal", lambda: self._esapi.unseal(obj, session1=session))
            finally:
                self._flush(obj)
        return bytes(data.marshal()[2:])

    def pcr_read(self, pcrs: Sequence[int]) -> dict[int, bytes]:
        """The current SHA-256 values of ``pcrs``."""
        wanted = normalize_pcrs(pcrs)
        out: dict[int, bytes] = {}
        # TPM2_PCR_Read returns at most 8 digests per call; ask until all are in.
        while len(out) < len(wanted):
            rest = [p for p in wanted if p not in out]
            _, sel, digests = wrap_tss(
                "read PCRs",
                lambda r=rest: self._esapi.pcr_read(_selection(r)),  # type: ignore[misc]
            )
            got = _selected(sel)
            if not got:
                raise TpmError(
                    "the TPM has no SHA-256 PCR bank.",
                    "Enable the SHA-256 bank in the firmware's TPM settings.",
                )
            for pcr, digest in zip(got, digests, strict=True):
                out[pcr] = bytes(digest)
        return out

    def quote(self, pcrs: Sequence[int], qualifying_data: bytes) -> Quote:
        """Quote the SHA-256 ``pcrs`` with the owner-hierarchy attestation key, binding
        ``qualifying_data`` (at most 32 bytes, e.g. a report's SHA-256) into the signed data."""
        template = TPM2B_PUBLIC.parse(
            alg="ecc256:ecdsa-sha256:null", objectAttributes=_AK_ATTRS, nameAlg="sha256"
        )
        ak, public, *_ = wrap_tss(
            "create the attestation key",
            lambda: self._esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER),
        )
        try:
            attest, signature = wrap_tss(
                "quote the PCRs", lambda: self._esapi.quote(ak, _selection(pcrs), qualifying_data)
            )
        finally:
            self._flush(ak)
        return Quote(
            attest=bytes(attest.marshal()[2:]),
            signature=bytes(signature.marshal()),
            ak_public=bytes(public.marshal()),
            pcrs=self.pcr_read(pcrs),
        )

    def pcr_extend(self, pcr: int, digest: bytes) -> None:
        """Extend ``pcr`` in the SHA-256 bank with ``digest``."""
        if len(digest) != DIGEST_SIZE:
            raise ValueError("digest must be 32 bytes")
        ha = TPMT_HA(hashAlg=TPM2_ALG.SHA256)
        ha.digest.sha256 = digest
        values = TPML_DIGEST_VALUES([ha])
        wrap_tss(
            f"extend PCR {pcr}",
            lambda: self._esapi.pcr_extend(ESYS_TR.PCR0 + normalize_pcrs([pcr])[0], values),
        )

    @contextlib.contextmanager
    def _nv(self, index: int) -> Iterator[ESYS_TR]:
        handle = wrap_tss(f"open NV index {index:#x}", lambda: self._esapi.tr_from_tpmpublic(index))
        try:
            yield handle
        finally:
            with contextlib.suppress(TSS2_Exception):
                self._esapi.tr_close(handle)

    def nv_counter_exists(self, index: int) -> bool:
        """Whether an NV index is defined at ``index``."""
        try:
            handle = self._esapi.tr_from_tpmpublic(index)
        except TSS2_Exception as exc:
            if error_code(exc) == TPM2_RC.HANDLE:
                return False
            raise TpmError(f"cannot look up NV index {index:#x}: {exc}.") from exc
        with contextlib.suppress(TSS2_Exception):
            self._esapi.tr_close(handle)
        return True

    def nv_counter_define(self, index: int) -> None:
        """Define a no-DA NV counter at ``index`` (owner-written, readable with empty auth)."""
        public = TPM2B_NV_PUBLIC(
            nvPublic=TPMS_NV_PUBLIC(
                nvIndex=index, nameAlg=TPM2_ALG.SHA256, attributes=_COUNTER_ATTRS, dataSize=8
            )
        )
        handle = wrap_tss(
            f"define the NV counter {index:#x}",
            lambda: self._esapi.nv_define_space(None, public, ESYS_TR.OWNER),
        )
        with contextlib.suppress(TSS2_Exception):
            self._esapi.tr_close(handle)

    def nv_counter_read(self, index: int) -> int | None:
        """The counter's value, or None if it was never incremented."""
        with self._nv(index) as handle:
            try:
                data = self._esapi.nv_read(handle, 8, 0, auth_handle=handle)
            except TSS2_Exception as exc:
                if error_code(exc) == TPM2_RC.NV_UNINITIALIZED:
                    return None
                raise CounterError(
                    f"cannot read the anti-rollback counter {index:#x}: {exc}.",
                    "Check `appliance trust status`.",
                ) from exc
        return int.from_bytes(bytes(data), "big")

    def nv_counter_increment(self, index: int) -> None:
        """Add one to the counter (TPM2_NV_Increment)."""
        with self._nv(index) as handle:
            wrap_tss(
                "advance the anti-rollback counter",
                lambda: self._esapi.nv_increment(handle, auth_handle=ESYS_TR.OWNER),
            )

    def lockout_status(self) -> LockoutStatus:
        """The TPM's dictionary-attack counters and whether it is locked out now."""
        props = self._properties(TPM2_PT.PERMANENT, 1)
        da = self._properties(TPM2_PT.LOCKOUT_COUNTER, 4)
        return LockoutStatus(
            in_lockout=bool(props.get(int(TPM2_PT.PERMANENT), 0) & _TPMA_PERMANENT_IN_LOCKOUT),
            failed_tries=da.get(int(TPM2_PT.LOCKOUT_COUNTER), 0),
            max_tries=da.get(int(TPM2_PT.MAX_AUTH_FAIL), 0),
            recovery_s=da.get(int(TPM2_PT.LOCKOUT_INTERVAL), 0),
            lockout_recovery_s=da.get(int(TPM2_PT.LOCKOUT_RECOVERY), 0),
        )

    def _properties(self, first: int, count: int) -> dict[int, int]:
        _, data = wrap_tss(
            "report its properties",
            lambda: self._esapi.get_capability(TPM2_CAP.TPM_PROPERTIES, first, count),
        )
        return {int(p.property): int(p.value) for p in data.data.tpmProperties}

    def loaded_handles(self) -> int:
        """How many transient objects and sessions the TPM holds now (0 when nothing leaked)."""
        total = 0
        for first in (TPM2_HR.TRANSIENT, TPM2_HR.HMAC_SESSION, TPM2_HR.POLICY_SESSION):
            _, data = wrap_tss(
                "list its handles",
                lambda f=first: self._esapi.get_capability(TPM2_CAP.HANDLES, int(f), 64),  # type: ignore[misc]
            )
            total += len(data.data.handles)
        return total

    def get_random(self, size: int) -> bytes:
        """``size`` random bytes from the TPM's generator."""
        return bytes(wrap_tss("give random bytes", lambda: self._esapi.get_random(size)))

    def shutdown(self) -> None:
        """TPM2_Shutdown(CLEAR): marks an orderly stop so no dictionary-attack strike is counted."""
        wrap_tss("shut down", lambda: self._esapi.shutdown(TPM2_SU.CLEAR))


def _selection(pcrs: Sequence[int]) -> Any:
    return "sha256:" + ",".join(str(p) for p in normalize_pcrs(pcrs))


def _selected(sel: Any) -> list[int]:
    out: list[int] = []
    for bank in sel:
        if int(bank.hash) != TPM2_ALG.SHA256:
            continue
        bitmap = bytes(bank.pcrSelect)[: bank.sizeofSelect]
        out.extend(i * 8 + b for i, byte in enumerate(bitmap) for b in range(8) if byte >> b & 1)
    return out


def lock_path(tcti: str) -> Path | None:
    """The lock file that serialises this process's TPM connections with other processes'.

    The kernel's resource manager (``/dev/tpmrm0``) virtualises handles per connection; swtpm and
    a raw ``/dev/tpm0`` do not, so two clients interleaving would fill the three object slots.
    """
    kind, _, conf = tcti.partition(":")
    if kind == "device" and Path(conf or "/dev/tpmrm0").name.startswith("tpmrm"):
        return None
    if kind == "swtpm" and conf.startswith("path="):
        return Path(f"{conf.removeprefix('path=').split(',')[0]}.lock")
    digest = hashlib.sha256(tcti.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"appliance-tpm-{digest}.lock"


class _ProcessLocks:
    """flock across processes, re-entrant within this one.

    flock is per open file, so a nested connection in the same process (a test that holds one
    while it stops the swtpm) would wait for itself; nesting counts instead.
    """

    def __init__(self) -> None:
        self._guard = threading.RLock()
        self._held: dict[Path, tuple[TextIO, int]] = {}

    @contextlib.contextmanager
    def hold(self, path: Path | None) -> Iterator[None]:
        if path is None:
            yield
            return
        with self._guard:
            fh, depth = self._held.get(path) or (path.open("a"), 0)
            if depth == 0:
                fcntl.flock(fh, fcntl.LOCK_EX)
            self._held[path] = (fh, depth + 1)
            try:
                yield
            finally:
                fh, depth = self._held.pop(path)
                if depth > 1:
                    self._held[path] = (fh, depth - 1)
                else:
                    fh.close()  # releases the flock


_LOCKS = _ProcessLocks()


@contextlib.contextmanager
def open_tpm(tcti: str) -> Iterator[Tpm]:
    """Connect to the TPM through ``tcti`` (``device:/dev/tpmrm0``, ``swtpm:path=...``).

    Where the TPM has no resource manager, the connection holds an exclusive lock for its whole
    life, so keep the block short.
    """
    # The TSS logs every TPM refusal to stderr on its own; we report errors ourselves, once.
    os.environ.setdefault("TSS2_LOG", "all+NONE")
    with _LOCKS.hold(lock_path(tcti)):
        try:
            esapi = ESAPI(tcti)
        except TSS2_Exception as exc:
            raise TpmUnavailableError(
                f"cannot reach the TPM through '{tcti}': {exc}.",
                "On the box check that /dev/tpmrm0 exists and the TPM is enabled in the firmware; "
                "in development run `make run`, which starts a software TPM.",
            ) from exc
        try:
            yield Tpm(esapi)
        finally:
            esapi.close()
