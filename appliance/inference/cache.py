"""A compile cache for served models, encrypted and checked before use.

Compiling a large model takes seconds on the CPU and longer on a GPU or NPU; at every start and
every hot swap the box would pay it again. OpenVINO can export a compiled model and import it, but
the exported blob holds the weights, so it is kept like a model: encrypted with the model-store key
(``appliance.trust.aead``), with everything it depends on bound into its name and its associated
data: the bundle digest, the model, the device, the OpenVINO version and the compile settings. A
blob that fails authentication, or that OpenVINO refuses, is deleted and the model compiled again.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, ModelIntegrityError
from appliance.fsutil import atomic_write
from appliance.inference import engine
from appliance.trust import aead

log = logging.getLogger(__name__)


class CompileCache:
    """Encrypted exported blobs under ``folder``, keyed by what they were compiled from."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self.folder = folder
        self._key = key

    @staticmethod
    def entry(bundle_sha256: str, model: str, device: str, settings: str) -> str:
        """The cache key: changes with the bundle, device, OpenVINO version or settings."""
        text = "\n".join((bundle_sha256, model, device, engine.openvino_version(), settings))
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, entry: str) -> Path:
        return self.folder / f"{entry}.blob"

    def load(self, entry: str, device: str, *, core: Any, int8: bool = False) -> Any | None:
        """The compiled model for ``entry``, or None if there is no usable blob.

        ``int8`` must match the compile that made the blob (see ``engine.import_compiled``).
        """
        path = self._path(entry)
        if not path.exists():
            return None
        try:
            blob = aead.decrypt_file(self._key, path, model="compiled", version=entry)
            compiled = engine.import_compiled(io.BytesIO(bytes(blob)), device, core=core, int8=int8)
        except (ModelIntegrityError, ApplianceError) as exc:
            log.warning("inference: compile cache entry %s refused, compiling again: %s",
                        entry[:12], exc.message)  # fmt: skip
            path.unlink(missing_ok=True)
            return None
        return compiled

    def store(self, entry: str, compiled: Any) -> None:
        """Export ``compiled`` into the cache (best effort: a failure is logged, not raised)."""
        try:
            blob = engine.export_compiled(compiled)
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            out = io.BytesIO()
            aead.encrypt_stream(self._key, io.BytesIO(blob), out, model="compiled", version=entry,
                                length=len(blob))  # fmt: skip
            atomic_write(self._path(entry), out.getvalue())
        except (ApplianceError, OSError) as exc:
            log.warning("inference: cannot cache compiled model %s: %s", entry[:12], exc)
