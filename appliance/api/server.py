"""Serve the API with uvicorn over TLS, in a thread of the calling process, and keep its models
fresh: a watcher thread reloads a model when the update agent commits a new slot."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from appliance import __version__, hardware, retention
from appliance.api.app import DEFAULT_BODY_TIMEOUT_S, create_app, watchdog_interval
from appliance.api.connections import with_header_deadline
from appliance.api.deps import ApiServices
from appliance.api.metrics import Metrics
from appliance.api.results import ResultStore
from appliance.api.tls import SiteCertificate, ensure_site_certificate
from appliance.audit.group import GroupAuditor
from appliance.dicom.checks import PixelLimits
from appliance.errors import ApplianceError
from appliance.inference.registry import ModelRegistry
from appliance.retention import StampClock
from appliance.runtime import Runtime
from appliance.setup.network import static_address
from appliance.setup.site import box_name
from appliance.store.slots import ModelStore
from appliance.trust import core
from appliance.trust.keys import KeyName
from appliance.trust.tpm import open_tpm
from appliance.updates.manifest import Manifest

log = logging.getLogger(__name__)
REFRESH_S = 1.0


def _sd_notify(state: str) -> None:
    try:
        from systemd import daemon
    except ImportError:
        return
    daemon.notify(state)


def build_services(
    rt: Runtime, ov_core: Any, detected: hardware.DetectedHardware | None = None
) -> ApiServices:
    """The API's services for this box: models from the encrypted store, results, identity.
    ``detected``: this machine's hardware, when the caller has looked already."""

    def model_key() -> bytes:
        with open_tpm(rt.tcti) as tpm:
            return core.key_store(rt.config).unseal(tpm, KeyName.MODEL_STORE)

    if detected is None:
        detected = hardware.detect(ov_core, rt.config.state_dir, tcti=rt.config.tcti)
    profile = hardware.best_profile(hardware.load_profiles(hardware.profiles_dir()), detected)

    def choose(manifest: Manifest) -> str:
        # Interactive work: the API answers one request at a time, as fast as it can.
        return hardware.choose_device(
            detected.openvino_devices, {str(d) for d in manifest.compatibility.devices},
            interactive=True, profile=profile,
        )  # fmt: skip

    registry = ModelRegistry(
        ModelStore(rt.config.models_dir), model_key, ov_core, choose,
        cache_dir=rt.config.state_dir / "compile-cache",
    )  # fmt: skip
    return ApiServices(
        registry=registry,
        # Stamped by the retention floor: a result made while the clock is behind is not pruned
        # as soon as the clock is set right.
        results=ResultStore(
            rt.config.state_dir / "results.db",
            clock=StampClock(rt.config.state_dir / retention.FILE_NAME),
        ),
        identity=rt.identity,
        audit=GroupAuditor(rt.audit),
        metrics=Metrics(),
        server_name=box_name(rt.config),
        server_version=__version__,
        pixel_limits=PixelLimits.of(rt.config),
    )


HEADER_TIMEOUT_S = 10.0  # for a request's headers (the body's bound, when shorter)


def uvicorn_config(
    app: Any, host: str, port: int, tls: SiteCertificate | None, *,
    header_timeout_s: float = HEADER_TIMEOUT_S,
) -> uvicorn.Config:  # fmt: skip
    """How the API's uvicorn serves ``app`` (bench/inference.py serves its floor apps so too)."""
    return uvicorn.Config(
        # uvloop and httptools (uvicorn[standard]) named, not left to "auto": the C event loop
        # and HTTP parser are a measured part of the API's cost (bench/inference.py); httptools'
        # protocol with a deadline for the headers (connections.py).
        app, host=host, port=port, log_config=None, access_log=False, loop="uvloop",
        http=with_header_deadline(header_timeout_s), lifespan="on",
        ssl_certfile=str(tls.cert) if tls else None, ssl_keyfile=str(tls.key) if tls else None,
    )  # fmt: skip


@dataclass
class ApiServer:
    """uvicorn in a thread, plus the model watcher. ``port`` is known once started."""

    services: ApiServices
    host: str
    port: int
    tls: SiteCertificate | None
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S

    def __post_init__(self) -> None:
        app = create_app(self.services, body_timeout_s=self.body_timeout_s,
                         watchdog_s=watchdog_interval(os.environ), notify=_sd_notify)  # fmt: skip
        headers_s = min(HEADER_TIMEOUT_S, self.body_timeout_s)
        config = uvicorn_config(app, self.host, self.port, self.tls, header_timeout_s=headers_s)
        self._server = uvicorn.Server(config)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 30.0) -> None:
        """Load the models, then serve; returns once the socket listens."""
        self.refresh()
        serve = threading.Thread(target=self._server.run, name="api", daemon=True)
        watch = threading.Thread(target=self._watch, name="model-watch", daemon=True)
        self._threads = [serve, watch]
        serve.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not serve.is_alive() or time.monotonic() > deadline:
                raise ApplianceError(
                    f"the API did not start on {self.host}:{self.port}.",
                    "Another program may use the port; set api_port in the configuration.",
                )
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        watch.start()

    def refresh(self) -> None:
        changed = self.services.registry.refresh()
        for name in changed:
            model = self.services.registry.get(name)
            self.services.metrics.load_seconds.labels(name, model.provenance.device).set(
                model.load_seconds
            )
        if changed:
            served = ", ".join(
                f"{m.manifest.name} {m.manifest.version} on {m.provenance.device}"
                for m in self.services.registry.all()
            )
            _sd_notify(f"STATUS=serving {served}")

    def _watch(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except ApplianceError as exc:
                log.warning("api: model refresh failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()
        self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        # After the server: what was queued is written (and answered, if a client still waits).
        if isinstance(self.services.audit, GroupAuditor):
            self.services.audit.close()
        self.services.results.close()


def serve(
    rt: Runtime, ov_core: Any, *, port: int | None = None, tls: bool = True,
    detected: hardware.DetectedHardware | None = None,
) -> ApiServer:  # fmt: skip
    """Start the API for ``rt`` on its configured host and port (``port`` overrides);
    ``detected`` spares a second look at the hardware when the caller has had one."""
    site = None
    if tls:
        address = static_address(rt.config.network_folder)
        site = ensure_site_certificate(rt.config.state_dir / "tls", box_name(rt.config),
                                       [address] if address is not None else [])  # fmt: skip
    server = ApiServer(build_services(rt, ov_core, detected), rt.config.api_host,
                       rt.config.api_port if port is None else port, site,
                       rt.config.api_body_timeout_seconds)  # fmt: skip
    server.start()
    return server
