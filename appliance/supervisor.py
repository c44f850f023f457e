"""``appliance run``: bring the appliance up on this machine and keep it up until stopped.

It grows with the product: today it starts the TPM (an embedded swtpm when there is no
``/dev/tpmrm0``) and brings the trust core up; the API, the DICOM receiver and the update agent
join as they land. It prints what it started and where, tells systemd it is ready when run as a
``Type=notify`` unit, and stops everything orderly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from appliance.config import Config
from appliance.errors import AlreadyRunningError, ApplianceError
from appliance.fsutil import flocked
from appliance.runtime import Runtime
from appliance.trust import core
from appliance.trust.connection import tpm_endpoint
from appliance.trust.tpm import open_tpm

if TYPE_CHECKING:
    from appliance.api.server import ApiServer
    from appliance.dicom.service import DicomService
    from appliance.housekeeping import Housekeeper

log = logging.getLogger(__name__)

RUN_LOCK = "run.lock"


def _notify(state: str) -> None:
    try:
        from systemd import daemon
    except ImportError:
        return
    daemon.notify(state)


def run(config: Config, out: TextIO, stop: threading.Event | None = None) -> int:
    """Start the appliance, report to ``out``, and block until ``stop`` is set or a signal.

    Raises AlreadyRunningError when another ``appliance run`` serves ``config.state_dir``.
    """
    with _sole_run(config.state_dir):
        return _run(config, out, stop)


@contextlib.contextmanager
def _sole_run(state_dir: Path) -> Iterator[None]:
    """Hold ``run.lock`` in the state folder (with this pid in it) while the block runs.

    Two runs on one state would share its TPM, keys, models and spool while each believed it
    owned them; the second would only fail later, at the API port, with a misleading hint.
    """
    with flocked(state_dir / RUN_LOCK, wait=False) as fd:
        if fd is None:
            with (state_dir / RUN_LOCK).open("rb") as fh:
                pid = fh.read(32).decode(errors="replace").strip() or "unknown"
            raise AlreadyRunningError(
                f"another `appliance run` already uses {state_dir} (pid {pid}).",
                "Stop that one first (Ctrl-C where it runs, or `systemctl stop appliance`); "
                "a second appliance on this machine needs its own --state-dir.",
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield


def _run(config: Config, out: TextIO, stop: threading.Event | None) -> int:
    stop = stop or _stop_on_signals()
    say = _printer(out)
    say(f"state dir      {config.state_dir}")
    with tpm_endpoint(config) as endpoint:
        say(f"TPM            {endpoint.description}")
        with open_tpm(endpoint.tcti) as tpm:
            code = None
            if not core.key_store(config).is_enrolled():
                code = core.enroll(tpm, config)
            core.bring_up(tpm, config)
            state = core.state(tpm, config)
        pcrs = ",".join(map(str, config.pcrs))
        keys = ", ".join(k.name for k in state.keys)
        say(f"trust core     ready: keys {keys} unseal with PCRs {pcrs}; "
            f"anti-rollback floor {state.floor}; TPM lockout "
            f"{'YES' if state.lockout.in_lockout else 'no'}")  # fmt: skip
        if code:
            _hand_over_recovery_code(code, out, say)
        runtime = Runtime(config, endpoint)
        api = None
        dicom = None
        housekeeper = None
        try:
            _report_break_glass(runtime, say)
            say(f"audit trail    {config.audit_dir}")
            _finish_interrupted_update(runtime, say)
            api = _start_api(runtime, say)
            dicom = _start_dicom(runtime, api, say)
            housekeeper = _start_housekeeping(runtime, api, dicom, say)
            say("ready; press Ctrl-C to stop")
            _notify(f"READY=1\nSTATUS=serving {len(api.services.registry.names())} model(s)")
            log.info("appliance ready")
            stop.wait()
            _notify("STOPPING=1")
            say("stopping")
        finally:
            if housekeeper is not None:
                housekeeper.stop()
            if dicom is not None:
                dicom.stop()
            if api is not None:
                api.stop()
            # Anchor the tail of the audit log in the TPM so that a later rollback shows.
            runtime.audit.checkpoint()
            runtime.close()
    say("stopped")
    return 0


def _hand_over_recovery_code(code: str, out: TextIO, say: Callable[[str], None]) -> None:
    """Show the first start's recovery code once, on a terminal only.

    Under systemd the output goes to the journal, where a recovery code must never be: there the
    console's provisioning wizard issues a new code (``KeyStore.new_recovery_code``), shows it
    once and asks the technician to confirm it, which makes this one void.
    """
    if out.isatty() or not _under_systemd():
        say("first start: keys enrolled. Recovery code, shown ONCE, write it down:")
        say(f"    {code}")
        return
    say("first start: keys enrolled; the console's provisioning shows the recovery code "
        "(never in the journal)")  # fmt: skip


def _under_systemd() -> bool:
    return "INVOCATION_ID" in os.environ


def _finish_interrupted_update(runtime: Runtime, say: Callable[[str], None]) -> None:
    """Finish a commit a power cut or crash interrupted, or undo an install it interrupted,
    before the models load: the box then serves what the update ended with (ADR 0004). A
    commit the TPM cannot finish yet is reported and left pending; the box serves on."""
    from appliance.updates.agent import UNDO_ON_RESUME, AgentPaths, Phase, read_state
    from appliance.updates.wiring import make_agent

    config = runtime.config
    before = read_state(AgentPaths(config.updates_dir, config.models_dir))
    if before.phase is not Phase.COMMIT and before.phase not in UNDO_ON_RESUME:
        return
    what = f"{before.model or 'a bundle'} {before.version or ''}".strip()
    try:
        after = make_agent(runtime, "update-agent@start").resume()
    except ApplianceError as exc:
        log.warning("update interrupted in %s not finished at start: %s", before.phase, exc)
        say(f"update         {what}, interrupted in {before.phase}: {exc}")
        return
    if after.phase is Phase.DONE:
        say(f"update         {what}: its interrupted commit finished; it is live")
    elif after.phase is Phase.FAILURE:
        say(f"update         {what}: interrupted in {before.phase}, undone: {after.reason}")
    else:  # another process runs it: in progress, not interrupted
        say(f"update         {what}: in progress ({after.phase})")


def _start_api(runtime: Runtime, say: Callable[[str], None]) -> ApiServer:
    import openvino as ov

    from appliance import hardware
    from appliance.api.server import serve

    ov_core = ov.Core()
    detected = hardware.detect(ov_core, runtime.config.state_dir, tcti=runtime.config.tcti)
    profile = hardware.best_profile(hardware.load_profiles(hardware.profiles_dir()), detected)
    problems = hardware.compare(profile, detected)
    errors = [m for m in problems if m.severity == "error"]
    say(f"hardware       profile {profile.name}; devices {', '.join(detected.openvino_devices)}; "
        f"TPM {hardware.tpm_summary(detected)}; "
        f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)"
        f"{' (appliance hardware)' if problems else ''}")  # fmt: skip
    api = serve(runtime, ov_core, detected=detected)
    models = ", ".join(
        f"{m.manifest.name} {m.manifest.version} on {m.provenance.device}"
        for m in api.services.registry.all()
    )
    say(f"api            https://{api.host}:{api.port} (KServe v2, tasks, results, metrics); "
        f"models: {models or 'none installed yet (appliance update install)'}")  # fmt: skip
    say(f"site cert      {api.tls.cert if api.tls else 'none'} "
        f"(SHA-256 {api.tls.fingerprint() if api.tls else '-'})")  # fmt: skip
    return api


def _start_dicom(
    runtime: Runtime, api: ApiServer, say: Callable[[str], None]
) -> DicomService | None:
    """Start the study path; a DICOM failure (port taken) is reported, the API keeps serving."""
    from appliance.dicom.analysis import ModelAnalyser
    from appliance.dicom.service import start_service

    registry = api.services.registry
    try:
        service = start_service(
            runtime.config,
            lambda: runtime.audit,
            analyser_for=lambda model: ModelAnalyser(registry, model),
            receive=runtime.config.dicom_in_run,
        )
    except ApplianceError as exc:
        say(f"dicom          NOT started: {exc.message} {exc.hint or ''}".rstrip())
        return None
    say(f"dicom          {service.describe()}")
    return service


def _start_housekeeping(
    runtime: Runtime, api: ApiServer, dicom: DicomService | None, say: Callable[[str], None]
) -> Housekeeper:
    """Start the hourly retention rounds (results, finished studies' images, audit files)."""
    from appliance.housekeeping import Housekeeper

    keeper = Housekeeper(runtime.config, runtime.audit, api.services.results,
                         dicom.store if dicom is not None else None)  # fmt: skip
    keeper.start()
    say(f"housekeeping   {keeper.describe()}")
    return keeper


def _report_break_glass(runtime: Runtime, say: Callable[[str], None]) -> None:
    uses = runtime.identity.unacknowledged_break_glass()
    if uses:
        say(f"BREAK-GLASS    {len(uses)} emergency login(s) not yet reviewed by an admin: "
            "`appliance audit show --break-glass`")  # fmt: skip


def _printer(out: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        out.write(f"appliance: {line}\n")
        out.flush()

    return say


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received signal %d", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop
