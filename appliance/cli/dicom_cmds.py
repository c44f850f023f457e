"""`appliance dicom serve`: the DICOM receiver and outbox as their own service (on the box,
appliance-dicom.service)."""

from __future__ import annotations

import argparse
import signal
import threading

from appliance.cli.common import command
from appliance.identity.roles import Principal
from appliance.runtime import Runtime


def cmd_serve(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.dicom.service import start_service

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # The audit key is unsealed only when the outbox first sends (lambda: rt.audit).
    service = start_service(rt.config, lambda: rt.audit, analyser_for=None, host=args.host)
    try:
        print(f"appliance: dicom          {service.describe()}", flush=True)
        print("appliance: ready; press Ctrl-C to stop", flush=True)
        stop.wait()
    finally:
        service.stop()
    print("appliance: stopped", flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    what = "the DICOM receiver (SCP) and the outbox to PACS"
    dicom = sub.add_parser("dicom", help=what, description=what)
    dsub = dicom.add_subparsers(dest="dicom_command", metavar="ACTION", required=True)
    serve = command(dsub, "serve", "receive studies from the configured peers and send results "
                    "to PACS until stopped", cmd_serve, "dicom serve")  # fmt: skip
    everywhere = "0.0.0.0"  # noqa: S104 (the clinic's network; nftables limits who reaches it)
    serve.add_argument("--host", default=everywhere, help="address to listen on (default all)")
