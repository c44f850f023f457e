"""`appliance update ...`: install a bundle, show the model slots, roll back, import the root."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from appliance.cli.common import command
from appliance.errors import ConfigError, TpmUnavailableError, TrustError
from appliance.identity.roles import Principal
from appliance.runtime import Runtime
from appliance.updates.agent import AgentState, Phase, ProgressEvent
from appliance.updates.bundle import BUNDLE_SUFFIX
from appliance.updates.errors import CommitPendingError


def _actor(who: Principal | None) -> str:
    return who.username if who else "update-agent"


def _refusal(state: AgentState) -> str:
    """Why the bundle was not installed, without the agent's "refused: " tag: the line says it."""
    return (state.reason or "no reason given").removeprefix("refused: ")


def _show_progress(event: ProgressEvent) -> None:
    if event.phase is Phase.FAILURE:  # the command prints the refusal and its reason itself
        return
    if event.total > 1:
        pct = 100 * event.done // max(event.total, 1)
        print(f"\r  {event.phase:<9} {pct:3d}%  {event.message:<60}", end="", file=sys.stderr)
        if event.done >= event.total:
            print(file=sys.stderr)
    else:
        print(f"  {event.phase:<9} {event.message}", file=sys.stderr)


def cmd_install(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.updates.wiring import make_agent

    agent = make_agent(rt, _actor(who), _show_progress)
    state = agent.install(Path(args.bundle))
    if state.phase is Phase.DONE:
        print(f"installed {state.model} {state.version} (bundle {state.bundle_version}) in slot "
              f"{state.slot}; it is live. {state.reason or ''}")  # fmt: skip
        return 0
    print(f"update refused, nothing changed: {_refusal(state)}")
    return 1


def cmd_scan(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    """What the udev-started service runs on a freshly mounted USB stick."""
    from appliance.updates.wiring import make_agent

    folder = Path(args.folder)
    if not folder.is_dir():  # the stick did not mount there, or a typo: not "nothing to do"
        raise ConfigError(
            f"{folder} is not a folder: no USB stick is mounted there.",
            "Check that the stick is mounted and name the folder it is mounted on.",
        )
    bundles = sorted(folder.glob(f"*{BUNDLE_SUFFIX}"))
    if not bundles:
        print(f"no update bundle (*{BUNDLE_SUFFIX}) in {folder}; nothing to do")
        return 0
    agent = make_agent(rt, "update-agent@usb", _show_progress)
    failed = 0
    for bundle in bundles:
        print(f"{bundle.name}:")
        state = agent.install(bundle)
        if state.phase is Phase.DONE:
            print(f"  installed {state.model} {state.version}; it is live")
        else:
            failed += 1
            print(f"  refused, nothing changed: {_refusal(state)}")
    return 1 if failed else 0


def _floor(rt: Runtime) -> tuple[str, bool]:
    """The anti-rollback floor as `update status` shows it, and whether the TPM gave it."""
    from appliance.updates.wiring import floor_counter

    try:
        return str(floor_counter(rt).read()), True
    except TpmUnavailableError as exc:
        return f"unknown (TPM not answering: {exc.message.rstrip('.')})", False
    except TrustError as exc:
        return f"unknown ({exc.message.rstrip('.')})", False


def cmd_status(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    """The last update, the floor and every model's slots, an interrupted update finished or
    undone first. What needs a TPM that does not answer (a pending commit, the floor) is said
    instead of shown, and the exit code is then 1: the technician runs this to diagnose."""
    from appliance.updates.wiring import make_agent

    agent = make_agent(rt, _actor(who))
    pending: CommitPendingError | None = None
    try:
        state = agent.resume()
    except CommitPendingError as exc:  # the state stays COMMIT; the rest can still be shown
        state, pending = agent.state(), exc
    last = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(state.updated)) if state.updated else ""
    print(f"last update:  {state.phase} {state.model or ''} {state.version or ''} {last}")
    for line in (state.reason, str(pending) if pending else None):
        if line:
            print(f"              {line}")
    floor, known = _floor(rt)
    print(f"floor:        {floor}")
    for name in agent.store.models():
        st = agent.store.state(name)
        for slot, info in sorted(st.slots.items()):
            mark = "active" if slot is st.active else "      "
            what = f"{info.version} (bundle {info.epoch})" if info else "empty"
            print(f"model {name:<24} slot {slot} {mark} {what}")
    return 1 if pending or not known else 0


def cmd_rollback(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.updates.wiring import make_agent

    slot = make_agent(rt, _actor(who)).rollback_model(args.model)
    print(f"{args.model}: slot {slot} is active again")
    return 0


def cmd_import_root(args: argparse.Namespace, rt: Runtime, who: Principal | None) -> int:
    from appliance.updates.wiring import trust_vendor_root

    try:
        data = Path(args.root).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {args.root}: {exc.strerror}.", "Check the USB stick is mounted."
        ) from exc
    fingerprint = trust_vendor_root(rt, data, _actor(who))
    print(f"vendor root trusted; SHA-256 {fingerprint}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    what = "signed offline model updates"
    update = sub.add_parser("update", help=what, description=what)
    usub = update.add_subparsers(dest="update_command", metavar="ACTION", required=True)
    inst = command(usub, "install", "verify, install, validate and commit a bundle",
                   cmd_install, "update install")  # fmt: skip
    inst.add_argument("bundle", help="the .aplbundle file (on the USB stick)")
    scan = command(usub, "scan", "install every bundle in a folder (the USB service runs this)",
                   cmd_scan, "update scan")  # fmt: skip
    scan.add_argument("folder", help="where the USB stick is mounted")
    command(usub, "status", "the last update and every model's slots", cmd_status,
            "update status")  # fmt: skip
    rb = command(usub, "rollback", "make a model's previous version active again",
                 cmd_rollback, "update rollback")  # fmt: skip
    rb.add_argument("model", help="the model's name (see `appliance update status`)")
    root = command(usub, "import-root", "trust the vendor's root metadata (provisioning)",
                   cmd_import_root, "update import-root")  # fmt: skip
    root.add_argument("root", help="the vendor's root.json")
