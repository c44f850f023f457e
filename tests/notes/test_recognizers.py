"""The deterministic PHI recognizers: what each must find, and clinical text they must leave."""

from __future__ import annotations

import pytest

from appliance.notes.context import ConText
from appliance.notes.recognizers import recognize
from appliance.notes.types import PhiType


def found(text: str) -> set[tuple[str, PhiType]]:
    return {(text[s.start : s.end], s.type) for s in recognize(text)}


@pytest.mark.parametrize(
    ("text", "phi", "kind"),
    [
        ("Seen on 03/14/2021 in clinic.", "03/14/2021", PhiType.DATE),
        ("Seen on 3/4/21.", "3/4/21", PhiType.DATE),
        ("Admitted 2021-03-14.", "2021-03-14", PhiType.DATE),
        ("Born March 14, 1950 at home.", "March 14, 1950", PhiType.DATE),
        ("Surgery 14 Mar 2019.", "14 Mar 2019", PhiType.DATE),
        ("Call (555) 123-4567 today.", "(555) 123-4567", PhiType.CONTACT),
        ("Call 555-123-4567 x204.", "555-123-4567 x204", PhiType.CONTACT),
        ("Call +1 555.123.4567.", "+1 555.123.4567", PhiType.CONTACT),
        ("Write to jane.doe@example.org please.", "jane.doe@example.org", PhiType.CONTACT),
        ("SSN 123-45-6789 on file.", "123-45-6789", PhiType.ID),
        ("MRN: A1234567.", "A1234567", PhiType.ID),
        ("Medical record number 00123456 reviewed.", "00123456", PhiType.ID),
        ("Chart 40956293 reviewed.", "40956293", PhiType.ID),
        ("Lives at 42 Elm Street with her son.", "42 Elm Street", PhiType.LOCATION),
        ("Mail to Springfield, IL 62704.", "IL 62704", PhiType.LOCATION),
        ("Transferred from Scottville Medical Center today.", "Scottville Medical Center",
         PhiType.ORGANIZATION),
        ("Works at Vasquez PLC as a clerk.", "Vasquez PLC", PhiType.ORGANIZATION),
    ],
)  # fmt: skip
def test_recognizer_finds(text: str, phi: str, kind: PhiType) -> None:
    assert (phi, kind) in found(text)


@pytest.mark.parametrize(
    "text",
    [
        "BP 120/80, HR 72, T 98.6 F, SpO2 97%.",
        "Take metformin 500 mg twice daily for 2 weeks.",
        "Hgb 12.5, WBC 7.4, Na 140, K 4.1, Cr 1.1.",
        "Chest x-ray 2 view shows no infiltrate.",
        "14\nDear Dr Pena,",  # a street suffix ("Dr") on the next line is not an address
    ],
)
def test_clinical_text_is_not_phi(text: str) -> None:
    assert found(text) == set()


def test_a_record_number_keeps_its_label() -> None:
    assert found("MRN 12345678") == {("12345678", PhiType.ID)}


@pytest.mark.timeout(300)  # quadratic rules took hours on these; linear ones take about a second
@pytest.mark.parametrize("unit", ["A.", "a.", "a-", "Ab-", "a@", "1,", "Ab ", "1 Ab ", "x"])
def test_a_megabyte_of_adversarial_text_is_not_a_denial_of_service(unit: str) -> None:
    """Each rule and the ConText scan stay linear on 1 MB of one repeated pattern."""
    text = unit * ((1 << 20) // len(unit))
    recognize(text)
    ConText().mentions(text)
