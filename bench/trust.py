"""Benchmark of the trust core: unseal latency on a real swtpm, model decryption throughput.

Run ``make bench`` (or ``.venv/bin/python bench/trust.py [--size-mb N]``). Prints a table, then the
headline figures as ``name: value`` lines. Asserts nothing: timings on a shared machine are
information, not a test.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _aead_measure import measure_decrypt

from appliance.config import Config
from appliance.trust import core
from appliance.trust.keys import KeyName
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import open_tpm


def measure_unseal(samples: int) -> dict[str, float]:
    """Milliseconds per unseal of the model-store key: through the key store and the bare TPM."""
    top = Path(tempfile.mkdtemp(prefix="tpmb", dir="/tmp"))
    try:
        with Swtpm(top / "state", sock=top / "s") as swtpm, open_tpm(swtpm.tcti) as tpm:
            config = Config(state_dir=top / "appliance", tcti=swtpm.tcti)
            core.enroll(tpm, config)
            store = core.key_store(config)
            blob = store._read(KeyName.MODEL_STORE)[0].blob
            full, bare = [], []
            for _ in range(samples):
                t0 = time.perf_counter()
                store.unseal(tpm, KeyName.MODEL_STORE)
                t1 = time.perf_counter()
                tpm.unseal(blob, config.pcrs)
                t2 = time.perf_counter()
                full.append((t1 - t0) * 1000)
                bare.append((t2 - t1) * 1000)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    q = statistics.quantiles
    return {
        "keystore_p50": statistics.median(full),
        "keystore_p90": q(full, n=10)[-1],
        "bare_p50": statistics.median(bare),
        "bare_p90": q(bare, n=10)[-1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="model size (default 256 MiB)")
    parser.add_argument("--samples", type=int, default=50, help="unseals to time (default 50)")
    args = parser.parse_args()
    print(f"trust benchmark: unseal x{args.samples} on swtpm, decrypt of {args.size_mb} MiB",
          flush=True)  # fmt: skip
    unseal = measure_unseal(args.samples)
    rates = measure_decrypt(args.size_mb)
    ratio = rates["ratio"]
    rows = [
        ("unseal, key store (PCR read + policy session)", f"{unseal['keystore_p50']:.2f} ms",
         f"p90 {unseal['keystore_p90']:.2f} ms"),
        ("unseal, bare TPM2_Unseal path", f"{unseal['bare_p50']:.2f} ms",
         f"p90 {unseal['bare_p90']:.2f} ms"),
        ("decrypt, ours (streaming, from file)", f"{rates['stream_mb_s']:.0f} MiB/s",
         f"{ratio:.2f}x one-shot"),
        ("decrypt, peer: one-shot AES-GCM in memory", f"{rates['aesgcm_mb_s']:.0f} MiB/s", "1.00x"),
        ("plain read() of the encrypted file", f"{rates['read_mb_s']:.0f} MiB/s",
         f"ours runs at {rates['stream_mb_s'] / rates['read_mb_s']:.2f}x of it"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'median/best':>14}  note")
    print("-" * (width + 34))
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>14}  {note}")
    print()
    print(f"decrypt_vs_aesgcm_ratio: {ratio:.2f}")
    print(f"unseal_ms_p50: {unseal['keystore_p50']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
