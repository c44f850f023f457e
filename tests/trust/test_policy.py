"""PCR policy arithmetic, checked against a real TPM."""

from __future__ import annotations

import hashlib

import pytest

from appliance.errors import ConfigError
from appliance.trust.policy import (
    normalize_pcrs,
    pcr_policy_digest,
    predict_extend,
)
from appliance.trust.tpm import Tpm
from appliance.trust.tss import PolicyCheckFailedError


def test_predicted_extend_matches_the_tpm(tpm: Tpm) -> None:
    steps = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    start = tpm.pcr_read([16])[16]
    for step in steps:
        tpm.pcr_extend(16, step)
    assert tpm.pcr_read([16])[16] == predict_extend(start, steps)


def test_offline_policy_digest_is_what_the_tpm_enforces(tpm: Tpm) -> None:
    values = tpm.pcr_read([7, 11])
    blob = tpm.seal(b"secret", pcr_policy_digest(values))
    assert tpm.unseal(blob, [7, 11]) == b"secret"
    other = {**values, 11: hashlib.sha256(b"x").digest()}
    wrong = tpm.seal(b"secret", pcr_policy_digest(other))
    with pytest.raises(PolicyCheckFailedError):
        tpm.unseal(wrong, [7, 11])


def test_pcr_read_beyond_eight_at_once(tpm: Tpm) -> None:
    assert sorted(tpm.pcr_read(range(24))) == list(range(24))


@pytest.mark.parametrize("bad", [[], [24], [-1]])
def test_bad_pcr_sets_are_refused(bad: list[int]) -> None:
    with pytest.raises(ConfigError):
        normalize_pcrs(bad)


def test_pcr_order_does_not_change_the_policy() -> None:
    a, b = b"\x01" * 32, b"\x02" * 32
    assert pcr_policy_digest({7: a, 11: b}) == pcr_policy_digest({11: b, 7: a})
    assert pcr_policy_digest({7: a, 11: b}) != pcr_policy_digest({7: b, 11: a})
