"""Analysing a closed study: the Analyser protocol, the routing rules, one OpenVINO analyser.

The imaging model (preprocessing, summary of its outputs) is written separately; the study path
depends only on :class:`Analyser`: ``analyse(datasets) -> Findings``. :class:`ModelAnalyser` runs
a model served by the inference registry slice by slice, taking each image as it comes (the study
worker reads them from the spool one at a time). How a slice becomes the model's input and how
the outputs become a :class:`SliceFinding` are functions passed in; the defaults here
(:func:`slice_to_input`, :func:`summarise`) are simple and model-agnostic, and the imaging
package's ``appliance.imaging.preprocess`` functions of the same shape replace them when they land.

Routing is data (``<state>/dicom/routing.json``): the first rule whose modality (and, if given,
body part) matches the study names the model. A study no rule matches is not analysed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from appliance.errors import ApplianceError, ConfigError

FloatArray = npt.NDArray[np.float32]
_ROUTING_HINT = (
    'Write it as {"rules": [{"modality": "CT", "body_part": "CHEST", "model": "chest-ct"}]} '
    "(body_part optional)."
)


class AnalysisError(ApplianceError):
    """A study could not be analysed (model missing, images unusable)."""


@dataclass(frozen=True)
class SliceFinding:
    """What the model says about one image: a score in 0..1 and a heat map (H, W) in 0..1."""

    score: float
    heatmap: FloatArray


class SliceResult(Protocol):
    """Anything with a score and a heat map (the imaging package's SliceFinding fits)."""

    @property
    def score(self) -> float: ...

    @property
    def heatmap(self) -> Any: ...


@dataclass(frozen=True)
class Findings:
    """The result of one study: per-image findings, the study score, and where it came from.

    ``slices`` pairs each source SOP Instance UID with its finding (its score alone, but for the
    worst, when analysed with ``keep_heatmaps`` false); ``provenance`` holds the model name,
    version, bundle digest, device and OpenVINO version.
    """

    score: float
    slices: list[tuple[str, SliceResult]]
    provenance: Mapping[str, str] = field(default_factory=dict)

    @property
    def worst(self) -> tuple[str, SliceResult]:
        """The image with the highest score (its heat map goes into the Secondary Capture)."""
        return max(self.slices, key=lambda item: float(item[1].score))


class Analyser(Protocol):
    """Turns the images of one study into findings; raises AnalysisError.

    ``datasets`` is iterated once, in order, and no image is kept once analysed, so a lazy
    iterable (the spool read image by image) costs the memory of one image. With
    ``keep_heatmaps`` false only the highest-scoring image's heat map is kept (what the
    Secondary Capture shows); every image keeps its score.
    """

    def analyse(self, datasets: Iterable[Dataset], *, keep_heatmaps: bool = True) -> Findings: ...


class ServedModelLike(Protocol):
    """What ModelAnalyser needs of a served model (inference.registry.ServedModel)."""

    @property
    def provenance(self) -> Any: ...

    @property
    def compiled(self) -> Any: ...

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]: ...


class ModelSource(Protocol):
    """What ModelAnalyser needs of the registry: the current model of a name."""

    def get(self, name: str, version: str | None = None) -> Any: ...


def slice_to_input(ds: Dataset) -> FloatArray:
    """One image as float32 [1, 1, H, W]: rescaled to modality units, then to zero mean, unit
    variance (a model-agnostic default; the imaging package brings the real preprocessing)."""
    pixels = ds.pixel_array.astype(np.float32)
    if pixels.ndim != 2:  # noqa: PLR2004 (one greyscale frame)
        raise AnalysisError(
            f"an image has pixel shape {pixels.shape}; the analyser takes one greyscale frame.",
            "Route this kind of study to a model made for it.",
        )
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0))
    pixels = pixels * slope + intercept
    pixels = (pixels - pixels.mean()) / (pixels.std() + 1e-6)
    return pixels[np.newaxis, np.newaxis, :, :].astype(np.float32)


def summarise(outputs: Mapping[str, Any]) -> SliceFinding:
    """The first output as a probability map: its maximum is the score, the map the heat map."""
    out = np.asarray(next(iter(outputs.values())), dtype=np.float32)
    heat = out.reshape(out.shape[-2:]) if out.ndim >= 2 else np.zeros((1, 1), np.float32)  # noqa: PLR2004
    heat = np.clip(heat, 0.0, 1.0)
    return SliceFinding(float(out.max()), heat.astype(np.float32))


def _is_imaging_model(served: Any) -> bool:
    """The imaging package's models answer ``score`` and ``heatmap`` (models/imaging-anomaly)."""
    from appliance.imaging.postprocess import HEATMAP, SCORE

    names = {name for port in served.compiled.outputs for name in port.get_names()}
    return {SCORE, HEATMAP} <= names


class ModelAnalyser:
    """Runs the served model ``model`` on every image of a study, one slice at a time."""

    def __init__(
        self,
        models: ModelSource,
        model: str,
        *,
        to_input: Callable[[Dataset], FloatArray] | None = None,
        summary: Callable[[Mapping[str, Any]], SliceResult] | None = None,
    ) -> None:
        self.models = models
        self.model = model
        self.to_input = to_input
        self.summary = summary

    def _functions(
        self, served: Any
    ) -> tuple[Callable[[Dataset], FloatArray], Callable[[Mapping[str, Any]], SliceResult]]:
        """The given functions; else the imaging package's for its models; else the defaults."""
        if self.to_input is not None and self.summary is not None:
            return self.to_input, self.summary
        if _is_imaging_model(served):
            from appliance.imaging import postprocess, preprocess

            return (self.to_input or preprocess.slice_to_input,
                    self.summary or postprocess.summarise)  # fmt: skip
        return self.to_input or slice_to_input, self.summary or summarise

    def analyse(self, datasets: Iterable[Dataset], *, keep_heatmaps: bool = True) -> Findings:
        """The findings of every image (see :class:`Analyser`); raises AnalysisError."""
        served = self.models.get(self.model)  # held to the end: a hot swap does not split a study
        name = served.compiled.inputs[0].get_any_name()
        to_input, summary = self._functions(served)
        slices: list[tuple[str, SliceResult]] = []
        worst = -1  # the index of the highest score so far, the first of equals as Findings.worst
        for ds in datasets:
            finding = summary(served.infer({name: to_input(ds)}))
            if not keep_heatmaps:
                if worst < 0 or float(finding.score) > float(slices[worst][1].score):
                    if worst >= 0:
                        slices[worst] = (slices[worst][0], _score_only(slices[worst][1]))
                    worst = len(slices)
                else:
                    finding = _score_only(finding)
            slices.append((str(ds.SOPInstanceUID), finding))
        if not slices:
            raise AnalysisError("the study has no images.", "Ask the sender to resend the study.")
        score = max(float(f.score) for _, f in slices)
        return Findings(score, slices, served.provenance.as_dict())


_NO_HEATMAP: FloatArray = np.zeros((0, 0), np.float32)
_NO_HEATMAP.flags.writeable = False  # one array shared by every score-only finding


def _score_only(finding: SliceResult) -> SliceFinding:
    """``finding`` without its heat map: thousands of them would cost as much as the images."""
    return SliceFinding(float(finding.score), _NO_HEATMAP)


@dataclass(frozen=True)
class Rule:
    """Studies of ``modality`` (and ``body_part`` when given) go to ``model``."""

    modality: str
    model: str
    body_part: str | None = None

    def matches(self, modality: str, body_part: str) -> bool:
        return self.modality.upper() == modality.upper() and (
            self.body_part is None or self.body_part.upper() == body_part.upper()
        )


def routing_file(dicom_dir: Path) -> Path:
    return dicom_dir / "routing.json"


def load_rules(dicom_dir: Path) -> list[Rule]:
    """The routing rules (none when the file does not exist); raises ConfigError."""
    path = routing_file(dicom_dir)
    try:
        raw = json.loads(path.read_bytes())
        return [Rule(**entry) for entry in raw["rules"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the routing rules {path} cannot be used ({exc}).", _ROUTING_HINT
        ) from exc


def route(rules: Sequence[Rule], datasets: Sequence[Dataset]) -> str | None:
    """The model the first matching rule names for this study, or None."""
    if not datasets:
        return None
    first = datasets[0]
    modality, body_part = str(first.get("Modality", "")), str(first.get("BodyPartExamined", ""))
    for rule in rules:
        if rule.matches(modality, body_part):
            return rule.model
    return None
