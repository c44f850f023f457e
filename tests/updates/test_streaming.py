"""Targets larger than one read buffer: hashed in a helper thread while they stream to the sink.

The reader hands each target to the sink in buffers of ``bundle.CHUNK`` bytes while a helper
thread hashes them; these scenarios use targets of several buffers (and odd sizes) so that every
refusal is also checked on that path, plain and gzip'ed.
"""

from __future__ import annotations

import io
import os
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import TargetFile

from appliance.updates import verify_bundle
from appliance.updates.bundle import CHUNK, METADATA_BUDGET, Buffer, Writer, write_bundle
from appliance.updates.errors import (
    BundleFormatError,
    BundleSizeError,
    MetadataError,
    TargetIntegrityError,
)
from appliance.updates.manifest import load_model_dir
from provisioning.vendor import build_bundle, hash_targets, root_chain, sign_roles

from .conftest import BOX, NOT_BEFORE, RepoSim, verify

BIG = 3 * CHUNK + 12345  # several buffers, the last one partial


def big_bundle(sim: RepoSim, weights: bytes, *, compress: bool = False) -> Path:
    folder = sim.model("1.0.0")
    (folder / "model.bin").write_bytes(weights)
    out = sim.out / f"big-{sim.count}.aplbundle"
    return build_bundle(
        folder, sim.repo, sim.signers(), out, not_before=NOT_BEFORE, compress=compress
    ).path


def data_offset(bundle: Path, name_end: str) -> int:
    with tarfile.open(bundle) as tar:
        return next(m.offset_data for m in tar.getmembers() if m.name.endswith(name_end))


class RecordingSink:
    """Keeps what a sink is told: each target's announced length, bytes and whether it closed."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[int, bytearray]] = {}
        self.closed: list[str] = []

    def open(self, path: str, length: int) -> Writer:
        data = bytearray()
        self.files[path] = (length, data)
        sink = self

        class _File:
            def write(self, chunk: Buffer, /) -> int:
                data.extend(chunk)  # copies: the reader reuses its buffers
                return len(chunk)

            def close(self) -> None:
                sink.closed.append(path)

        return _File()


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_large_target_streams_whole_and_verifies(sim: RepoSim, compress: bool) -> None:
    weights = os.urandom(BIG)
    verified = verify(big_bundle(sim, weights, compress=compress), sim.trusted())
    assert verified.file("model.bin") == weights


def test_sink_gets_signed_lengths_every_byte_and_progress_up_to_the_total(sim: RepoSim) -> None:
    weights = os.urandom(BIG)
    sink, seen = RecordingSink(), []
    verify_bundle(
        big_bundle(sim, weights), sim.trusted(), 0, BOX, sink=sink,
        progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    length, data = sink.files["chest-xray/1.0.0/model.bin"]
    assert (length, bytes(data)) == (BIG, weights)
    assert all(len(d) == n for n, d in sink.files.values())
    assert sorted(sink.closed) == sorted(sink.files)
    total = sum(n for n, _ in sink.files.values())
    assert seen[-1] == (total, total) and len(seen) <= 101  # each percent, not each buffer
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_bit_flip_deep_in_a_large_target_is_refused(sim: RepoSim) -> None:
    bundle = big_bundle(sim, os.urandom(BIG))
    data = bytearray(bundle.read_bytes())
    data[data_offset(bundle, "model.bin") + 2 * CHUNK + 7] ^= 0x01  # in the third buffer
    bundle.write_bytes(bytes(data))
    with pytest.raises(TargetIntegrityError, match=r"model.bin' has sha256 .*hash mismatch"):
        verify(bundle, sim.trusted())


def test_large_target_cut_short_mid_buffer_is_refused(sim: RepoSim) -> None:
    bundle = big_bundle(sim, os.urandom(BIG))
    cut = data_offset(bundle, "model.bin") + CHUNK + CHUNK // 2
    bundle.write_bytes(bundle.read_bytes()[:cut])
    with pytest.raises(BundleFormatError, match=r"truncated .*model.bin.*unexpected end of data"):
        verify(bundle, sim.trusted())


def test_sink_is_closed_when_the_stream_breaks_off(sim: RepoSim) -> None:
    """A sink must learn that a target ended early (so it never counts as complete)."""
    bundle = big_bundle(sim, os.urandom(BIG))
    bundle.write_bytes(bundle.read_bytes()[: data_offset(bundle, "model.bin") + CHUNK + 5])
    sink = RecordingSink()
    with pytest.raises(BundleFormatError):
        verify_bundle(bundle, sim.trusted(), 0, BOX, sink=sink)
    length, data = sink.files["chest-xray/1.0.0/model.bin"]
    assert len(data) < length and "chest-xray/1.0.0/model.bin" in sink.closed


@pytest.mark.parametrize("size", [1 << 40, 1 << 62], ids=["terabyte", "exabytes"])
def test_header_claiming_a_huge_size_is_refused_without_allocating_it(
    sim: RepoSim, size: int
) -> None:
    """A pax header may claim any size; the reader never allocates past its byte budget."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, size
    head = pax.tobuf(tarfile.GNU_FORMAT)  # base-256 size field: sizes beyond 8 GiB
    source = io.BytesIO(head + bytes(METADATA_BUDGET * 5 // 4))  # more than the budget allows
    with pytest.raises(BundleSizeError, match=r"more than its signed metadata allows"):
        verify_bundle(source, sim.trusted(), 0, BOX)


def test_signed_target_named_like_the_model_folder_is_refused(sim: RepoSim) -> None:
    """Every target must sit inside ``<name>/<version>/``: the slot files are named from that."""
    manifest, files = load_model_dir(sim.model("1.0.0"))
    stray = sim.top / "stray"
    stray.write_bytes(b"x")
    targets = hash_targets(manifest, files)
    targets[manifest.prefix] = TargetFile.from_file(manifest.prefix, str(stray), ["sha256"])
    metadata = sign_roles(targets, 1, NOT_BEFORE, NOT_BEFORE + timedelta(days=30), sim.signers())
    roots = [(f"{i + 1}.root.json", data) for i, data in enumerate(root_chain(sim.repo))]
    roles = [(n, metadata[n]) for n in ("timestamp.json", "snapshot.json", "targets.json")]
    members = [(manifest.prefix, stray)] + [(f"{manifest.prefix}/{n}", p) for n, p in files.items()]
    bundle = sim.out / "stray.aplbundle"
    with bundle.open("wb") as fh:
        write_bundle(fh, roots + roles, members, mtime=0)
    with pytest.raises(MetadataError, match=r"not one model folder <name>/<version>/"):
        verify(bundle, sim.trusted())
