"""``appliance-vendor`` (also ``python -m provisioning``): the vendor's command line.

The work is done in :mod:`provisioning.vendor`; this module parses arguments, loads key files,
prints progress to stderr and the result to stdout, and is the only place that exits.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from securesystemslib.signer._crypto_signer import CryptoSigner
from securesystemslib.signer._key import Key
from tuf.api._payload import Root

from appliance.errors import ApplianceError
from appliance.updates.errors import VendorRepoError
from appliance.updates.verify import TIME_FORMAT
from provisioning.vendor import (
    ROLES,
    RoleSigners,
    build_bundle,
    check_key_role,
    create_key,
    current_root,
    init_repo,
    load_public_key,
    load_signer,
    rotate_root,
)

EPILOG = """\
a first bundle:
  appliance-vendor keys create --role root --out keys/root1.pem        (and root2, root3 ...)
  appliance-vendor keys create --role targets --out keys/targets1.pem  (and targets2, targets3)
  appliance-vendor keys create --role snapshot --out keys/snapshot.pem
  appliance-vendor keys create --role timestamp --out keys/timestamp.pem
  appliance-vendor repo init --repo repo --root-key keys/root{1,2,3}.pem --root-threshold 2 \\
      --targets-key keys/targets{1,2,3}.pem --targets-threshold 2 \\
      --snapshot-key keys/snapshot.pem --timestamp-key keys/timestamp.pem
  appliance-vendor bundle build models/chest-xray --repo repo --out /media/usb \\
      --targets-key keys/targets1.pem --targets-key keys/targets2.pem \\
      --snapshot-key keys/snapshot.pem --timestamp-key keys/timestamp.pem

Give the box repo/metadata/1.root.json when it is provisioned. Keep the key files offline.
"""


def _parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    help_: str,
) -> argparse.ArgumentParser:
    """A command whose --help repeats, under its usage line, what the list says it does."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance-vendor",
        description="Vendor tool: signing keys, the TUF repository and signed model bundles.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = p.add_subparsers(dest="group", metavar="GROUP", required=True)
    _add_keys(_parser(groups, "keys", "signing keys"))
    _add_repo(_parser(groups, "repo", "the vendor repository"))
    _add_root(_parser(groups, "root", "root metadata: keys, thresholds, expiry"))
    _add_bundle(_parser(groups, "bundle", "signed model bundles"))
    _add_report(_parser(groups, "report", "health reports exported by boxes"))
    return p


def _fingerprint(text: str) -> str:
    """--ak: a mistyped fingerprint is a usage error, not a report from another TPM."""
    value = text.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"'{text}' is not a SHA-256 fingerprint (64 hex digits)")
    return value


def _add_report(group: argparse.ArgumentParser) -> None:
    sub = group.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    rv = _parser(sub, "verify", "check a box's signed health report (TPM quote)")
    rv.add_argument("file", type=Path, metavar="FILE", help="the health-*.json from the box")
    rv.add_argument(
        "--ak", required=True, metavar="SHA256", type=_fingerprint,
        help="the box's attestation key fingerprint, recorded when it was built",
    )  # fmt: skip
    rv.set_defaults(func=_cmd_report_verify)


def _cmd_report_verify(args: argparse.Namespace) -> int:
    from provisioning.report import load_report, verify_report

    doc = load_report(args.file)
    checks = verify_report(doc, args.ak)
    for check in checks:
        print(check)
    box = doc.get("body", {}).get("box", {})
    if all(c.ok for c in checks):
        print(f"report of {box.get('box_id')} ({box.get('site')}), {box.get('created')}: VERIFIED")
        return 0
    print("report NOT verified: do not rely on anything in it; ask the site for a new export")
    return 1


def _add_keys(group: argparse.ArgumentParser) -> None:
    sub = group.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    kc = _parser(sub, "create", "create an Ed25519 key file (0600) and its .pub file")
    kc.add_argument("--role", choices=ROLES, required=True, help="the role the key will sign for")
    kc.add_argument("--out", type=Path, required=True, help="private key file to create")
    kc.set_defaults(func=_cmd_keys_create)


def _add_repo(group: argparse.ArgumentParser) -> None:
    sub = group.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    ri = _parser(sub, "init", "create root version 1 in a new repository folder")
    _repo_args(ri)
    _role_args(ri, required=True)
    ri.set_defaults(func=_cmd_repo_init)


def _add_root(group: argparse.ArgumentParser) -> None:
    sub = group.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    rr = _parser(
        sub,
        "rotate",
        "write root N+1 (new keys, thresholds or a later expiry), signed by the old "
        "root's threshold and the new one's",
    )
    _repo_args(rr)
    rr.add_argument(
        "--sign-with",
        type=Path,
        action="extend",
        nargs="+",
        required=True,
        metavar="KEY",
        help="current root key files, up to the current root threshold",
    )
    _role_args(rr, required=False)
    rr.set_defaults(func=_cmd_root_rotate)


def _add_bundle(group: argparse.ArgumentParser) -> None:
    sub = group.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    bb = _parser(sub, "build", "build, sign and write one bundle file for a model folder")
    bb.add_argument(
        "model_dir",
        type=Path,
        metavar="MODEL_DIR",
        help="folder with manifest.json, model.xml, model.bin and reference/",
    )
    _repo_args(bb)
    for role in ROLES[1:]:
        bb.add_argument(
            f"--{role}-key",
            type=Path,
            action="append",
            required=True,
            metavar="KEY",
            help=f"a {role} private key file (repeat to reach the threshold)",
        )
    bb.add_argument("--out", type=Path, required=True, help="a folder (a USB mount) or a file")
    bb.add_argument("--not-before", help="signed not-before, ISO 8601 (default: now)")
    bb.add_argument("--version", type=int, help="bundle number (default: the last one + 1)")
    bb.add_argument("--gzip", action="store_true", help="compress the bundle with gzip")
    bb.set_defaults(func=_cmd_bundle_build)


def _days(text: str) -> int:
    """--expires-days: metadata that expires at once would be refused by every box."""
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"{days}: the metadata must stay valid at least 1 day")
    return days


def _repo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", type=Path, required=True, help="the vendor repository folder")
    p.add_argument(
        "--expires-days", type=_days, default=365, metavar="DAYS",
        help="how long the signed metadata stays valid (default 365 days)",
    )  # fmt: skip


def _role_args(p: argparse.ArgumentParser, *, required: bool) -> None:
    for role in ROLES:
        what = "private key files" if role == "root" else "key files (private or .pub)"
        p.add_argument(
            f"--{role}-key",
            type=Path,
            action="extend",
            nargs="+",
            metavar="KEY",
            required=required,
            help=f"{role} {what}, one or more",
        )
    for role in ("root", "targets"):
        p.add_argument(
            f"--{role}-threshold",
            type=int,
            required=required and role == "root",
            help=f"signatures the {role} role needs",
        )


def _expiry(args: argparse.Namespace) -> datetime:
    return datetime.now(UTC) + timedelta(days=args.expires_days)


def _cmd_keys_create(args: argparse.Namespace) -> int:
    keyid = create_key(args.out, args.role)
    print(f"created {args.role} key {keyid}\n  private: {args.out} (keep it offline)")
    print(f"  public:  {args.out}.pub")
    return 0


def _signer(path: Path, role: str, root: Root | None, *, new: bool = False) -> CryptoSigner:
    """The private key in ``path``, refused at once if it is not a ``role`` key."""
    signer = load_signer(path)
    check_key_role(path, signer.public_key, role, root, new=new)
    return signer


def _public_key(path: Path, role: str, root: Root | None) -> Key:
    """The public key of a key (a private or .pub file) that a role is to get."""
    key = load_public_key(path, role)
    check_key_role(path, key, role, root, new=True)
    return key


def _cmd_repo_init(args: argparse.Namespace) -> int:
    keys = {r: [_public_key(f, r, None) for f in getattr(args, f"{r}_key")] for r in ROLES[1:]}
    signers = [_signer(f, "root", None) for f in args.root_key]
    threshold = args.targets_threshold or 1
    path = init_repo(args.repo, signers, args.root_threshold, keys, threshold, _expiry(args))
    print(f"wrote {path}: root v1; give this file to the boxes when they are provisioned")
    return 0


def _cmd_root_rotate(args: argparse.Namespace) -> int:
    root = current_root(args.repo)
    changes: dict[str, tuple[Sequence[Key] | None, int | None]] = {}
    for role in ROLES[1:]:
        files = getattr(args, f"{role}_key")
        threshold = getattr(args, f"{role}_threshold", None)
        if files or threshold:
            keys = [_public_key(f, role, root) for f in files] if files else None
            changes[role] = (keys, threshold)
    if args.root_threshold:
        changes["root"] = (None, args.root_threshold)
    old = [_signer(f, "root", root) for f in args.sign_with]
    new = [_signer(f, "root", root, new=True) for f in args.root_key or ()]
    path = rotate_root(args.repo, old, new, changes, _expiry(args))
    print(f"wrote {path}; every bundle built from now on carries it")
    return 0


def _cmd_bundle_build(args: argparse.Namespace) -> int:
    root = current_root(args.repo)
    signers = RoleSigners(
        *([_signer(f, r, root) for f in getattr(args, f"{r}_key")] for r in ROLES[1:])
    )
    not_before = None
    if args.not_before:
        try:
            not_before = datetime.fromisoformat(args.not_before)
        except ValueError:
            raise VendorRepoError(
                f"--not-before '{args.not_before}' is not ISO 8601.",
                "Write it like 2026-12-01T00:00:00Z.",
            ) from None
        if not_before.tzinfo is None:
            not_before = not_before.replace(tzinfo=UTC)
    built = build_bundle(
        args.model_dir,
        args.repo,
        signers,
        args.out,
        not_before=not_before,
        version=args.version,
        expires_days=args.expires_days,
        compress=args.gzip,
        progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
    )
    m = built.manifest
    print(f"wrote {built.path}")
    print(f"  model       {m.name} {m.version} ({m.task})")
    print(
        f"  bundle      version {built.version}, root v{built.root_version}, "
        f"not before {built.not_before:{TIME_FORMAT}}"
    )
    print(f"  size        {built.size} bytes")
    print(f"  sha256      {built.sha256} (of the file: publish it)")
    print(f"  bundle id   {built.bundle_id} (the box's provenance calls it bundle_sha256)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; print errors with what to do; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
    except ApplianceError as exc:
        print(f"appliance-vendor: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"appliance-vendor: what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nappliance-vendor: error: interrupted (Ctrl-C) before the command finished.",
              file=sys.stderr)  # fmt: skip
        print("appliance-vendor: what to do: Run it again; a bundle is written under a "
              "temporary name, so no half-written bundle is left (its number may be skipped).",
              file=sys.stderr)  # fmt: skip
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # the reader (`| head`) went away: stop as SIGPIPE would
    return code


if __name__ == "__main__":
    raise SystemExit(main())
