"""ConText: negation, history and hypothesis with scope, termination and pseudo-triggers."""

from __future__ import annotations

import pytest

from appliance.notes.context import ConText
from appliance.notes.types import Mention, MentionKind


@pytest.fixture(scope="module")
def context() -> ConText:
    return ConText()


def flags(context: ConText, text: str) -> dict[str, tuple[bool, bool, bool]]:
    return {text[m.start : m.end].lower(): (m.negated, m.historical, m.hypothetical)
            for m in context.mentions(text)}  # fmt: skip


NEG, HIST, HYP, NONE = (
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (False,) * 3,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patient denies chest pain.", {"chest pain": NEG}),
        ("No history of diabetes.", {"diabetes": NEG}),
        ("History of diabetes.", {"diabetes": HIST}),
        ("He denies fever, chills, or cough.", {"fever": NEG, "chills": NEG, "cough": NEG}),
        ("Denies chest pain but reports nausea.", {"chest pain": NEG, "nausea": NONE}),
        ("No fever; however, she has a cough.", {"fever": NEG, "cough": NONE}),
        ("Pneumonia was ruled out.", {"pneumonia": NEG}),
        ("Return if headache develops.", {"headache": HYP}),
        ("Had a stroke years ago.", {"stroke": HIST}),
        ("Status post myocardial infarction.", {"myocardial infarction": HIST}),
        ("Presents with chest pain.", {"chest pain": NONE}),
        ("No change in edema.", {"edema": NONE}),  # pseudo-trigger: "no change" negates nothing
        ("Not taking metformin.", {"metformin": NEG}),
        ("Denies dyspnea.\nReports palpitations.", {"dyspnea": NEG, "palpitations": NONE}),
    ],
)
def test_context_modifiers(context: ConText, text: str, expected: dict[str, object]) -> None:
    assert flags(context, text) == expected


def test_mentions_carry_concept_kind_and_offsets(context: ConText) -> None:
    text = "Continue Lasix for CHF."
    lasix, chf = context.mentions(text)
    assert lasix == Mention(9, 14, MentionKind.MEDICATION, "furosemide")
    assert chf == Mention(19, 22, MentionKind.DIAGNOSIS, "heart failure")


def test_the_longest_concept_wins_and_words_are_whole(context: ConText) -> None:
    text = "Known type 2 diabetes mellitus; fluid restriction."
    (m,) = context.mentions(text)
    assert m.text == "type 2 diabetes mellitus"  # not "diabetes", and "flu" not in "fluid"
