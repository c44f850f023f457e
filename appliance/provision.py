"""Unattended provisioning from a seed: what the console wizard asks, given as one JSON file.

A factory, a lab or the boot test hands the box a seed as a systemd system credential
(``appliance.seed``: QEMU's fw_cfg or SMBIOS type 11, which systemd imports only inside a VM) or as
a file to ``appliance provision seed FILE``. A seed only provisions: every part of it applies only
while that part is still unset (no admin yet, no vendor root yet), exactly like the first-boot
wizard, and running it again changes nothing. It never carries a token in the clear: a service
token is minted off the box and the seed holds its id and the SHA-256 of its secret.

    {
      "admin": {"username": "tech", "password": "..."},              (optional)
      "vendor_root": { ...the vendor's root.json... },                 (optional)
      "service_accounts": [                                            (optional)
        {"username": "pacs-bridge", "token_id": "0123456789ab", "secret_sha256": "<64 hex>"}
      ]
    }
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from appliance.audit.records import AuditEvent, Outcome
from appliance.errors import ConfigError
from appliance.runtime import Runtime
from appliance.updates.agent import AgentPaths, import_vendor_root

log = logging.getLogger(__name__)
_HINT = (
    'Fix the seed file and run it again. Its format: {"admin": {"username": ..., "password": '
    '...}, "vendor_root": <root.json>, "service_accounts": [{"username": ..., "token_id": ..., '
    '"secret_sha256": ...}]}, every part optional.'
)


def read_seed(path: Path) -> dict[str, Any]:
    """Parse a seed file; raise ConfigError saying what is wrong."""
    try:
        seed = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the seed {path}: {exc.strerror}.", _HINT) from exc
    except ValueError as exc:
        raise ConfigError(f"the seed {path} is not JSON ({exc}).", _HINT) from exc
    if not isinstance(seed, dict) or not set(seed) <= {"admin", "vendor_root", "service_accounts"}:
        raise ConfigError(
            "a seed is a JSON object with only admin, vendor_root and service_accounts.", _HINT
        )
    return seed


def apply_seed(rt: Runtime, seed: dict[str, Any]) -> list[str]:
    """Apply what the seed sets and the box does not have yet; return what was done."""
    done: list[str] = []
    admin = seed.get("admin")
    if admin is not None:
        if not isinstance(admin, dict) or not {"username", "password"} <= set(admin):
            raise ConfigError("the seed's admin needs a username and a password.", _HINT)
        if rt.identity.needs_bootstrap():
            rt.identity.bootstrap_admin(str(admin["username"]), str(admin["password"]))
            done.append(f"first admin '{admin['username']}' created")
    root = seed.get("vendor_root")
    paths = AgentPaths(rt.config.updates_dir, rt.config.models_dir)
    if root is not None and not (paths.trusted / "root.json").exists():
        data = json.dumps(root).encode() if not isinstance(root, str) else root.encode()
        import_vendor_root(paths, data)
        fingerprint = hashlib.sha256(data).hexdigest()
        rt.audit.append(
            AuditEvent.CONFIG_CHANGE, actor="provisioning", outcome=Outcome.SUCCESS,
            detail={"action": "import-vendor-root", "sha256": fingerprint, "how": "seed"},
        )  # fmt: skip
        done.append(f"vendor root trusted (SHA-256 {fingerprint[:16]}...)")
    for entry in seed.get("service_accounts") or []:
        if not isinstance(entry, dict) or not {"username", "token_id", "secret_sha256"} <= set(
            entry
        ):
            raise ConfigError(
                "each seeded service account needs username, token_id and secret_sha256.", _HINT
            )
        rt.identity.enroll_service_token(
            str(entry["username"]), str(entry["token_id"]), str(entry["secret_sha256"])
        )
        done.append(f"service account '{entry['username']}' token {entry['token_id']}")
    for line in done:
        log.info("provisioning seed: %s", line)
    return done
