"""`appliance health report`: the signed health report for the vendor's support, onto USB."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli.common import command
from appliance.errors import ConfigError
from appliance.identity.roles import Principal
from appliance.runtime import Runtime

USB_DIR = Path("/run/appliance-usb")  # where the USB stick is mounted (as for the console)


def check_folder(folder: Path) -> None:
    """Raise ConfigError unless ``folder`` is a folder we can write the report into."""
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder: no USB stick there.",
            "Insert the USB stick (it is mounted at /run/appliance-usb) or name a folder with "
            "--out.",
        )


def cmd_report(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.support.report import export_report

    folder = Path(args.out)
    check_folder(folder)
    actor = who.username if who else "support"
    path, fingerprint = export_report(rt, actor, who.role.value if who else None, folder)
    print(f"wrote {path}")
    print(f"  signed by this box's TPM: attestation key {fingerprint}")
    print("  the vendor checks it with `appliance-vendor report verify FILE --ak <that key>`")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    what = "health report for the vendor's support"
    health = sub.add_parser("health", help=what, description=what)
    hsub = health.add_subparsers(dest="health_command", metavar="ACTION", required=True)
    rep = command(hsub, "report", "write a TPM-signed health report (inventory, versions, PCRs, "
                  "self-test) to a folder", cmd_report, "health report")  # fmt: skip
    rep.add_argument("--out", default=str(USB_DIR), help=f"the folder (default {USB_DIR})")
