"""``make models`` bundles: every model folder signed into a bundle by a development vendor.

``python -m provisioning.devbundles [--models DIR] [--vendor DIR] [--out DIR]``, defaults
``models``, ``.state/vendor`` and ``build/bundles``.

A real vendor keeps its keys offline and signs with thresholds; a developer needs bundles that a
development box accepts, built the same way. So on first use this creates a development vendor
under ``--vendor`` (``keys/``: one Ed25519 key per role, 0600; ``repo/``: root v1, thresholds 1)
and from then on reuses it, so one imported root keeps accepting every later bundle. Each folder of
``--models`` that holds a ``manifest.json`` (the models/README.md convention) becomes
``<out>/<name>-<version>.aplbundle`` through the ``appliance-vendor`` command line, exactly as a
vendor would run it; the bundle number rises with every build. Folders without a manifest are
named and skipped. Nothing here is committed: ``.state`` and ``build`` are git-ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.run import run
from appliance.updates.manifest import MANIFEST_NAME, load_model_dir
from provisioning.vendor import ROLES

BUILD_TIMEOUT = 600.0  # a large imaging model is hashed and copied: give it minutes


@dataclass(frozen=True)
class DevVendor:
    """Where the development vendor keeps its keys and repository."""

    top: Path

    @property
    def repo(self) -> Path:
        return self.top / "repo"

    @property
    def root(self) -> Path:
        return self.repo / "metadata" / "1.root.json"

    def key(self, role: str) -> Path:
        return self.top / "keys" / f"{role}.pem"


@dataclass(frozen=True)
class BuiltBundle:
    model: str
    path: Path
    summary: str  # the CLI's own report (bundle number, size, digests)


def vendor_cli() -> list[str]:
    """The ``appliance-vendor`` of this interpreter's environment (or the module behind it)."""
    script = Path(sys.executable).parent / "appliance-vendor"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "provisioning"]


def ensure_vendor(vendor: DevVendor, cli: Sequence[str]) -> bool:
    """Create the development vendor unless it exists; return whether it was created now.

    Raises CommandError naming the step that failed. A half-made vendor (keys but no root) is
    finished rather than replaced, so no key is ever overwritten.
    """
    if vendor.root.is_file():
        return False
    vendor.key("root").parent.mkdir(parents=True, exist_ok=True)
    for role in ROLES:
        if not vendor.key(role).is_file():
            run([*cli, "keys", "create", "--role", role, "--out", vendor.key(role)])
    keys = [arg for role in ROLES for arg in (f"--{role}-key", str(vendor.key(role)))]
    run([*cli, "repo", "init", "--repo", vendor.repo, *keys, "--root-threshold", "1",
         "--targets-threshold", "1", "--expires-days", "3650"])  # fmt: skip
    return True


def model_folders(models: Path) -> tuple[list[Path], list[Path]]:
    """The folders of ``models`` with a manifest (to bundle) and without one (skipped)."""
    folders = sorted(p for p in models.iterdir() if p.is_dir() and not p.name.startswith("."))
    with_manifest = [p for p in folders if (p / MANIFEST_NAME).is_file()]
    return with_manifest, [p for p in folders if p not in with_manifest]


def build_one(vendor: DevVendor, folder: Path, out: Path, cli: Sequence[str]) -> BuiltBundle:
    """Sign ``folder`` into ``out/<name>-<version>.aplbundle``; raise ManifestError/CommandError."""
    manifest, _ = load_model_dir(folder)  # a clear error for a broken folder, before signing
    target = out / f"{manifest.name}-{manifest.version}.aplbundle"
    keys = [arg for role in ROLES[1:] for arg in (f"--{role}-key", str(vendor.key(role)))]
    proc = run([*cli, "bundle", "build", folder, "--repo", vendor.repo, "--out", target, *keys],
               timeout=BUILD_TIMEOUT)  # fmt: skip
    return BuiltBundle(f"{manifest.name} {manifest.version}", target, proc.stdout.decode())


def build_all(models: Path, vendor: DevVendor, out: Path) -> list[BuiltBundle]:
    """Bundle every model folder; print what was made, skipped and where."""
    cli = vendor_cli()
    if ensure_vendor(vendor, cli):
        print(f"bundles: created a development vendor in {vendor.top} (keys stay there)")
    folders, skipped = model_folders(models)
    for folder in skipped:
        print(f"bundles: skipped {folder}: no {MANIFEST_NAME} (see models/README.md)")
    out.mkdir(parents=True, exist_ok=True)
    built = []
    for folder in folders:
        bundle = build_one(vendor, folder, out, cli)
        print(f"bundles: {bundle.model} -> {bundle.path}")
        print("".join(f"  {line}\n" for line in bundle.summary.splitlines()[1:]), end="")
        built.append(bundle)
    print(f"bundles: {len(built)} in {out}; a development box trusts them after "
          f"`appliance update import-root {vendor.root}`")  # fmt: skip
    return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m provisioning.devbundles",
        description="Sign every model folder into a development bundle.",
    )
    parser.add_argument("--models", type=Path, default=Path("models"), help="the model folders")
    parser.add_argument(
        "--vendor", type=Path, default=Path(".state/vendor"),
        help="the development vendor (keys, repository), made on first use",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("build/bundles"), help="bundle folder")
    args = parser.parse_args(argv)
    try:
        build_all(args.models, DevVendor(args.vendor), args.out)
    except ApplianceError as exc:
        print(f"bundles: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"bundles: what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
