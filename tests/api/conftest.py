"""A served box: enrolled on a real swtpm, the demo model installed through the real update
agent, the API on real uvicorn over TLS on an ephemeral loopback port, one token per role."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import openvino as ov
import pytest

from appliance.api.server import ApiServer, serve
from appliance.config import Config
from appliance.identity.roles import Role
from appliance.runtime import Runtime, open_runtime
from appliance.trust import core
from appliance.trust.tpm import open_tpm
from appliance.updates.agent import import_vendor_root
from appliance.updates.wiring import make_agent
from provisioning.testmodel import BIAS, WEIGHTS, build_model_dir
from provisioning.vendor import build_bundle
from tests.conftest import accounts_for_every_role
from tests.updates.conftest import NOT_BEFORE, RepoSim

PASSWORD = "a long enough passphrase"


def expected_risk(features: np.ndarray) -> np.ndarray:
    """The demo model computed with numpy: sigmoid(x . w + b)."""
    z = features.astype(np.float64) @ np.asarray(WEIGHTS, dtype=np.float64) + float(BIAS)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Served:
    config: Config
    rt: Runtime
    api: ApiServer
    sim: RepoSim
    tokens: dict[Role, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api.port}"

    def client(self, role: Role | None = Role.SERVICE) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        ctx = ssl.create_default_context(cafile=str(self.api.tls.cert if self.api.tls else ""))
        return httpx.Client(base_url=self.url, headers=headers, verify=ctx, timeout=30)

    def install(self, version: str) -> None:
        folder = self.sim.top / "served" / version
        build_model_dir(folder, name="risk-demo", version=version)
        self.install_folder(folder, f"risk-demo-{version}")

    def install_folder(self, folder: Path, label: str | None = None) -> None:
        """Sign the model folder ``folder`` as a bundle and install it through the real agent."""
        out = self.sim.out / f"{label or folder.name}.aplbundle"
        bundle = build_bundle(folder, self.sim.repo, self.sim.signers(), out, not_before=NOT_BEFORE)
        state = make_agent(self.rt, "tech").install(bundle.path)
        assert state.phase == "done", state.reason


@pytest.fixture
def sim(tmp_path: Path) -> RepoSim:
    return RepoSim(tmp_path / "vendor")


@pytest.fixture
def prepared(config: Config, sim: RepoSim) -> Iterator[Served]:
    """Everything but the server: enrolled, accounts and tokens, the demo model installed."""
    with open_tpm(config.device_tcti()) as tpm:
        core.enroll(tpm, config)
    with open_runtime(config) as rt:
        tokens = accounts_for_every_role(rt.identity)
        import_vendor_root(make_agent(rt, "tech").paths, sim.first_root())
        box = Served(config, rt, None, sim, tokens)  # type: ignore[arg-type]
        box.install("1.0.0")
        yield box


def serving(box: Served) -> Iterator[Served]:
    """``box`` served on uvicorn over TLS for the life of the fixture that yields from this."""
    box.api = serve(box.rt, ov.Core(), port=0)
    try:
        yield box
    finally:
        box.api.stop()


@pytest.fixture
def served(prepared: Served) -> Iterator[Served]:
    yield from serving(prepared)
