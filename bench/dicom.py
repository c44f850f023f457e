"""Benchmark of the DICOM receiver: C-STORE throughput with every instance checked and fsynced
before its Success, against a bare pynetdicom SCP that keeps instances in memory (the peer).

Run ``make bench`` (or ``.venv/bin/python bench/dicom.py [--count N] [--size 512]``). Prints a
table, then ``name: value`` lines. Asserts nothing: timings on a shared machine are information.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from appliance.config import Config
from appliance.dicom.peers import Peer, save_peers
from appliance.dicom.receiver import start_receiver
from appliance.dicom.store import StudyStore
from tests.dicom.conftest import SCU_AE, make_image


def _send_all(port: int, images: list[Any], senders: int) -> float:
    """Seconds to send ``images`` over ``senders`` parallel associations."""
    chunks = [images[i::senders] for i in range(senders)]

    def one(chunk: list[Any]) -> None:
        ae = AE(ae_title=SCU_AE)
        ae.add_requested_context(str(chunk[0].SOPClassUID), "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="APPLIANCE")
        for image in chunk:
            assert assoc.send_c_store(image).Status == 0
        assoc.release()

    threads = [threading.Thread(target=one, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _bare_scp() -> Any:
    ae = AE(ae_title="APPLIANCE")
    ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    kept: list[bytes] = []

    def handle(event: Any) -> int:
        kept.append(event.request.DataSet.getvalue())
        return 0

    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200, help="instances per run")
    parser.add_argument("--size", type=int, default=512, help="rows = columns (16-bit CT)")
    args = parser.parse_args()
    study = generate_uid()
    images = [make_image("CT", study=study, rows=args.size, columns=args.size, seed=i)
              for i in range(args.count)]  # fmt: skip
    mb = sum(len(i.PixelData) for i in images) / 2**20
    print(f"dicom benchmark: {args.count} CT instances of {args.size}x{args.size} "
          f"({mb:.0f} MiB), loopback; shared machine, numbers are noisy", flush=True)  # fmt: skip
    top = Path(tempfile.mkdtemp(prefix="dicomb"))
    rows = []
    try:
        for senders in (1, 4):
            config = Config(state_dir=top / f"s{senders}", dicom_port=0)
            save_peers(config, [Peer(SCU_AE, "127.0.0.1", 104)])
            store = StudyStore.open(config)
            rx = start_receiver(config, store, host="127.0.0.1", port=0)
            ours = _send_all(rx.port, images, senders)
            rx.stop()
            store.close()
            bare = _bare_scp()
            peer = _send_all(bare.server_address[1], images, senders)
            bare.shutdown()
            rows.append((senders, args.count / ours, mb / ours, args.count / peer, peer / ours))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"\n{'associations':>12}  {'ours inst/s':>11}  {'ours MiB/s':>10}  "
          f"{'bare SCP inst/s':>15}  {'ours/bare':>9}")  # fmt: skip
    print("-" * 66)
    for senders, rate, mbs, bare_rate, ratio in rows:
        print(f"{senders:>12}  {rate:>11.1f}  {mbs:>10.1f}  {bare_rate:>15.1f}  {ratio:>9.2f}")
    print("\nours: decode, checks, spool file fsynced and renamed, SQLite row (FULL) per instance")
    print("bare: pynetdicom SCP keeping the bytes in memory, no checks, no disk")
    print()
    print(f"dicom_store_instances_per_s: {rows[-1][1]:.1f}")
    print(f"dicom_store_vs_bare_scp_ratio: {rows[-1][4]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
