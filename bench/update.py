"""Benchmark of the update channel: verify + install of a large bundle, and the validation gate.

Builds a ~200 MB model with provisioning.testmodel, signs it into a bundle with the vendor
library, then runs the real agent on a real swtpm (``make bench``, or
``.venv/bin/python bench/update.py [--size-mb N]``). The peer is the machine's hashing limit:
``hashlib.sha256`` (OpenSSL) over the same bytes already in memory, in the same run. Prints a
table, then ``install_vs_sha256_limit_ratio`` and ``validation_gate_s``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from securesystemslib.signer import CryptoSigner

from appliance.config import Config
from appliance.runtime import open_runtime
from appliance.trust import core
from appliance.trust.swtpm import Swtpm
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import Phase, ProgressEvent, import_vendor_root
from appliance.updates.wiring import make_agent
from provisioning.testmodel import build_model_dir
from provisioning.vendor import RoleSigners, build_bundle, init_repo, root_chain

NOT_BEFORE = datetime(2026, 12, 1, tzinfo=UTC)


def make_bundle(top: Path, size_mb: int) -> tuple[Path, bytes]:
    """A signed bundle of a ~size_mb model and the vendor's first root."""
    keys = [CryptoSigner.generate_ed25519() for _ in range(4)]
    root, targets, snapshot, timestamp = keys
    init_repo(
        top / "repo", [root], 1,
        {"targets": [targets.public_key], "snapshot": [snapshot.public_key],
         "timestamp": [timestamp.public_key]},
        1, NOT_BEFORE + timedelta(days=3650),
    )  # fmt: skip
    model = build_model_dir(top / "model", name="risk-big", version="1.0.0", size_mb=size_mb)
    built = build_bundle(
        model, top / "repo", RoleSigners([targets], [snapshot], [timestamp]), top / "out.aplbundle",
        not_before=NOT_BEFORE,
    )  # fmt: skip
    return built.path, root_chain(top / "repo")[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="model size (default 200 MB)")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="updb", dir="/tmp"))
    try:
        print(f"update benchmark: building and signing a {args.size_mb} MB bundle ...", flush=True)
        bundle, root = make_bundle(top, args.size_mb)
        size = bundle.stat().st_size
        with Swtpm(top / "tpm", sock=top / "s") as swtpm:
            config = Config(state_dir=top / "state", tcti=swtpm.tcti)
            with open_tpm(swtpm.tcti) as tpm:
                core.enroll(tpm, config)
            with open_runtime(config) as rt:
                marks: dict[str, float] = {}

                def progress(event: ProgressEvent) -> None:
                    marks.setdefault(f"{event.phase}-first", time.perf_counter())
                    marks[f"{event.phase}-last"] = time.perf_counter()

                agent = make_agent(rt, "bench", progress)
                import_vendor_root(agent.paths, root)
                start = time.perf_counter()
                state = agent.install(bundle)
                if state.phase is not Phase.DONE:
                    print(f"install failed: {state.reason}")
                    return 1
        data = bundle.read_bytes()
        t0 = time.perf_counter()
        hashlib.sha256(data).digest()
        sha_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(top, ignore_errors=True)
    report(size / 1e6, sha_s, {k: v - start for k, v in marks.items()})
    return 0


def report(mb: float, sha_s: float, marks: dict[str, float]) -> None:
    """The table and the ``name: value`` lines, from progress marks in seconds since the start."""
    install_s = marks["install-last"]
    gate_s = marks["commit-last"] - marks["install-last"]
    ratio = sha_s / install_s
    rows = [
        ("verify + install (ours: read, TUF, hash, encrypt, fsync)", install_s, mb / install_s),
        ("  verify: TUF, then each file read, hashed, encrypted", marks["verify-last"], None),
        (
            "  install: fsync each file once, slot.json, stage",
            install_s - marks["verify-last"],
            None,
        ),
        ("peer: hashlib.sha256 over the bytes in memory", sha_s, mb / sha_s),
        ("validation gate (decrypt, compile, 200 reference cases)", gate_s, None),
    ]
    print(f"\n{'measure':<58} {'seconds':>8} {'MB/s':>8}")
    print("-" * 76)
    for name, secs, rate in rows:
        print(f"{name:<58} {secs:>8.3f} {'' if rate is None else f'{rate:8.0f}':>8}")
    print(f"\nbundle {mb:.0f} MB; ours runs at {ratio:.2f}x the hashing limit\n")
    print(f"install_vs_sha256_limit_ratio: {ratio:.2f}")
    print(f"validation_gate_s: {gate_s:.2f}")


if __name__ == "__main__":
    sys.exit(main())
