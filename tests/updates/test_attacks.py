"""Threat scenarios for update bundles: one named test per attack, each refused with a named error.

Every bundle is a real file with real Ed25519 signatures (see conftest.RepoSim); the box side is
``verify_bundle`` with a trusted root, a floor (the TPM counter's value) and a box profile.
"""

from __future__ import annotations

import copy
import io
import json
import re
import tarfile
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, Root, Timestamp

from appliance.errors import ApplianceError
from appliance.updates import BoxProfile, TrustedState, load_trusted_state, save_trusted_state
from appliance.updates.agent import AgentPaths, import_vendor_root
from appliance.updates.bundle import METADATA_BUDGET
from appliance.updates.errors import (
    BundleFormatError,
    BundleSizeError,
    IncompatibleBundleError,
    ManifestError,
    MetadataError,
    MetadataExpiredError,
    RollbackError,
    SignatureError,
    TargetIntegrityError,
    TrustedStateError,
    UnsafeMemberError,
)
from provisioning.vendor import RoleSigners

from .conftest import (
    NOT_BEFORE,
    Member,
    RepoSim,
    file_member,
    manifest_doc,
    model_bin,
    new_keys,
    read_members,
    replace,
    rewrite,
    verify,
)

MODEL = "targets/chest-xray/1.0.0/model.bin"


class EndlessSource(io.RawIOBase):
    """Serves ``prefix``, then ``filler`` forever; counts the bytes it served."""

    def __init__(self, prefix: bytes, filler: bytes = b"A") -> None:
        self.prefix, self.filler, self.served = prefix, filler, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray | memoryview) -> int:
        n = len(buf)
        head = self.prefix[self.served : self.served + n]
        data = head + self.filler * (n - len(head))
        buf[:n] = data
        self.served += n
        return n


def tar_prefix(members: list[Member]) -> bytes:
    """The tar bytes of ``members`` without the end-of-archive blocks."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
        size = out.tell()  # before close() adds the end-of-archive blocks
    return out.getvalue()[:size]


def insert_first(path: Path, member: Member, suffix: str) -> Path:
    return rewrite(path, lambda ms: [member, *ms], suffix)


def swap_member(path: Path, name: str, member: Member) -> Path:
    return rewrite(path, lambda ms: [member if i.name == name else (i, d) for i, d in ms])


# --- the honest path -----------------------------------------------------------------------------


def test_correct_bundle_verifies_and_yields_exact_model_bytes(sim: RepoSim) -> None:
    bundle = sim.build("1.0.0")
    verified = verify(bundle, sim.trusted(), floor=0)
    assert verified.version == 1
    assert verified.root_version == 1
    assert verified.manifest.name == "chest-xray" and str(verified.manifest.version) == "1.0.0"
    assert verified.file("model.bin") == model_bin("1.0.0")
    assert verified.file("model.xml").startswith(b"<?xml")
    assert verified.file("reference/labels.csv").startswith(b"case-id")
    assert {t.path.split("/", 2)[2] for t in verified.targets} == {
        "manifest.json",
        "model.xml",
        "model.bin",
        "reference/labels.csv",
    }
    assert verified.not_before == NOT_BEFORE


def test_gzipped_bundle_and_next_bundle_verify(sim: RepoSim, tmp_path: Path) -> None:
    first = verify(sim.build("1.0.0"), sim.trusted(), 0)
    save_trusted_state(tmp_path / "trusted", first.trusted)
    second = verify(sim.build("1.1.0", compress=True), load_trusted_state(tmp_path / "trusted"), 1)
    assert second.version == 2
    assert second.file("model.bin") == model_bin("1.1.0")


# --- signatures ----------------------------------------------------------------------------------


def test_unsigned_bundle_is_refused(sim: RepoSim) -> None:
    bundle = sim.forge(1, RoleSigners([], [], []))
    with pytest.raises(SignatureError, match=r"timestamp v1 is unsigned"):
        verify(bundle, sim.trusted())


def test_bundle_signed_with_wrong_key_is_refused(sim: RepoSim) -> None:
    attacker = new_keys(4)
    bundle = sim.forge(1, RoleSigners(attacker[:2], [attacker[2]], [attacker[3]]))
    with pytest.raises(SignatureError, match=r"not trusted for timestamp") as err:
        verify(bundle, sim.trusted())
    assert attacker[3].public_key.keyid[:16] in str(err.value)
    assert "0 of the 1 timestamp keys" in str(err.value)


def test_forged_bundle_numbered_at_the_floor_is_reported_as_forged(sim: RepoSim) -> None:
    """The bundle number is read only from a verified timestamp: a forgery is never "just old"."""
    attacker = new_keys(4)
    bundle = sim.forge(1, RoleSigners(attacker[:2], [attacker[2]], [attacker[3]]))
    with pytest.raises(SignatureError, match=r"not trusted for timestamp"):
        verify(bundle, sim.trusted(), floor=1)


def test_targets_below_threshold_is_refused(sim: RepoSim) -> None:
    bundle = sim.forge(1, sim.signers(sim.targets_keys[:1]))
    with pytest.raises(SignatureError, match=r"targets v1 .* 1 of the 2 targets keys"):
        verify(bundle, sim.trusted())


def test_root_rotation_with_old_threshold_is_accepted(sim: RepoSim) -> None:
    new_root, new_targets = new_keys(3), new_keys(3)
    targets_change = ([k.public_key for k in new_targets], 2)
    sim.rotate(sim.root_keys[:2], new_root, targets=targets_change)
    sim.targets_keys = new_targets
    verified = verify(sim.build("1.1.0"), sim.trusted())
    assert verified.root_version == 2
    assert Metadata[Root].from_bytes(verified.trusted.root).signed.version == 2
    # The box now trusts root v2 alone: the next bundle verifies from it.
    assert verify(sim.build("1.2.0"), verified.trusted, verified.version).version == 2


def test_root_rotation_without_old_threshold_is_refused(sim: RepoSim) -> None:
    current = Metadata[Root].from_bytes(sim.first_root()).signed
    new_root = new_keys(3)
    forged = Metadata(copy.deepcopy(current))
    forged.signed.version = 2
    for keyid in list(forged.signed.roles["root"].keyids):
        forged.signed.revoke_key(keyid, "root")
    for key in new_root:
        forged.signed.add_key(key.public_key, "root")
    for signer in [*new_root, sim.root_keys[0]]:  # one old key: below the old threshold of 2
        forged.sign(signer, append=True)
    (sim.repo / "metadata" / "2.root.json").write_bytes(forged.to_bytes())
    bundle = sim.forge(1, sim.signers())
    with pytest.raises(
        SignatureError, match=r"root v2 is signed by 1 of the 2 root keys that root v1"
    ):
        verify(bundle, sim.trusted())


def test_revoked_key_is_refused(sim: RepoSim) -> None:
    revoked, kept = sim.targets_keys[0], sim.targets_keys[1:]
    assert verify(sim.forge(1, sim.signers([revoked, kept[0]])), sim.trusted()).version == 1
    replacement = new_keys(1)
    keys = [k.public_key for k in [*kept, *replacement]]
    sim.rotate(sim.root_keys[:2], targets=(keys, 2))
    bundle = sim.forge(2, sim.signers([revoked, kept[0]]))
    with pytest.raises(SignatureError, match=r"unknown or revoked") as err:
        verify(bundle, sim.trusted(), floor=1)
    assert revoked.public_key.keyid[:16] in str(err.value)
    assert "1 of the 2 targets keys that root v2 requires" in str(err.value)


# --- freshness and rollback ----------------------------------------------------------------------


def test_older_version_is_refused(sim: RepoSim) -> None:
    old, new = sim.build("1.0.0"), sim.build("1.1.0")
    installed = verify(new, sim.trusted(), 0)
    with pytest.raises(
        RollbackError, match=r"bundle version 1 is not above the anti-rollback floor 2"
    ):
        verify(old, installed.trusted, floor=installed.version)


def test_same_version_replayed_is_refused(sim: RepoSim) -> None:
    bundle = sim.build("1.0.0")
    installed = verify(bundle, sim.trusted(), 0)
    with pytest.raises(RollbackError, match=r"version 1 is not above .* floor 1 .*replay"):
        verify(bundle, installed.trusted, floor=installed.version)


def test_local_metadata_rolled_back_while_counter_holds_is_refused(
    sim: RepoSim, tmp_path: Path
) -> None:
    folder = tmp_path / "trusted"
    first, second = sim.build("1.0.0"), sim.build("1.1.0")
    after_first = verify(first, sim.trusted(), 0).trusted
    after_second = verify(second, after_first, 1).trusted
    save_trusted_state(folder, after_second)  # committed: the counter is now 2
    save_trusted_state(folder, after_first)  # an attacker restores the older folder
    rolled_back = load_trusted_state(folder)
    # TUF's own check against the (rolled back) local timestamp would let bundle 2 in again...
    assert verify(second, rolled_back, floor=1).version == 2
    # ...the TPM counter does not.
    with pytest.raises(RollbackError, match=r"not above the anti-rollback floor 2 held in the TPM"):
        verify(second, rolled_back, floor=2)


def test_replay_while_the_counter_lags_is_refused_by_local_metadata(sim: RepoSim) -> None:
    """Power lost between persisting the metadata and advancing the counter: TUF's own check."""
    bundle = sim.build("1.0.0")
    persisted = verify(bundle, sim.trusted(), 0).trusted  # the counter still holds 0
    with pytest.raises(RollbackError, match=r"timestamp goes back behind the box's trusted"):
        verify(bundle, persisted, floor=0)


def test_old_bundle_re_timestamped_above_the_floor_is_refused(sim: RepoSim) -> None:
    """A stolen timestamp key alone cannot lift an old bundle over the floor."""
    old = sim.build("1.0.0")
    members = read_members(old)
    snapshot = next(d for i, d in members if i.name == "metadata/snapshot.json")
    assert snapshot is not None
    ts = Metadata(
        Timestamp(
            5, None, NOT_BEFORE + timedelta(days=30), MetaFile.from_data(1, snapshot, ["sha256"])
        )
    )
    ts.sign(sim.timestamp_key)
    bundle = replace(old, "metadata/timestamp.json", ts.to_bytes())
    with pytest.raises(
        MetadataError, match=r"versions differ: timestamp v5, snapshot v1, targets v1"
    ):
        verify(bundle, sim.trusted(), floor=3)


def test_metadata_expired_before_last_accepted_not_before_is_refused(sim: RepoSim) -> None:
    installed = verify(
        sim.build("1.0.0", not_before=datetime(2027, 6, 1, tzinfo=UTC)), sim.trusted()
    )
    stale = sim.forge(
        2, sim.signers(), not_before=NOT_BEFORE, expires=datetime(2027, 1, 1, tzinfo=UTC)
    )
    with pytest.raises(
        MetadataExpiredError,
        match=r"timestamp.json is expired: it expired before 2027-06-01T00:00:00Z, the newest",
    ):
        verify(stale, installed.trusted, floor=1)


def test_expiry_is_judged_by_signed_time_not_the_box_clock(sim: RepoSim) -> None:
    """Metadata long expired by the wall clock is fine while no newer signed time was seen."""
    start = datetime(2020, 1, 1, tzinfo=UTC)
    bundle = sim.forge(1, sim.signers(), not_before=start, expires=start + timedelta(days=30))
    assert verify(bundle, sim.trusted()).version == 1


def test_metadata_expired_before_its_own_signed_not_before_is_refused(sim: RepoSim) -> None:
    """A first bundle (no signed time seen yet) is still judged by the time it signs itself."""
    stale = sim.forge(1, sim.signers(), expires=NOT_BEFORE - timedelta(days=1))
    with pytest.raises(
        MetadataExpiredError,
        match=r"timestamp v1 expired on 2026-11-30T00:00:00Z, before 2026-12-01T00:00:00Z",
    ):
        verify(stale, sim.trusted())
    # The vendor root too: a bundle signed after the root's expiry needs a rotated root.
    late = sim.forge(1, sim.signers(), not_before=NOT_BEFORE + timedelta(days=3651))
    with pytest.raises(MetadataExpiredError, match=r"root v1 expired on "):
        verify(late, sim.trusted())


# --- mixing bundles ------------------------------------------------------------------------------


def test_mix_and_match_target_from_another_bundle_is_refused(sim: RepoSim) -> None:
    older = read_members(sim.build("1.0.0"))
    other = read_members(sim.build("1.0.0", name="brain-ct"))
    bundle = sim.build("1.1.0")
    # The same file of another bundle (same length, signed there, not here).
    old_bin = next(d for i, d in older if i.name.endswith("model.bin"))
    assert old_bin is not None and len(old_bin) == len(model_bin("1.1.0"))
    swapped = replace(bundle, "model.bin", old_bin)
    with pytest.raises(TargetIntegrityError, match=r"model.bin' has sha256 .*hash mismatch"):
        verify(swapped, sim.trusted())
    # A target of another model, smuggled in next to the signed ones.
    brain = next(m for m in other if m[0].name.endswith("brain-ct/1.0.0/model.bin"))
    smuggled = rewrite(bundle, lambda ms: [*ms, brain], "smuggled")
    with pytest.raises(
        BundleFormatError, match=r"brain-ct/1.0.0/model.bin' is not one of the signed"
    ):
        verify(smuggled, sim.trusted())


def test_mix_and_match_metadata_from_another_bundle_is_refused(sim: RepoSim) -> None:
    first, second = read_members(sim.build("1.0.0")), sim.build("1.1.0")
    old_targets = next(d for i, d in first if i.name == "metadata/targets.json")
    assert old_targets is not None
    mixed = replace(second, "metadata/targets.json", old_targets)
    with pytest.raises(MetadataError, match=r"targets.json does not match .* mixes metadata"):
        verify(mixed, sim.trusted())


def test_bundle_missing_a_signed_target_is_refused(sim: RepoSim) -> None:
    dropped = rewrite(sim.build(), lambda ms: [m for m in ms if m[0].name != MODEL], "dropped")
    with pytest.raises(BundleFormatError, match=rf"the bundle lacks {MODEL}: it is truncated"):
        verify(dropped, sim.trusted())


def test_signed_file_the_manifest_does_not_list_is_refused(sim: RepoSim) -> None:
    """The signed targets and the manifest's files must be the same set: nothing rides along."""
    bundle = sim.forge(1, sim.signers(), extra={"payload.so": b"\x7fELF"})
    with pytest.raises(
        ManifestError, match=r"does not match the signed targets: .*chest-xray/1.0.0/payload.so"
    ):
        verify(bundle, sim.trusted())


@pytest.mark.parametrize("hashes", [("md5",), ("sha256", "md5")])
def test_target_without_sha256_or_with_an_unknown_hash_is_refused(
    sim: RepoSim, hashes: tuple[str, ...]
) -> None:
    bundle = sim.forge(1, sim.signers(), hashes=hashes)
    with pytest.raises(MetadataError, match=r"lacks a sha256 or has unknown hashes"):
        verify(bundle, sim.trusted())


# --- sizes and integrity -------------------------------------------------------------------------


def test_oversized_target_is_refused(sim: RepoSim) -> None:
    bundle = replace(sim.build(), "model.bin", lambda data: data + b"\0" * 100)
    with pytest.raises(
        TargetIntegrityError, match=r"model.bin' holds 4196 bytes .* 4096 \(oversized\)"
    ):
        verify(bundle, sim.trusted())


def test_endless_target_stream_is_refused(sim: RepoSim) -> None:
    members = read_members(sim.build())
    head = [m for m in members if not m[0].name.endswith("model.bin")][:-1]  # up to model.xml
    endless = tarfile.TarInfo(MODEL)
    endless.size = 1 << 40  # a terabyte that never ends
    source = EndlessSource(tar_prefix(head) + endless.tobuf(tarfile.PAX_FORMAT))
    with pytest.raises(
        TargetIntegrityError, match=r"model.bin' holds 1099511627776 bytes .*oversized"
    ):
        verify(io.BufferedReader(source), sim.trusted())
    assert source.served < 1 << 20
    # An endless pax header (read by tarfile before any member) hits the byte budget instead.
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 1 << 32
    source = EndlessSource(pax.tobuf(tarfile.USTAR_FORMAT))
    with pytest.raises(BundleSizeError, match=r"more than its signed metadata allows"):
        verify(io.BufferedReader(source), sim.trusted())
    assert source.served < METADATA_BUDGET * 2


def test_endless_header_after_the_signed_targets_is_refused(sim: RepoSim) -> None:
    """Once verified, the budget grows by the signed lengths only: not for what follows them."""
    members = read_members(sim.build())
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 64 << 20
    source = EndlessSource(tar_prefix(members) + pax.tobuf(tarfile.USTAR_FORMAT))
    with pytest.raises(BundleSizeError, match=r"more than its signed metadata allows"):
        verify(io.BufferedReader(source), sim.trusted())
    assert source.served < METADATA_BUDGET * 2


def test_hash_mismatch_is_refused(sim: RepoSim) -> None:
    flipped = replace(sim.build(), "model.bin", lambda d: bytes([d[0] ^ 1]) + d[1:])
    with pytest.raises(TargetIntegrityError, match=r"model.bin' has sha256 .*hash mismatch"):
        verify(flipped, sim.trusted())


def test_truncated_target_is_refused(sim: RepoSim) -> None:
    short = replace(sim.build(), "model.bin", lambda d: d[:-10])
    with pytest.raises(TargetIntegrityError, match=r"holds 4086 bytes .* 4096 \(truncated\)"):
        verify(short, sim.trusted())


def test_truncated_bundle_file_is_refused(sim: RepoSim) -> None:
    bundle = sim.build()
    data = bundle.read_bytes()
    cut = data.index(model_bin("1.0.0")[:512]) + 1000  # in the middle of model.bin
    bundle.write_bytes(data[:cut])
    with pytest.raises(BundleFormatError, match=r"truncated"):
        verify(bundle, sim.trusted())


def test_decompression_bomb_is_refused(sim: RepoSim, tmp_path: Path) -> None:
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 64 << 20
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip framing
    parts = [packer.compress(pax.tobuf(tarfile.USTAR_FORMAT))]
    zeros = bytes(1 << 20)
    parts += [packer.compress(zeros) for _ in range(64)]
    bomb = tmp_path / "bomb.aplbundle"
    bomb.write_bytes(b"".join([*parts, packer.flush()]))
    assert bomb.stat().st_size < 1 << 20  # 64 MiB of zeros in well under 1 MiB
    with pytest.raises(BundleSizeError, match=r"decompresses to more than \d+ bytes"):
        verify(bomb, sim.trusted())


def test_oversized_metadata_file_is_refused(sim: RepoSim) -> None:
    bundle = replace(sim.build(), "metadata/targets.json", lambda d: d + b" " * (1 << 20))
    with pytest.raises(BundleSizeError, match=r"metadata/targets.json' claims \d+ bytes"):
        verify(bundle, sim.trusted())


def test_oversized_signed_manifest_is_refused(sim: RepoSim) -> None:
    """The manifest is the one target kept whole in memory: even signed, it is capped at 1 MiB."""
    padded = json.dumps(manifest_doc("chest-xray", "1.0.0")).encode() + b" " * (3 << 20)
    bundle = sim.forge(1, sim.signers(), extra={"manifest.json": padded})
    with pytest.raises(ManifestError, match=r"1.0.0/manifest.json is over 1 MiB"):
        verify(bundle, sim.trusted())


# --- members that are not plain files ------------------------------------------------------------


def test_path_traversal_member_is_refused(sim: RepoSim) -> None:
    bundle = insert_first(sim.build(), file_member("targets/../../etc/cron.d/evil", b"x"), "dotdot")
    with pytest.raises(
        UnsafeMemberError, match=r"'targets/../../etc/cron.d/evil' .*path traversal"
    ):
        verify(bundle, sim.trusted())


def test_absolute_path_member_is_refused(sim: RepoSim) -> None:
    bundle = insert_first(sim.build(), file_member("/etc/passwd", b"root::0:0::/:/bin/sh\n"), "abs")
    with pytest.raises(UnsafeMemberError, match=r"'/etc/passwd' has an absolute path"):
        verify(bundle, sim.trusted())


def test_symlink_member_is_refused(sim: RepoSim) -> None:
    link = tarfile.TarInfo(MODEL)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    bundle = swap_member(sim.build(), MODEL, (link, None))
    with pytest.raises(
        UnsafeMemberError, match=r"model.bin' is a symbolic link \(to '/etc/shadow'\)"
    ):
        verify(bundle, sim.trusted())


def test_hard_link_member_is_refused(sim: RepoSim) -> None:
    link = tarfile.TarInfo(MODEL)
    link.type, link.linkname = tarfile.LNKTYPE, "targets/chest-xray/1.0.0/model.xml"
    bundle = swap_member(sim.build(), MODEL, (link, None))
    with pytest.raises(UnsafeMemberError, match=r"model.bin' is a hard link"):
        verify(bundle, sim.trusted())


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.CHRTYPE, "a device file"),
        (tarfile.BLKTYPE, "a device file"),
        (tarfile.FIFOTYPE, "a FIFO"),
    ],
)
def test_device_file_member_is_refused(sim: RepoSim, kind: bytes, what: str) -> None:
    device = tarfile.TarInfo(MODEL)
    device.type, device.devmajor, device.devminor = kind, 1, 5  # /dev/zero
    bundle = swap_member(sim.build(), MODEL, (device, None))
    with pytest.raises(UnsafeMemberError, match=rf"model.bin' is {what}"):
        verify(bundle, sim.trusted())


@pytest.mark.parametrize("kind", [tarfile.CONTTYPE, b"Z"])
def test_member_of_another_tar_type_is_refused(sim: RepoSim, kind: bytes) -> None:
    """tarfile reads a contiguous file or an unknown type as file data: only plain files pass."""
    odd = tarfile.TarInfo(MODEL)
    odd.type = kind
    bundle = swap_member(sim.build(), MODEL, (odd, model_bin("1.0.0")))
    problem = f"model.bin' is not a regular file (tar type {kind!r})"
    with pytest.raises(UnsafeMemberError, match=re.escape(problem)):
        verify(bundle, sim.trusted())


@pytest.mark.parametrize(
    "name", ["targets/chest-xray/1.0.0/model.bin\x1b[2J", "targets/.hidden", "notes/readme.txt"]
)
def test_member_with_an_unusual_name_is_refused(sim: RepoSim, name: str) -> None:
    bundle = insert_first(sim.build(), file_member(name, b"x"), "odd")
    with pytest.raises(
        UnsafeMemberError, match=r"outside metadata/ and targets/ or with unusual"
    ) as e:
        verify(bundle, sim.trusted())
    # The reason reaches the console and the audit trail: a terminal escape must not.
    assert "\x1b" not in str(e.value) and not any(ord(c) < 32 for c in str(e.value))


def test_duplicate_member_is_refused(sim: RepoSim) -> None:
    bundle = rewrite(sim.build(), lambda ms: [*ms, ms[-1]], "twice")
    with pytest.raises(BundleFormatError, match=r"appears twice"):
        verify(bundle, sim.trusted())


def test_missing_root_in_chain_is_refused(sim: RepoSim) -> None:
    sim.rotate(sim.root_keys[:2])
    bundle = rewrite(sim.build(), lambda ms: [m for m in ms if m[0].name != "metadata/1.root.json"])
    with pytest.raises(BundleFormatError, match=r"lacks 1.root.json"):
        verify(bundle, sim.trusted())


def test_file_that_is_not_a_bundle_is_refused(sim: RepoSim, tmp_path: Path) -> None:
    junk = tmp_path / "junk.aplbundle"
    junk.write_bytes(b"MZ" + bytes(5000))
    with pytest.raises(BundleFormatError, match=r"junk.aplbundle is truncated or not a bundle"):
        verify(junk, sim.trusted())


# --- compatibility -------------------------------------------------------------------------------


def test_incompatible_openvino_version_is_refused(sim: RepoSim) -> None:
    bundle = sim.build(compatibility={"min_openvino": "2025.1", "devices": ["CPU"]})
    with pytest.raises(
        IncompatibleBundleError,
        match=r"needs OpenVINO 2025.1 or newer; this box runs OpenVINO 2024.4.0",
    ):
        verify(bundle, sim.trusted())


def test_incompatible_devices_are_refused(sim: RepoSim) -> None:
    bundle = sim.build(compatibility={"min_openvino": "2024.0", "devices": ["NPU"]})
    box = BoxProfile("2024.4.0", frozenset({"CPU", "GPU.0", "GPU.1"}))
    with pytest.raises(IncompatibleBundleError, match=r"runs on NPU; this box has CPU, GPU"):
        verify(bundle, sim.trusted(), box=box)


# --- the box's own trusted state -----------------------------------------------------------------


def test_tampered_vendor_root_is_refused_at_provisioning(sim: RepoSim) -> None:
    root = sim.first_root().replace(b'"threshold":2', b'"threshold":1', 1)
    assert root != sim.first_root()
    with pytest.raises(TrustedStateError, match=r"not a valid self-signed TUF root"):
        TrustedState.from_root(root)


def test_missing_trusted_root_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TrustedStateError, match=r"holds no trusted vendor root \(root.json\)"):
        load_trusted_state(tmp_path)


def test_a_second_vendor_root_is_not_imported_over_the_first(sim: RepoSim, tmp_path: Path) -> None:
    """Whoever may install updates must not make the box trust their own signing keys."""
    paths = AgentPaths(tmp_path / "updates", tmp_path / "models")
    import_vendor_root(paths, sim.first_root())
    attacker = RepoSim(tmp_path / "attacker")
    with pytest.raises(ApplianceError, match=r"already trusts a vendor root"):
        import_vendor_root(paths, attacker.first_root())
    trusted = load_trusted_state(paths.trusted)
    assert trusted.root == sim.first_root()
    with pytest.raises(SignatureError):
        verify(attacker.build(), trusted)
