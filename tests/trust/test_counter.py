"""The anti-rollback counter on a real swtpm: monotonic, durable, never moves down."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.config import DEFAULT_COUNTER_INDEX
from appliance.errors import CounterError
from appliance.trust.counter import RollbackCounter
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import Tpm, open_tpm

INDEX = DEFAULT_COUNTER_INDEX

# Advances the counter one step at a time and prints each value once the TPM acknowledged it.
ADVANCER = """
import sys
from appliance.trust.counter import RollbackCounter
from appliance.trust.tpm import open_tpm
while True:
    with open_tpm(sys.argv[1]) as tpm:
        c = RollbackCounter(tpm, int(sys.argv[2]))
        print(c.advance_to(c.read() + 1), flush=True)
"""


def test_reads_zero_before_the_first_increment(tpm: Tpm) -> None:
    counter = RollbackCounter(tpm, INDEX)
    counter.ensure()
    assert counter.read() == 0
    assert counter.advance_to(0) == 0
    assert counter.advance_to(3) == 3
    assert counter.read() == 3


def test_floor_never_moves_down(tpm: Tpm) -> None:
    counter = RollbackCounter(tpm, INDEX)
    counter.ensure()
    counter.advance_to(5)
    with pytest.raises(CounterError, match="cannot go back to 4"):
        counter.advance_to(4)
    assert counter.advance_to(5) == 5
    assert counter.read() == 5


def test_absurd_jump_is_refused(tpm: Tpm) -> None:
    counter = RollbackCounter(tpm, INDEX)
    counter.ensure()
    with pytest.raises(CounterError, match="version epoch"):
        counter.advance_to(10**9)
    assert counter.read() == 0


def test_undefined_counter_says_what_to_do(tpm: Tpm) -> None:
    with pytest.raises(CounterError, match="appliance trust enroll"):
        RollbackCounter(tpm, INDEX).read()


def test_ensure_is_idempotent(tpm: Tpm) -> None:
    counter = RollbackCounter(tpm, INDEX)
    counter.ensure()
    counter.advance_to(2)
    counter.ensure()
    assert counter.read() == 2


def _advance_until_killed(swtpm: Swtpm, acknowledged: int, kill_tpm: bool) -> int:
    """Run the advancer, kill -9 the TPM (power cut) or the client after N acks; return last ack."""
    proc = subprocess.Popen(
        [sys.executable, "-c", ADVANCER, swtpm.tcti, str(INDEX)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    last = 0
    for _ in range(acknowledged):
        last = int(proc.stdout.readline())
    if kill_tpm:
        swtpm.kill()
    else:
        proc.kill()
    for line in proc.stdout:  # values acknowledged before the kill landed
        if line.strip().isdigit():
            last = int(line)
    proc.kill()
    proc.wait()
    return last


@pytest.mark.parametrize("kill_tpm", [True, False], ids=["power-cut", "client-kill"])
def test_counter_is_monotonic_across_kill_9(swtpm: Swtpm, kill_tpm: bool) -> None:
    with open_tpm(swtpm.tcti) as tpm:
        RollbackCounter(tpm, INDEX).ensure()
    highest = 0
    for round_ in range(3):
        last = _advance_until_killed(swtpm, acknowledged=5 + round_, kill_tpm=kill_tpm)
        assert last > highest
        if kill_tpm:
            swtpm.start()
        with open_tpm(swtpm.tcti) as tpm:
            value = RollbackCounter(tpm, INDEX).read()
        assert value >= last, f"acknowledged {last} but the TPM holds {value} after kill -9"
        highest = value
