"""Measure model decryption throughput against one-shot AES-GCM and a plain file read.

Run from the repository root: ``PYTHONPATH=. python bench/_aead_measure.py [size_mb]``.
Prints a table; it asserts nothing, since timings on a shared machine are not a test.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from appliance.trust.aead import decrypt_file, encrypt_file

MIB = 1 << 20


def _best_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Return the fastest of ``repeats`` wall-clock timings of each run.

    The runs take turns within each round, so a noisy neighbour slowing the machine for a while
    hurts all of them alike instead of whichever happened to run then.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            best[name] = min(best[name], time.perf_counter() - start)
            del result  # free this output before the next run allocates its own
    return best


def measure_decrypt(size_mb: int = 256, repeats: int = 3) -> dict[str, float]:
    """Return MiB/s of decrypt_file, one-shot AESGCM.decrypt in memory, and Path.read_bytes.

    Keys: ``stream_mb_s``, ``aesgcm_mb_s``, ``read_mb_s`` and ``ratio`` (stream / aesgcm).
    The model is ``size_mb`` MiB of random data, encrypted under a random key in a temporary
    folder that is removed afterwards.
    """
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="aead-bench-") as tmp:
        plain, encrypted = Path(tmp) / "model.bin", Path(tmp) / "model.apm"
        with plain.open("wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(MIB))
        encrypt_file(key, plain, encrypted, model="bench", version="1")
        aesgcm, nonce = AESGCM(key), os.urandom(12)
        ciphertext = aesgcm.encrypt(nonce, plain.read_bytes(), None)
        plain.unlink()
        seconds = _best_seconds(
            {
                "stream": lambda: decrypt_file(key, encrypted, model="bench", version="1"),
                "aesgcm": lambda: aesgcm.decrypt(nonce, ciphertext, None),
                "read": encrypted.read_bytes,
            },
            repeats,
        )
    rates = {f"{name}_mb_s": size_mb / value for name, value in seconds.items()}
    rates["ratio"] = rates["stream_mb_s"] / rates["aesgcm_mb_s"]
    return rates


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    for name, value in measure_decrypt(size).items():
        print(f"{name:<12} {value:10.2f}")
