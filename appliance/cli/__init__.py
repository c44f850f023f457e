"""The ``appliance`` command: the one entry point that builds the Config and exits the process.

Every command is an entry point in :data:`appliance.identity.roles.ENTRY_POINTS` (it needs a
logged-in user whose role grants its permission; a denial is audited) or in :data:`PUBLIC` below
(with the reason it needs no login).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliance import __version__
from appliance.cli import audit_cmds, dicom_cmds, health_cmds, trust_cmds, update_cmds, users_cmds
from appliance.cli.common import Handler, ensure_state_dir, load_session
from appliance.config import Config, load_config
from appliance.errors import (
    ApplianceError,
    ConfigError,
    PermissionDeniedError,
    SessionExpiredError,
)
from appliance.identity.roles import ENTRY_POINTS, Principal, may
from appliance.logs import setup_logging
from appliance.runtime import Runtime, open_runtime

EPILOG = """\
examples:
  appliance run                         start the appliance (a software TPM if there is none)
  appliance trust status                TPM, lockout, keys and PCRs, anti-rollback floor
  appliance users bootstrap-admin NAME  create the first admin while provisioning
  appliance login --user NAME           log in; later commands use the saved session
  appliance audit verify                check the audit trail for tampering

configuration: /etc/appliance/appliance.toml, APPLIANCE_* variables, then these flags.
"""

# Entry points that need no login, and why each is safe without one.
PUBLIC: Mapping[str, str] = {
    "run": "the service itself, started by systemd as its own user",
    "login": "it is how a user authenticates",
    "logout": "it only ends the caller's own session",
    "trust status": "diagnosis that must work when the keys do not unseal; shows no PHI",
    "trust recover": "authorised by the recovery code itself; audited once the keys unseal",
    "trust enroll": "works only on a box not enrolled yet (provisioning); refused afterwards",
    "users bootstrap-admin": "works only while the box has no account (provisioning)",
    "console": "the console authenticates its user itself (login screen, idle logoff, audited)",
    "hardware": "diagnosis of the devices, TPM, memory and disk against the box profiles; no PHI",
    "provision seed": "applies only what an unprovisioned box lacks (no admin, no vendor root), "
    "like the first-boot wizard; a token arrives only as a hash; audited",
    "dicom serve": "the DICOM service itself, started by systemd as its own user; who may send "
    "is decided per association by the peer list (AE title and address)",
    "update scan": "run by the service udev starts for a USB stick; a bundle is authorised by the "
    "vendor's signatures and the TPM floor, not by who plugged the stick in; audited",
}


def cmd_hardware(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    import openvino as ov

    from appliance import hardware

    detected = hardware.detect(ov.Core(), rt.config.state_dir, tcti=rt.config.tcti)
    profile = hardware.best_profile(hardware.load_profiles(hardware.profiles_dir()), detected)
    mismatches = hardware.compare(profile, detected)
    print(hardware.report(profile, detected, mismatches))
    return 1 if any(m.severity == "error" for m in mismatches) else 0


def cmd_console(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.console import create_app, from_runtime

    create_app(from_runtime(rt)).run()
    return 0


def cmd_provision_seed(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.provision import apply_seed, read_seed

    done = apply_seed(rt, read_seed(Path(args.seed)))
    print("\n".join(done) if done else "nothing to do: the box already has what the seed sets")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="The clinical AI appliance: local inference, TPM-sealed keys, offline updates.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"appliance {__version__}")
    p.add_argument(
        "--config", type=Path, help="settings file (default /etc/appliance/appliance.toml)"
    )
    p.add_argument("--state-dir", help="where the box keeps its state (default /var/lib/appliance)")
    p.add_argument("--tcti", help="TPM connection, e.g. device:/dev/tpmrm0 or swtpm:path=/x.sock")
    p.add_argument("--pcrs", help="PCRs the keys are sealed to (default 7,11)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="start the appliance and keep it running",
        description="Start the appliance and keep it running until Ctrl-C or SIGTERM: the TPM "
        "(a software TPM when there is no /dev/tpmrm0), the trust core, the API and the DICOM "
        "receiver (unless dicom_in_run is false). The first start enrolls the keys; on a "
        "terminal it shows the recovery code once.",
    )
    run.set_defaults(entry="run")
    users_cmds.register(sub)
    trust_cmds.register(sub)
    audit_cmds.register(sub)
    update_cmds.register(sub)
    dicom_cmds.register(sub)
    health_cmds.register(sub)
    hw = sub.add_parser(
        "hardware",
        help="what this box has, against its hardware profile",
        description="Detect the CPU, accelerators, TPM, memory and disk, compare them with the "
        "closest hardware profile and list the differences; exit 1 if one is an error.",
    )
    hw.set_defaults(func=cmd_hardware, entry="hardware")
    con = sub.add_parser(
        "console",
        help="the technician's console: login, health dashboard",
        description="The technician's console on this terminal: login, health dashboard, and "
        "on a new box the provisioning wizard.",
    )
    con.set_defaults(func=cmd_console, entry="console")
    what = "unattended provisioning (factory, lab, boot test)"
    prov = sub.add_parser("provision", help=what, description=what)
    psub = prov.add_subparsers(dest="provision_command", metavar="ACTION", required=True)
    seed = psub.add_parser(
        "seed",
        help="apply a provisioning seed (see appliance/provision.py)",
        description="Apply what a seed sets and the box lacks: first admin, vendor root, "
        "service tokens (as hashes). Running it again changes nothing.",
    )
    seed.add_argument("seed", help="the seed JSON file")
    seed.set_defaults(func=cmd_provision_seed, entry="provision seed")
    return p


def entry_point(args: argparse.Namespace) -> str:
    """The entry-point name of the parsed command (options that change its power included)."""
    entry: str = args.entry
    if entry == "trust counter" and args.advance_to is not None:
        return "trust counter --advance-to"
    return entry


def authorise(args: argparse.Namespace, rt: Runtime) -> Principal | None:
    """Authenticate the caller and check the entry point's permission; audit a denial."""
    entry = entry_point(args)
    if entry in PUBLIC:
        return None
    permission = ENTRY_POINTS[f"cli:{entry}"]
    token = load_session(rt.config)
    if not token:
        raise SessionExpiredError(
            f"`appliance {entry}` needs a logged-in user.", "Run `appliance login --user NAME`."
        )
    principal = rt.identity.authenticate(token)
    if not may(principal.role, permission):
        rt.identity.record_denial(principal, f"cli:{entry}", permission)
        raise PermissionDeniedError(
            f"{principal.username} ({principal.role}) may not run `appliance {entry}`.",
            f"It needs the permission {permission}; ask an admin.",
        )
    return principal


def dispatch(args: argparse.Namespace, config: Config) -> int:
    ensure_state_dir(config)
    if args.entry == "run":  # the supervisor owns its TPM endpoint and services itself
        from appliance import supervisor

        return supervisor.run(config, sys.stdout)
    with open_runtime(config) as rt:
        if args.verbose:
            print(f"TPM: {rt.endpoint.description}", file=sys.stderr)
        who = authorise(args, rt)
        func: Handler = args.func
        return func(args, rt, who)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the command, print errors with what to do; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        config = load_config(
            args.config,
            overrides={"state_dir": args.state_dir, "tcti": args.tcti, "pcrs": args.pcrs},
        )
        setup_logging(
            "DEBUG" if args.verbose else config.log_level,
            stderr=args.command not in ("run", "console"),
        )
        if args.command == "console":
            from appliance.console.locked import LockedConsole, locked_reason

            # Textual reads keys from stdin and draws on stderr; without a terminal it would
            # wait forever, writing escape codes into a pipe or a log.
            if not (sys.stdin and sys.stdin.isatty() and sys.stderr.isatty()):
                raise ConfigError(
                    "the console needs a terminal; its input or output is not one.",
                    "Run it on the box's screen or serial line, or over `ssh -t`; scripts use "
                    "the other commands (appliance --help).",
                )

            if (reason := locked_reason()) is not None:
                # The state cannot be opened: no runtime, only the recovery path.
                LockedConsole(reason, config.box_id).run()
                return 0
        code = dispatch(args, config)
        sys.stdout.flush()  # a reader that went away shows here, not as a traceback at exit
    except ApplianceError as exc:
        print(f"appliance: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"appliance: what to do: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        # Ctrl-C: say so, or the technician is left at a prompt wondering what happened.
        print("\nappliance: error: interrupted (Ctrl-C) before the command finished.",
              file=sys.stderr)  # fmt: skip
        print("appliance: what to do: Run it again; an interrupted update is undone first "
              "(`appliance update status` shows it).", file=sys.stderr)  # fmt: skip
        return 130
    except BrokenPipeError:
        # `appliance audit show | head`: the reader has what it wanted; stop as SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code
