"""Offline update channel: signed bundles (TUF metadata), their verification, the model manifest.

``verify_bundle`` is the one door through which a bundle's bytes become trusted. The layout of a
bundle is in ``bundle.py``, the manifest in ``manifest.py``, the freshness rules in ADR 0004.
"""

from __future__ import annotations

from appliance.updates.bundle import (
    BUNDLE_SUFFIX,
    MemorySink,
    NullSink,
    TargetSink,
    Writer,
    bundle_file_name,
)
from appliance.updates.manifest import (
    BoxProfile,
    DeviceKind,
    Manifest,
    Metric,
    SemVer,
    Task,
    check_compatibility,
    parse_manifest,
)
from appliance.updates.verify import (
    TrustedState,
    VerifiedBundle,
    VerifiedTarget,
    load_trusted_state,
    save_trusted_state,
    verify_bundle,
)

__all__ = [
    "BUNDLE_SUFFIX",
    "BoxProfile",
    "DeviceKind",
    "Manifest",
    "MemorySink",
    "Metric",
    "NullSink",
    "SemVer",
    "TargetSink",
    "Task",
    "TrustedState",
    "VerifiedBundle",
    "VerifiedTarget",
    "Writer",
    "bundle_file_name",
    "check_compatibility",
    "load_trusted_state",
    "parse_manifest",
    "save_trusted_state",
    "verify_bundle",
]
