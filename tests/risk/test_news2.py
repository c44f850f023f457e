"""NEWS2 against the RCP 2017 chart: both sides of every row boundary, the risk bands, worked
examples built from the chart (scale 2 and oxygen included), and refusals of bad vitals.

The expected points below are typed from the chart itself, not read from the module's tables, so
a wrong row in the module fails here.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.risk.news2 import (
    ClinicalRisk,
    Consciousness,
    SpO2Scale,
    Vitals,
    VitalSignsError,
    score,
    score_all,
    vitals_from,
)

NORMAL = Vitals(
    respiration_rate=16, spo2=97, on_oxygen=False, systolic_bp=120, pulse=70,
    consciousness=Consciousness.ALERT, temperature=37.0,
)  # fmt: skip

# (value, points) on both sides of every boundary of Chart 1.
RESPIRATION = [
    (1, 3),
    (8, 3),
    (9, 1),
    (11, 1),
    (12, 0),
    (20, 0),
    (21, 2),
    (24, 2),
    (25, 3),
    (80, 3),
]
SPO2_1 = [(50, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]
SPO2_2_AIR = [(50, 3), (83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 0),
              (97, 0), (100, 0)]  # fmt: skip
SPO2_2_OXYGEN = [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 1), (94, 1),
                 (95, 2), (96, 2), (97, 3), (100, 3)]  # fmt: skip
SYSTOLIC = [(40, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3),
            (300, 3)]  # fmt: skip
PULSE = [(20, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
         (130, 2), (131, 3), (300, 3)]  # fmt: skip
TEMPERATURE = [(25.0, 3), (35.0, 3), (35.05, 1), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0),
               (38.1, 1), (39.0, 1), (39.1, 2), (45.0, 2)]  # fmt: skip


@pytest.mark.parametrize(("value", "expected"), RESPIRATION)
def test_respiration_rate_rows(value: int, expected: int) -> None:
    assert score(replace(NORMAL, respiration_rate=value)).points["respiration_rate"] == expected


@pytest.mark.parametrize(("value", "expected"), SPO2_1)
def test_spo2_scale_1_rows_on_air_and_on_oxygen(value: int, expected: int) -> None:
    for oxygen in (False, True):
        got = score(replace(NORMAL, spo2=value, on_oxygen=oxygen)).points
        assert got["spo2"] == expected
        assert got["air_or_oxygen"] == (2 if oxygen else 0)


@pytest.mark.parametrize(("value", "expected"), SPO2_2_AIR)
def test_spo2_scale_2_on_air_never_scores_high_saturations(value: int, expected: int) -> None:
    vitals = replace(NORMAL, spo2=value, spo2_scale=SpO2Scale.SCALE_2)
    assert score(vitals).points["spo2"] == expected


@pytest.mark.parametrize(("value", "expected"), SPO2_2_OXYGEN)
def test_spo2_scale_2_on_oxygen_scores_over_oxygenation(value: int, expected: int) -> None:
    vitals = replace(NORMAL, spo2=value, spo2_scale=SpO2Scale.SCALE_2, on_oxygen=True)
    got = score(vitals).points
    assert (got["spo2"], got["air_or_oxygen"]) == (expected, 2)


@pytest.mark.parametrize(("value", "expected"), SYSTOLIC)
def test_systolic_bp_rows(value: int, expected: int) -> None:
    assert score(replace(NORMAL, systolic_bp=value)).points["systolic_bp"] == expected


@pytest.mark.parametrize(("value", "expected"), PULSE)
def test_pulse_rows(value: int, expected: int) -> None:
    assert score(replace(NORMAL, pulse=value)).points["pulse"] == expected


@pytest.mark.parametrize(("value", "expected"), TEMPERATURE)
def test_temperature_rows(value: float, expected: int) -> None:
    assert score(replace(NORMAL, temperature=value)).points["temperature"] == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [("alert", 0), ("new-confusion", 3), ("voice", 3), ("pain", 3), ("unresponsive", 3)],
)
def test_consciousness_acvpu(level: str, expected: int) -> None:
    result = score(replace(NORMAL, consciousness=Consciousness(level)))
    assert result.points["consciousness"] == expected
    assert result.red_score is (expected == 3)


def _set(**points: int) -> Vitals:
    """Vitals whose parameters score the given points (the rest normal)."""
    values = {
        "respiration_rate": {0: 16, 1: 10, 2: 22, 3: 26},
        "pulse": {0: 70, 1: 95, 2: 120, 3: 140},
        "systolic_bp": {0: 120, 1: 105, 2: 95, 3: 85},
        "temperature": {0: 37.0, 1: 38.5, 2: 39.5, 3: 34.5},
        "spo2": {0: 97, 1: 95, 2: 92, 3: 90},
    }
    return replace(NORMAL, **{name: values[name][p] for name, p in points.items()})


@pytest.mark.parametrize(
    ("vitals", "total", "risk", "red"),
    [
        (NORMAL, 0, ClinicalRisk.LOW, False),
        (_set(pulse=1), 1, ClinicalRisk.LOW, False),
        (_set(pulse=2, temperature=2), 4, ClinicalRisk.LOW, False),
        (_set(respiration_rate=3), 3, ClinicalRisk.LOW_MEDIUM, True),
        (_set(respiration_rate=3, pulse=1), 4, ClinicalRisk.LOW_MEDIUM, True),
        (_set(pulse=2, temperature=2, spo2=1), 5, ClinicalRisk.MEDIUM, False),
        (_set(respiration_rate=3, pulse=2), 5, ClinicalRisk.MEDIUM, True),  # 5 outranks red
        (_set(pulse=2, temperature=2, spo2=2), 6, ClinicalRisk.MEDIUM, False),
        (_set(pulse=2, temperature=2, spo2=2, systolic_bp=1), 7, ClinicalRisk.HIGH, False),
        (_set(pulse=3, temperature=2, spo2=2), 7, ClinicalRisk.HIGH, True),
    ],
)
def test_risk_bands_at_every_threshold(
    vitals: Vitals, total: int, risk: ClinicalRisk, red: bool
) -> None:
    result = score(vitals)
    assert (result.total, result.risk, result.red_score) == (total, risk, red)


def test_responses_follow_the_band() -> None:
    assert "12-hourly" in score(NORMAL).response
    assert "4-6-hourly" in score(_set(pulse=1)).response
    assert "medical team" in score(_set(respiration_rate=3)).response
    assert score(_set(pulse=2, temperature=2, spo2=1)).response.startswith("Urgent")
    assert score(_set(pulse=3, temperature=2, spo2=2)).response.startswith("Emergency")


def test_worked_example_hypercapnic_patient_at_target_on_oxygen() -> None:
    # The reason scale 2 exists: SpO2 90% on oxygen is on target for hypercapnic respiratory
    # failure. Scale 2 scores only the oxygen (2, low); scale 1 would add 3 (5, medium).
    on_o2 = replace(NORMAL, spo2=90, on_oxygen=True)
    assert score(replace(on_o2, spo2_scale=SpO2Scale.SCALE_2)).total == 2
    assert score(replace(on_o2, spo2_scale=SpO2Scale.SCALE_2)).risk is ClinicalRisk.LOW
    assert score(on_o2).total == 5 and score(on_o2).risk is ClinicalRisk.MEDIUM


def test_worked_example_scale_2_over_oxygenated() -> None:
    # 97% on oxygen for a scale 2 patient: 3 for the saturation and 2 for the oxygen.
    vitals = replace(NORMAL, spo2=97, on_oxygen=True, spo2_scale=SpO2Scale.SCALE_2)
    result = score(vitals)
    assert (result.total, result.risk, result.red_score) == (5, ClinicalRisk.MEDIUM, True)
    assert score(replace(vitals, on_oxygen=False)).total == 0  # on air: no points


def test_worked_example_septic_picture_is_high() -> None:
    vitals = Vitals(respiration_rate=24, spo2=93, on_oxygen=False, systolic_bp=98, pulse=115,
                    consciousness=Consciousness.ALERT, temperature=38.5)  # fmt: skip
    result = score(vitals)
    assert result.points == {
        "respiration_rate": 2,
        "spo2": 2,
        "air_or_oxygen": 0,
        "systolic_bp": 2,
        "pulse": 2,
        "consciousness": 0,
        "temperature": 1,
    }
    assert (result.total, result.risk) == (9, ClinicalRisk.HIGH)


def test_worked_example_new_confusion_alone_is_a_red_score() -> None:
    result = score(replace(NORMAL, consciousness=Consciousness.NEW_CONFUSION))
    assert (result.total, result.risk) == (3, ClinicalRisk.LOW_MEDIUM)


def test_the_maximum_score_is_20() -> None:
    vitals = Vitals(respiration_rate=6, spo2=85, on_oxygen=True, systolic_bp=80, pulse=35,
                    consciousness=Consciousness.UNRESPONSIVE, temperature=34.0)  # fmt: skip
    assert score(vitals).total == 20


BODY: dict[str, Any] = {
    "respiration_rate": 16, "spo2": 97, "on_oxygen": False, "systolic_bp": 120, "pulse": 70,
    "consciousness": "alert", "temperature": 37.0,
}  # fmt: skip


def test_a_body_scores_like_vitals_and_integral_floats_are_whole() -> None:
    assert score(vitals_from(BODY)) == score(NORMAL)
    assert score(vitals_from(BODY | {"pulse": 70.0, "spo2_scale": None})) == score(NORMAL)
    assert score(vitals_from(BODY | {"spo2": 97, "spo2_scale": 2})).points["spo2"] == 0


def test_missing_vitals_are_named_and_nothing_is_scored() -> None:
    doc = {k: v for k, v in BODY.items() if k not in ("pulse", "temperature")}
    with pytest.raises(VitalSignsError, match="missing: pulse, temperature") as err:
        vitals_from(doc)
    assert "understate" in err.value.message and err.value.hint


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pulse": 900}, "pulse 900 beats/min is outside 20-300"),
        ({"respiration_rate": 0}, "respiration_rate 0 breaths/min is outside 1-80"),
        ({"spo2": 101}, "spo2 101 % is outside 50-100"),
        ({"systolic_bp": -5}, "systolic_bp -5 mmHg is outside"),
        ({"temperature": 98.6}, "temperature 98.6 degrees C is outside 25-45"),
        ({"temperature": math.nan}, "temperature nan"),
        ({"pulse": 10**5000}, "pulse inf beats/min is outside"),
        ({"pulse": 72.5}, "pulse 72.5 beats/min is not a whole number"),
        ({"pulse": "72"}, "pulse must be a number"),
        ({"pulse": True}, "pulse must be a number"),
        ({"on_oxygen": "yes"}, "on_oxygen must be true or false"),
        ({"consciousness": "drowsy"}, "consciousness 'drowsy' is not one of alert, new-conf"),
        ({"spo2_scale": 3}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": True}, "spo2_scale must be 1 or 2"),
    ],
)
def test_implausible_or_malformed_vitals_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(VitalSignsError, match=message):
        vitals_from(BODY | change)


def test_fahrenheit_gets_a_hint() -> None:
    with pytest.raises(VitalSignsError) as err:
        vitals_from(BODY | {"temperature": 98.6})
    assert err.value.hint and "Fahrenheit" in err.value.hint


def test_vitals_cannot_be_made_invalid_directly() -> None:
    with pytest.raises(VitalSignsError, match="pulse"):
        replace(NORMAL, pulse=0)


def test_score_all_names_the_bad_observation_set() -> None:
    assert [s.total for s in score_all([BODY, BODY | {"pulse": 140}])] == [0, 3]
    with pytest.raises(VitalSignsError, match=r"observations\[1\]: pulse 900"):
        score_all([BODY, BODY | {"pulse": 900}])


@given(
    rr=st.integers(1, 80), spo2=st.integers(50, 100), oxygen=st.booleans(),
    sbp=st.integers(40, 300), pulse=st.integers(20, 300),
    level=st.sampled_from(list(Consciousness)), temp=st.floats(25.0, 45.0),
    scale=st.sampled_from(list(SpO2Scale)),
)  # fmt: skip
def test_any_plausible_vitals_score_consistently(
    rr: int, spo2: int, oxygen: bool, sbp: int, pulse: int, level: Consciousness, temp: float,
    scale: SpO2Scale,
) -> None:  # fmt: skip
    result = score(Vitals(rr, spo2, oxygen, sbp, pulse, level, temp, scale))
    assert result.total == sum(result.points.values()) and 0 <= result.total <= 20
    assert set(result.points.values()) <= {0, 1, 2, 3}
    assert result.red_score == (3 in result.points.values())
    if result.total >= 7:
        assert result.risk is ClinicalRisk.HIGH
    elif result.total >= 5:
        assert result.risk is ClinicalRisk.MEDIUM
    else:
        assert result.risk is (ClinicalRisk.LOW_MEDIUM if result.red_score else ClinicalRisk.LOW)
