"""`appliance audit ...`: show, verify, export, acknowledge break-glass."""

from __future__ import annotations

import argparse
import io
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from appliance.audit.export import export_json, export_syslog
from appliance.audit.log import verify
from appliance.audit.records import AuditEvent, Outcome
from appliance.cli.common import command
from appliance.errors import ConfigError, SessionExpiredError
from appliance.fsutil import atomic_write
from appliance.identity.roles import Principal
from appliance.runtime import Runtime
from appliance.setup.site import box_name


def _date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"'{text}' is not a date.", "Write it as 2026-11-27 or 2026-11-27T14:00."
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_show(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    if args.break_glass:
        uses = rt.identity.unacknowledged_break_glass()
        for use in uses:
            at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(use.at))
            print(f"#{use.id}  {at}  {use.username}: {use.reason}")
        print(f"{len(uses)} break-glass use(s) waiting for an admin's acknowledgement")
        return 1 if uses else 0
    for rec in rt.audit.records(_date(args.since), _date(args.until)):
        flag = " FLAGGED" if rec.flagged else ""
        print(f"{rec.seq:>7} {rec.time} {rec.event:<18} {rec.outcome:<8} {rec.actor}{flag}")
    return 0


def cmd_verify(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    report = verify(rt.config.audit_dir, rt.audit_key, rt.audit_anchor)
    for problem in report.problems:
        print(problem)
    verdict = "intact" if report.ok else "TAMPERED OR DAMAGED"
    print(f"audit log {verdict}: {report.records} records, {report.checkpoints} checkpoints")
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    if who is None:  # the dispatcher authenticates this entry point
        raise SessionExpiredError("exporting needs a logged-in user.", "Run `appliance login`.")
    records = list(rt.audit.records(_date(args.since), _date(args.until)))
    text = io.StringIO()
    if args.format == "json":
        count = export_json(records, text)
    else:
        count = export_syslog(records, text, hostname=box_name(rt.config))
    if args.output == "-":
        sys.stdout.write(text.getvalue())
    else:
        atomic_write(Path(args.output), text.getvalue().encode(), mode=0o640)
    rt.audit.append(
        AuditEvent.EXPORT, actor=who.username, role=who.role.value, outcome=Outcome.SUCCESS,
        detail={"what": "audit", "format": args.format, "records": count,
                "since": args.since or "", "until": args.until or ""},
    )  # fmt: skip
    print(f"exported {count} records as {args.format} to {args.output}", file=sys.stderr)
    return 0


def cmd_ack(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    if who is None:  # the dispatcher authenticates this entry point
        raise SessionExpiredError("this needs a logged-in admin.", "Run `appliance login`.")
    rt.identity.acknowledge_break_glass(who, args.use_id)
    print(f"break-glass use #{args.use_id} acknowledged")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    what = "the tamper-evident audit trail"
    audit = sub.add_parser("audit", help=what, description=what)
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    show = command(asub, "show", "list audit records", cmd_show, "audit show")
    show.add_argument("--break-glass", action="store_true", help="unacknowledged break-glass uses")
    command(asub, "verify", "check the chain, signatures and anchor", cmd_verify, "audit verify")
    export = command(asub, "export", "write a date range for the clinic's records", cmd_export,
                     "audit export")  # fmt: skip
    export.add_argument("--format", choices=["syslog", "json"], default="syslog",
                        help="RFC 5424 lines with DICOM audit messages, or JSON lines")  # fmt: skip
    export.add_argument("--output", "-o", default="-", help="file (default: standard output)")
    for parser in (show, export):
        parser.add_argument("--since", help="first day or time (UTC), e.g. 2026-11-01")
        parser.add_argument("--until", help="end (exclusive), e.g. 2026-12-01")
    ack = command(asub, "ack-break-glass", "acknowledge a break-glass use", cmd_ack,
                  "audit ack-break-glass")  # fmt: skip
    ack.add_argument(
        "use_id", type=int, help="the use's number (#N in `appliance audit show --break-glass`)"
    )
