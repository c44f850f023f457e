"""The model manifest: what a bundle's model is, what it needs, and how to check it.

The manifest is ``manifest.json`` in the model folder and a signed target in the bundle. Example::

    {"manifest_version": 1, "name": "chest-xray-anomaly", "version": "1.2.0",
     "task": "imaging-anomaly",
     "inputs":  [{"name": "image", "shape": [1, 3, 224, 224], "dtype": "f32"}],
     "outputs": [{"name": "score", "shape": [1, 1], "dtype": "f32"}],
     "compatibility": {"min_openvino": "2024.0", "devices": ["CPU", "GPU", "NPU"]},
     "reference": {"files": ["reference/cases.npz"], "metric": "auc",
                   "expected": 0.91, "tolerance": 0.02}}

Shapes use -1 for a dynamic dimension. Every metric is "higher is better": the validation gate
accepts a measured value of at least ``expected - tolerance``. Unknown fields are refused, so a typo
is not silently ignored.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from appliance.updates.errors import IncompatibleBundleError, ManifestError

MANIFEST_VERSION = 1
MANIFEST_NAME, MODEL_XML, MODEL_BIN = "manifest.json", "model.xml", "model.bin"
REFERENCE_DIR = "reference"
MAX_MANIFEST_BYTES = 1 << 20
MAX_PATH = 255

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_OPENVINO = re.compile(r"(\d+(?:\.\d+){0,3})")
# One component of a path inside a bundle: no separators, no "..", nothing a shell or tar mangles.
PATH_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)
_FIELDS = frozenset(
    "manifest_version name version task inputs outputs compatibility reference".split()
)
_HINT = "Fix manifest.json in the model folder (see appliance/updates/manifest.py) and rebuild."


class Task(StrEnum):
    IMAGING_ANOMALY = "imaging-anomaly"
    NOTES_PHI = "notes-phi"
    RISK_TABULAR = "risk-tabular"


class DeviceKind(StrEnum):
    CPU = "CPU"
    GPU = "GPU"
    NPU = "NPU"


class DType(StrEnum):
    """OpenVINO element types a model's inputs and outputs may have."""

    F32, F16, BF16 = "f32", "f16", "bf16"
    I64, I32, I16, I8 = "i64", "i32", "i16", "i8"
    U64, U32, U16, U8 = "u64", "u32", "u16", "u8"
    BOOLEAN, STRING = "boolean", "string"


class Metric(StrEnum):
    """Reference metrics; every one is "higher is better"."""

    AUC = "auc"
    ACCURACY = "accuracy"
    F1 = "f1"
    SENSITIVITY = "sensitivity"
    SPECIFICITY = "specificity"
    PRECISION = "precision"
    RECALL = "recall"
    DICE = "dice"


@functools.total_ordering
@dataclass(frozen=True)
class SemVer:
    """A semantic version MAJOR.MINOR.PATCH[-PRERELEASE] (no build metadata: it names folders)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> SemVer:
        """Parse ``text``; raise ManifestError naming it when it is not a semantic version."""
        m = _SEMVER.fullmatch(text)
        if not m:
            raise ManifestError(
                f"'{text}' is not a semantic version like 1.2.0 or 2.0.0-rc.1.", _HINT
            )
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre)

    def _key(self) -> tuple[Any, ...]:
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, not self.prerelease, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SemVer):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{'.'.join(self.prerelease)}" if self.prerelease else core


@functools.total_ordering
@dataclass(frozen=True)
class OpenVinoVersion:
    """An OpenVINO release such as 2024.0 or 2024.4.0; compared with missing parts as zero."""

    parts: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> OpenVinoVersion:
        """Parse "2024.4" or the runtime's "2024.4.0-16579-c3152d32c9c-releases/2024/4"."""
        m = _OPENVINO.match(text.strip())
        if not m:
            raise ManifestError(f"'{text}' is not an OpenVINO version like 2024.0.", _HINT)
        return cls(tuple(int(p) for p in m.group(1).split(".")))

    def _padded(self) -> tuple[int, ...]:
        return self.parts + (0,) * (4 - len(self.parts))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, OpenVinoVersion):
            return NotImplemented
        return self._padded() < other._padded()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OpenVinoVersion) and self._padded() == other._padded()

    def __hash__(self) -> int:
        return hash(self._padded())

    def __str__(self) -> str:
        return ".".join(str(p) for p in self.parts)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: DType


@dataclass(frozen=True)
class Compatibility:
    min_openvino: OpenVinoVersion
    devices: frozenset[DeviceKind]


@dataclass(frozen=True)
class ReferenceSet:
    """The reference validation set: files (relative to the model folder) and what to expect."""

    files: tuple[str, ...]
    metric: Metric
    expected: float
    tolerance: float


@dataclass(frozen=True)
class Manifest:
    name: str
    version: SemVer
    task: Task
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    compatibility: Compatibility
    reference: ReferenceSet

    @property
    def prefix(self) -> str:
        """The folder of this model's targets inside the bundle: ``<name>/<version>``."""
        return f"{self.name}/{self.version}"

    def files(self) -> tuple[str, ...]:
        """Every file of the model folder that goes into the bundle, manifest first."""
        return (MANIFEST_NAME, MODEL_XML, MODEL_BIN, *self.reference.files)


@dataclass(frozen=True)
class BoxProfile:
    """What this box offers: the OpenVINO runtime's version and its device names or kinds.

    Device names may carry an index as OpenVINO reports them ("GPU.0"); only the kind counts.
    """

    openvino_version: str
    devices: frozenset[str]

    def device_kinds(self) -> frozenset[str]:
        return frozenset(d.split(".", 1)[0].upper() for d in self.devices)


def check_compatibility(manifest: Manifest, box: BoxProfile) -> None:
    """Raise IncompatibleBundleError, naming both sides, when ``box`` cannot run the model."""
    what = f"model {manifest.name} {manifest.version}"
    need = manifest.compatibility
    have = OpenVinoVersion.parse(box.openvino_version)
    if have < need.min_openvino:
        raise IncompatibleBundleError(
            f"{what} needs OpenVINO {need.min_openvino} or newer; this box runs OpenVINO {have}.",
            "Install a system image with a newer OpenVINO first, or ask the vendor for a build "
            f"of {manifest.name} that supports OpenVINO {have}.",
        )
    kinds = box.device_kinds()
    if not kinds & set(need.devices):
        raise IncompatibleBundleError(
            f"{what} runs on {', '.join(sorted(need.devices))}; this box has "
            f"{', '.join(sorted(kinds)) or 'no inference device'}.",
            "Ask the vendor for a build of the model for this box's devices.",
        )


def check_relative_path(path: str, what: str) -> None:
    """Raise ManifestError unless ``path`` is a plain relative path (no "..", ".", "/x", "a//b")."""
    parts = path.split("/")
    if not all(PATH_COMPONENT.fullmatch(p) for p in parts) or len(path) > MAX_PATH:
        raise ManifestError(
            f"{what} '{path}' is not a plain relative path of letters, digits, '.', '_', '-'.",
            _HINT,
        )


def parse_manifest(data: bytes) -> Manifest:
    """Parse and validate manifest JSON; raise ManifestError naming the first bad field."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"the manifest is {len(data)} bytes, over 1 MiB.", _HINT)
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"the manifest is not valid JSON: {exc}.", _HINT) from exc
    obj = _object(doc, "manifest")
    _known(obj, "manifest", _FIELDS)
    if _get(obj, "manifest_version", int, "manifest") != MANIFEST_VERSION:
        raise ManifestError(f"manifest_version must be {MANIFEST_VERSION}.", _HINT)
    name = _get(obj, "name", str, "manifest")
    if not _NAME.fullmatch(name):
        raise ManifestError(
            f"model name '{name}' must be 1-64 of a-z, 0-9, '.', '_', '-', starting alphanumeric.",
            _HINT,
        )
    return Manifest(
        name=name,
        version=SemVer.parse(_get(obj, "version", str, "manifest")),
        task=_enum(Task, _get(obj, "task", str, "manifest"), "task"),
        inputs=_tensors(obj, "inputs"),
        outputs=_tensors(obj, "outputs"),
        compatibility=_compatibility(_object(obj.get("compatibility"), "compatibility")),
        reference=_reference(_object(obj.get("reference"), "reference")),
    )


def load_model_dir(folder: Path) -> tuple[Manifest, dict[str, Path]]:
    """Read and check a model folder (vendor side): its manifest and the files it names.

    Returns the manifest and, for each bundle file name (``Manifest.files()``), its path.
    Raises ManifestError naming the missing or invalid file.
    """
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(f"{folder} has no {MANIFEST_NAME}.", _HINT)
    manifest = parse_manifest(manifest_path.read_bytes())
    files = {name: folder / name for name in manifest.files()}
    for name, path in files.items():
        if path.is_symlink() or not path.is_file():
            raise ManifestError(
                f"{path} is missing or not a regular file (links are not followed).",
                f"Put the real file {name} into the model folder {folder}.",
            )
    return manifest, files


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ManifestError(f"manifest field '{where}' must be a JSON object.", _HINT)
    return value


def _known(obj: Mapping[str, Any], where: str, allowed: Set[str]) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ManifestError(f"unknown field(s) in {where}: {', '.join(unknown)}.", _HINT)


def _get(obj: Mapping[str, Any], key: str, kind: type[T], where: str) -> T:
    value = obj.get(key)
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ManifestError(
            f"manifest field '{where}.{key}' must be a {kind.__name__}, got {value!r}.", _HINT
        )
    return value  # type: ignore[return-value]


def _enum(kind: type[E], value: str, where: str) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ManifestError(
            f"'{value}' is not a valid {where}; use one of {allowed}.", _HINT
        ) from None


def _tensors(obj: Mapping[str, Any], key: str) -> tuple[TensorSpec, ...]:
    items = obj.get(key)
    if not isinstance(items, list) or not items:
        raise ManifestError(f"manifest field '{key}' must be a non-empty list.", _HINT)
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        spec = _object(item, where)
        _known(spec, where, {"name", "shape", "dtype"})
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in shape
        ):
            raise ManifestError(f"{where}.shape must be a list of sizes (-1 = dynamic).", _HINT)
        name = _get(spec, "name", str, where)
        if not name:
            raise ManifestError(f"{where}.name must not be empty.", _HINT)
        dtype = _enum(DType, _get(spec, "dtype", str, where), f"{where}.dtype")
        out.append(TensorSpec(name, tuple(shape), dtype))
    return tuple(out)


def _compatibility(obj: Mapping[str, Any]) -> Compatibility:
    _known(obj, "compatibility", {"min_openvino", "devices"})
    devices = obj.get("devices")
    if not isinstance(devices, list) or not devices:
        raise ManifestError("compatibility.devices must list CPU, GPU and/or NPU.", _HINT)
    kinds = frozenset(_enum(DeviceKind, str(d), "compatibility.devices entry") for d in devices)
    minimum = OpenVinoVersion.parse(_get(obj, "min_openvino", str, "compatibility"))
    return Compatibility(minimum, kinds)


def _reference(obj: Mapping[str, Any]) -> ReferenceSet:
    _known(obj, "reference", {"files", "metric", "expected", "tolerance"})
    files = obj.get("files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ManifestError("reference.files must list the reference set's files.", _HINT)
    for f in files:
        check_relative_path(f, "reference file")
        if not f.startswith(f"{REFERENCE_DIR}/"):
            raise ManifestError(f"reference file '{f}' must be inside {REFERENCE_DIR}/.", _HINT)
    if len(set(files)) != len(files):
        raise ManifestError("reference.files lists a file twice.", _HINT)
    expected = _get(obj, "expected", float, "reference")
    tolerance = _get(obj, "tolerance", float, "reference")
    if not 0.0 <= expected <= 1.0 or not 0.0 <= tolerance < 1.0:
        raise ManifestError(
            f"reference.expected ({expected}) must be within 0..1 and "
            f"reference.tolerance ({tolerance}) within 0..1 (exclusive).",
            _HINT,
        )
    metric = _enum(Metric, _get(obj, "metric", str, "reference"), "reference.metric")
    return ReferenceSet(tuple(files), metric, expected, tolerance)
