"""Which TPM this process talks to, and the embedded swtpm when there is no TPM device.

The box has ``/dev/tpmrm0`` (the kernel's resource manager). Elsewhere the appliance owns a
swtpm whose state lives in the state folder: ``appliance run`` starts it and keeps it for its
lifetime; a CLI command run while it is up shares it (swtpm serves connections one at a time and
every trust call is short), and one run while it is down starts it for the command's duration.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.config import Config
from appliance.trust.swtpm import Swtpm

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TpmEndpoint:
    """The TCTI to use and, for humans, what it is."""

    tcti: str
    description: str
    swtpm: Swtpm | None = None


@contextlib.contextmanager
def tpm_endpoint(config: Config) -> Iterator[TpmEndpoint]:
    """Yield the TPM endpoint for ``config``, starting an embedded swtpm if one is needed.

    A swtpm started here is stopped orderly (TPM2_Shutdown first) when the block ends.
    """
    if not config.uses_embedded_swtpm():
        tcti = config.device_tcti()
        yield TpmEndpoint(tcti, f"TPM at {tcti}")
        return
    swtpm = Swtpm(config.swtpm_dir)
    if swtpm.accepts():
        yield TpmEndpoint(swtpm.tcti, f"embedded swtpm on {swtpm.sock} (already running)")
        return
    with swtpm:
        yield TpmEndpoint(
            swtpm.tcti,
            f"embedded swtpm (pid {swtpm.pid}) on {swtpm.sock}, state in {swtpm.state_dir}",
            swtpm,
        )
