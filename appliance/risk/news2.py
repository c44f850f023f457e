"""NEWS2, the National Early Warning Score 2 (Royal College of Physicians, 2017), computed exactly.

Why a chart and not a model: NEWS2 is the NHS standard for spotting deterioration in adults; its
value is that every ward scores it the same way, so the appliance reproduces the RCP's Chart 1
(scores per parameter) and Charts 2-3 (risk bands and clinical response) to the letter and adds
nothing learned. The chart, its rows as data (upper limit of a row, inclusive -> points)::

    respiration rate /min   <=8: 3   9-11: 1   12-20: 0   21-24: 2   >=25: 3
    SpO2 scale 1 %          <=91: 3  92-93: 2  94-95: 1   >=96: 0
    SpO2 scale 2 %          <=83: 3  84-85: 2  86-87: 1   88-92 (or >=93 on air): 0
                            on oxygen: 93-94: 1  95-96: 2  >=97: 3
    air or oxygen           air: 0   oxygen: 2
    systolic BP mmHg        <=90: 3  91-100: 2  101-110: 1  111-219: 0  >=220: 3
    pulse /min              <=40: 3  41-50: 1  51-90: 0  91-110: 1  111-130: 2  >=131: 3
    consciousness           alert: 0  new confusion, voice, pain or unresponsive (CVPU): 3
    temperature C           <=35.0: 3  35.1-36.0: 1  36.1-38.0: 0  38.1-39.0: 1  >=39.1: 2

Clinical risk: aggregate 7 or more high, 5-6 medium, a single parameter scoring 3 (a "red score")
with an aggregate of 0-4 low-medium, otherwise low.

Scale 2 is for patients with hypercapnic respiratory failure whose target range of 88-92% a
clinician has prescribed; it must be chosen on purpose, never as a default. The chart counts whole
breaths, beats, mmHg and percent, so those must be whole numbers; temperature is charted to one
decimal, and a value between two rows (35.05) belongs to the upper row: every row ends at the
chart's upper limit. Values no living adult's chart would show (a pulse of 900, a temperature of
98.6, which is Fahrenheit) are refused, as are missing parameters: a partial NEWS2 would look
reassuringly low.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from appliance.errors import ApplianceError

PROVENANCE = "NEWS2 (RCP 2017)"
RED = 3  # the points of the chart's outermost rows; one of them alone is a "red score"
MEDIUM_FROM, HIGH_FROM = 5, 7

Rows = tuple[tuple[float, int], ...]
RESPIRATION: Rows = ((8, 3), (11, 1), (20, 0), (24, 2), (math.inf, 3))
SPO2_SCALE_1: Rows = ((91, 3), (93, 2), (95, 1), (math.inf, 0))
SPO2_SCALE_2_AIR: Rows = ((83, 3), (85, 2), (87, 1), (math.inf, 0))
SPO2_SCALE_2_OXYGEN: Rows = ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (math.inf, 3))
SYSTOLIC_BP: Rows = ((90, 3), (100, 2), (110, 1), (219, 0), (math.inf, 3))
PULSE: Rows = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (math.inf, 3))
TEMPERATURE: Rows = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (math.inf, 2))
OXYGEN_POINTS = 2

_HINT = (
    "Send all seven NEWS2 parameters as charted: respiration_rate (/min), spo2 (%), on_oxygen "
    "(true/false), systolic_bp (mmHg), pulse (/min), consciousness (alert, new-confusion, voice, "
    "pain, unresponsive) and temperature (degrees Celsius); spo2_scale 2 only when a clinician "
    "has prescribed it for hypercapnic respiratory failure."
)


class VitalSignsError(ApplianceError):
    """A set of vital signs cannot be scored: a parameter is missing, malformed or implausible."""


class Consciousness(StrEnum):
    """ACVPU: alert, or new confusion / voice / pain / unresponsive (each scores 3)."""

    ALERT = "alert"
    NEW_CONFUSION = "new-confusion"
    VOICE = "voice"
    PAIN = "pain"
    UNRESPONSIVE = "unresponsive"


class SpO2Scale(IntEnum):
    SCALE_1 = 1
    SCALE_2 = 2  # hypercapnic respiratory failure, prescribed target 88-92%


class ClinicalRisk(StrEnum):
    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Limits:
    """The values the appliance accepts for one parameter: beyond them is an entry error."""

    low: float
    high: float
    unit: str
    whole: bool


# Wide enough for any living adult's observation chart; a value outside is a typo or a wrong unit.
LIMITS: Mapping[str, Limits] = {
    "respiration_rate": Limits(1, 80, "breaths/min", whole=True),
    "spo2": Limits(50, 100, "%", whole=True),
    "systolic_bp": Limits(40, 300, "mmHg", whole=True),
    "pulse": Limits(20, 300, "beats/min", whole=True),
    "temperature": Limits(25.0, 45.0, "degrees C", whole=False),
}
PARAMETERS = (
    "respiration_rate", "spo2", "on_oxygen", "systolic_bp", "pulse", "consciousness",
    "temperature",
)  # fmt: skip


@dataclass(frozen=True)
class Vitals:
    """One set of observations, checked when made: an instance can always be scored."""

    respiration_rate: int
    spo2: int
    on_oxygen: bool
    systolic_bp: int
    pulse: int
    consciousness: Consciousness
    temperature: float
    spo2_scale: SpO2Scale = SpO2Scale.SCALE_1

    def __post_init__(self) -> None:
        for name, limits in LIMITS.items():
            _check_number(name, getattr(self, name), limits)
        if not isinstance(self.on_oxygen, bool):
            raise VitalSignsError(f"on_oxygen must be true or false: {self.on_oxygen!r}.", _HINT)
        if not isinstance(self.consciousness, Consciousness):
            raise VitalSignsError(f"consciousness {self.consciousness!r} is not ACVPU.", _HINT)
        if not isinstance(self.spo2_scale, SpO2Scale):
            raise VitalSignsError(f"spo2_scale must be 1 or 2, not {self.spo2_scale!r}.", _HINT)


@dataclass(frozen=True)
class News2Score:
    """The aggregate, each parameter's points, the risk band and the RCP's clinical response."""

    total: int
    points: Mapping[str, int]
    risk: ClinicalRisk
    red_score: bool
    response: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "news2": self.total, "risk": self.risk.value, "red_score": self.red_score,
            "points": dict(self.points), "response": self.response,
        }  # fmt: skip


def points(value: float, rows: Rows) -> int:
    """The points of the first row whose upper limit (inclusive) is at least ``value``."""
    for upper, score in rows:
        if value <= upper:
            return score
    raise AssertionError("every chart ends with an infinite row")  # pragma: no cover


def spo2_points(spo2: int, scale: SpO2Scale, on_oxygen: bool) -> int:
    """SpO2 points: scale 1, or scale 2 where high saturations score only on oxygen."""
    if scale is SpO2Scale.SCALE_1:
        return points(spo2, SPO2_SCALE_1)
    return points(spo2, SPO2_SCALE_2_OXYGEN if on_oxygen else SPO2_SCALE_2_AIR)


def score(vitals: Vitals) -> News2Score:
    """NEWS2 of one set of observations (pure; ``Vitals`` is checked when made)."""
    parts = {
        "respiration_rate": points(vitals.respiration_rate, RESPIRATION),
        "spo2": spo2_points(vitals.spo2, vitals.spo2_scale, vitals.on_oxygen),
        "air_or_oxygen": OXYGEN_POINTS if vitals.on_oxygen else 0,
        "systolic_bp": points(vitals.systolic_bp, SYSTOLIC_BP),
        "pulse": points(vitals.pulse, PULSE),
        "consciousness": 0 if vitals.consciousness is Consciousness.ALERT else RED,
        "temperature": points(vitals.temperature, TEMPERATURE),
    }
    total = sum(parts.values())
    red = any(p == RED for p in parts.values())
    risk = clinical_risk(total, red)
    return News2Score(total, parts, risk, red, response(total, risk))


def clinical_risk(total: int, red_score: bool) -> ClinicalRisk:
    """Chart 2: high from 7, medium from 5, low-medium for a red score below 5, else low."""
    if total >= HIGH_FROM:
        return ClinicalRisk.HIGH
    if total >= MEDIUM_FROM:
        return ClinicalRisk.MEDIUM
    return ClinicalRisk.LOW_MEDIUM if red_score else ClinicalRisk.LOW


def response(total: int, risk: ClinicalRisk) -> str:
    """Chart 3's monitoring frequency and clinical response for the band (paraphrased)."""
    if risk is ClinicalRisk.HIGH:
        return (
            "Emergency response: continuous monitoring of vital signs; the registered nurse "
            "informs the medical team at once (at least specialist registrar level); emergency "
            "assessment by a team with critical-care competencies, including airway management; "
            "consider transfer to level 2 or 3 care."
        )
    if risk is ClinicalRisk.MEDIUM:
        return (
            "Urgent response: at least hourly monitoring; the registered nurse informs the "
            "medical team at once; urgent assessment by a clinician competent in acute illness; "
            "care in an environment with monitoring facilities."
        )
    if risk is ClinicalRisk.LOW_MEDIUM:
        return (
            "At least hourly monitoring; the registered nurse informs the medical team, who "
            "review the patient and decide whether to escalate care."
        )
    if total == 0:
        return "At least 12-hourly monitoring; continue routine NEWS2 monitoring."
    return (
        "At least 4-6-hourly monitoring; a registered nurse assesses the patient and decides "
        "whether monitoring must be more frequent or care escalated."
    )


def vitals_from(doc: Mapping[str, Any]) -> Vitals:
    """Vitals from a mapping of the parameter names (as an API body gives them).

    Raises VitalSignsError naming every missing parameter at once, or the first bad value.
    """
    missing = [name for name in PARAMETERS if doc.get(name) is None]
    if missing:
        raise VitalSignsError(
            f"NEWS2 needs all seven parameters; missing: {', '.join(missing)}. A score from "
            "fewer parameters would understate the risk, so none was computed.",
            _HINT,
        )
    try:
        consciousness = Consciousness(doc["consciousness"])
    except ValueError:
        allowed = ", ".join(c.value for c in Consciousness)
        raise VitalSignsError(
            f"consciousness '{doc['consciousness']}' is not one of {allowed}.", _HINT
        ) from None
    scale = doc.get("spo2_scale", SpO2Scale.SCALE_1)
    if scale is None:
        scale = SpO2Scale.SCALE_1
    if isinstance(scale, bool) or scale not in (1, 2):
        raise VitalSignsError(f"spo2_scale must be 1 or 2, not {scale!r}.", _HINT)
    values = {name: _whole(name, doc[name]) for name, lim in LIMITS.items() if lim.whole}
    return Vitals(
        on_oxygen=doc["on_oxygen"], consciousness=consciousness,
        temperature=doc["temperature"], spo2_scale=SpO2Scale(int(scale)), **values,
    )  # fmt: skip


def score_all(docs: Sequence[Mapping[str, Any]]) -> list[News2Score]:
    """Score several observation sets; an error names the set (``observations[i]``)."""
    out = []
    for i, doc in enumerate(docs):
        try:
            out.append(score(vitals_from(doc)))
        except VitalSignsError as exc:
            raise VitalSignsError(f"observations[{i}]: {exc.message}", exc.hint) from None
    return out


def _whole(name: str, value: Any) -> Any:
    """An integral float (90.0) as int; anything else unchanged, for Vitals to judge."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_number(name: str, value: object, limits: Limits) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VitalSignsError(f"{name} must be a number of {limits.unit}, not {value!r}.", _HINT)
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        number = math.inf
    if not math.isfinite(number) or not limits.low <= number <= limits.high:
        hint = _HINT
        if name == "temperature" and 77 <= number <= 113:  # noqa: PLR2004  (25-45 C in F)
            hint = f"{number:g} looks like degrees Fahrenheit; send degrees Celsius. {_HINT}"
        shown = value if math.isfinite(number) else f"{number:g}"  # no 5000-digit messages
        raise VitalSignsError(
            f"{name} {shown} {limits.unit} is outside {limits.low:g}-{limits.high:g} "
            f"{limits.unit}: it cannot be a real observation (a typo or a wrong unit?).",
            hint,
        )
    if limits.whole and not number.is_integer():
        raise VitalSignsError(
            f"{name} {value} {limits.unit} is not a whole number; the chart scores whole "
            f"{limits.unit} (record it as charted).",
            _HINT,
        )
