"""What the technician sees before an install: the preview reads the signed metadata and the
manifest only, and reports (never raises) signers against thresholds, compatibility, problems."""

from __future__ import annotations

from appliance.updates.preview import preview_bundle
from provisioning.vendor import RoleSigners
from tests.updates.conftest import BOX, RepoSim, new_keys, replace


def test_honest_bundle_shows_model_signers_and_compatibility(sim: RepoSim) -> None:
    p = preview_bundle(sim.build("1.2.0"), sim.trusted(), 0, BOX)
    assert p.installable and p.problem is None
    assert p.manifest is not None and (p.manifest.name, str(p.manifest.version)) == (
        "chest-xray", "1.2.0",
    )  # fmt: skip
    assert p.bundle_version == 1
    roles = {s.role: s for s in p.signers}
    assert roles["targets"].met and len(roles["targets"].signed_by) == 2
    assert roles["targets"].threshold == 2
    assert sim.targets_keys[0].public_key.keyid[:16] in roles["targets"].signed_by
    assert "needs OpenVINO >= 2024.0 on CPU, GPU, NPU; this box: OpenVINO 2024.4.0" in (
        p.compatibility
    )


def test_targets_below_threshold_shows_the_shortfall(sim: RepoSim) -> None:
    p = preview_bundle(sim.forge(1, sim.signers(sim.targets_keys[:1])), sim.trusted(), 0, BOX)
    assert not p.installable
    targets = next(s for s in p.signers if s.role == "targets")
    assert not targets.met
    assert "1 of 2 needed" in str(targets) and "THRESHOLD NOT MET" in str(targets)
    assert p.problem and "1 of the 2 targets keys" in p.problem


def test_attacker_keys_are_not_counted(sim: RepoSim) -> None:
    attacker = new_keys(4)
    bundle = sim.forge(1, RoleSigners(attacker[:2], [attacker[2]], [attacker[3]]))
    p = preview_bundle(bundle, sim.trusted(), 0, BOX)
    assert all(not s.signed_by and not s.met for s in p.signers)
    assert not p.installable


def test_incompatible_model_says_what_it_needs(sim: RepoSim) -> None:
    bundle = sim.build(compatibility={"min_openvino": "2025.1", "devices": ["CPU"]})
    p = preview_bundle(bundle, sim.trusted(), 0, BOX)
    assert not p.compatible and not p.installable
    assert "needs OpenVINO >= 2025.1" in p.compatibility
    assert p.problem and "this box runs OpenVINO 2024.4" in p.problem


def test_replayed_bundle_is_flagged_before_install(sim: RepoSim) -> None:
    p = preview_bundle(sim.build(), sim.trusted(), 1, BOX)
    assert p.problem and "not above the anti-rollback floor 1" in p.problem


def test_swapped_manifest_is_flagged(sim: RepoSim) -> None:
    tampered = replace(sim.build(), "manifest.json", lambda d: d.replace(b"0.91", b"0.51"))
    p = preview_bundle(tampered, sim.trusted(), 0, BOX)
    assert p.problem and "manifest's hash differs" in p.problem
    assert p.manifest is None  # nothing unsigned is shown as if it were the vendor's


def test_junk_file_is_described_not_raised(sim: RepoSim) -> None:
    junk = sim.out / "junk.aplbundle"
    junk.write_bytes(b"not a tar at all" * 100)
    p = preview_bundle(junk, sim.trusted(), 0, BOX)
    assert p.problem and not p.installable
