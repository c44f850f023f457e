"""Synthetic clinical notes with known PHI and known clinical mentions (vendor and test side).

Notes are drawn from the template families of ``notetemplates.py``; PHI slots are filled by Faker
(names, addresses, companies) and by seeded format choices (dates in ten formats, phone numbers in
six, record numbers in five), so every PHI span and every medication or diagnosis mention, with its
negation, history and hypothesis, is known by construction. Same seed, same Faker release: same
notes, character for character (Faker is pinned in pyproject.toml for that reason).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker

from appliance.notes.lexicon import DIAGNOSES, MEDICATIONS
from appliance.notes.types import Mention, MentionKind, PhiSpan, PhiType
from provisioning.notetemplates import FAMILIES, FRAMES

_SLOT = re.compile(r"\{([A-Z]+)\}")
# Dates fall in a fixed window, not one relative to today: Faker's "-90y".."+1y" moved with the
# calendar, so the recipe built other notes (and another model) on every new day. The window is
# what "-90y".."+1y" meant on the day the committed model was built, so it rebuilds unchanged.
_BUILT_ON = date(2026, 11, 27)
DATE_RANGE = (_BUILT_ON + timedelta(days=-90 * 365.24), _BUILT_ON + timedelta(days=365.24))

_DATE_FORMATS = (
    "%m/%d/%Y", "%-m/%-d/%Y", "%m/%d/%y", "%-m/%-d/%y", "%Y-%m-%d", "%B %-d, %Y", "%b %-d, %Y",
    "%-d %B %Y", "%d %b %Y", "%m-%d-%Y",
)  # fmt: skip
_PHONES = ("(###) ###-####", "###-###-####", "###.###.####", "+1 ###-###-####", "### ### ####",
           "###-###-#### x###")  # fmt: skip
_MRNS = ("########", "MR-#######", "#########", "A#######", "00######")
_HOSPITAL_KINDS = ("Memorial Hospital", "Medical Center", "General Hospital", "Family Clinic",
                   "Regional Medical Center", "Community Hospital", "Health System",
                   "Specialty Clinic", "Children's Hospital", "Surgical Center")  # fmt: skip
_DOSES = ("5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "81 mg", "100 mg", "250 mg", "500 mg",
          "1000 mg", "2 puffs", "10 units", "0.5 mg", "1 g")  # fmt: skip
_MODS = {"a": {}, "n": {"negated": True}, "h": {"historical": True},
         "y": {"hypothetical": True}}  # fmt: skip


@dataclass(frozen=True)
class SynthNote:
    """One synthetic note and its truth: PHI spans and clinical mentions (offsets into text)."""

    family: str
    text: str
    phi: tuple[PhiSpan, ...]
    mentions: tuple[Mention, ...]


class _Writer:
    """Fills one note: appends literal text and slot values, recording each value's span."""

    def __init__(self, fake: Faker, rng: random.Random) -> None:
        self.fake, self.rng = fake, rng
        self.parts: list[str] = []
        self.size = 0
        self.phi: list[PhiSpan] = []
        self.mentions: list[Mention] = []
        self.patient = (fake.first_name(), fake.last_name())
        self.date_format = rng.choice(_DATE_FORMATS)
        self.phone_format = rng.choice(_PHONES)

    def put(self, text: str, kind: PhiType | None = None) -> None:
        if kind is not None and text:
            self.phi.append(PhiSpan(self.size, self.size + len(text), kind))
        self.parts.append(text)
        self.size += len(text)

    def mention(self, kind: MentionKind, mods: str = "a") -> None:
        table = MEDICATIONS if kind is MentionKind.MEDICATION else DIAGNOSES
        name = self.rng.choice(sorted(table))
        form = self.rng.choice(table[name])
        if len(form) <= 5 and " " not in form and self.rng.random() < 0.7:  # noqa: PLR2004
            form = form.upper()  # abbreviations are mostly written in capitals
        elif self.rng.random() < 0.2:  # noqa: PLR2004
            form = form.capitalize()
        start = self.size
        self.put(form)
        self.mentions.append(Mention(start, self.size, kind, name, **_MODS[mods]))

    def fill(self, template: str) -> None:
        at = 0
        for m in _SLOT.finditer(template):
            self.put(template[at : m.start()])
            self.slot(m.group(1))
            at = m.end()
        self.put(template[at:])

    def slot(self, name: str) -> None:  # noqa: PLR0912 (one branch per slot is the clearest)
        f, rng = self.fake, self.rng
        if name == "NAME":
            self.put(self.person(*self.patient), PhiType.NAME)
        elif name == "FIRST":
            self.put(self.patient[0], PhiType.NAME)
        elif name == "LAST":
            self.put(self.patient[1], PhiType.NAME)
        elif name in ("DOC", "PROVIDER", "REL"):
            if name == "DOC":
                self.put(rng.choice(("Dr. ", "Dr ", "Doctor ", "DR. ")))
            full = name != "DOC" or rng.random() < 0.5  # noqa: PLR2004
            person = self.person(f.first_name(), f.last_name()) if full else f.last_name()
            self.put(person, PhiType.NAME)
        elif name == "DATE":
            self.put(f.date_between_dates(*DATE_RANGE).strftime(self.pick_date()), PhiType.DATE)
        elif name in ("PHONE", "FAX"):
            fmt = self.phone_format if rng.random() < 0.7 else rng.choice(_PHONES)  # noqa: PLR2004
            self.put(f.numerify(fmt.replace("###-", "%##-", 1)), PhiType.CONTACT)
        elif name == "EMAIL":
            self.put(f.email(), PhiType.CONTACT)
        elif name in ("MRN", "ACCT"):
            self.put(f.bothify(rng.choice(_MRNS)), PhiType.ID)
        elif name == "SSN":
            self.put(f.ssn(), PhiType.ID)
        elif name == "ADDRESS":
            self.put(f.street_address(), PhiType.LOCATION)
        elif name == "CITYLINE":
            self.put(f"{f.city()}, {f.state_abbr()} {f.zipcode()}", PhiType.LOCATION)
        elif name == "CITY":
            self.put(f.city(), PhiType.LOCATION)
        elif name == "HOSP":
            place = rng.choice((f.last_name(), f.city(), f.last_name()))
            self.put(f"{place} {rng.choice(_HOSPITAL_KINDS)}", PhiType.ORGANIZATION)
        elif name == "EMPLOYER":
            self.put(f.company(), PhiType.ORGANIZATION)
        else:
            self.clinical(name)

    def clinical(self, name: str) -> None:
        rng = self.rng
        if name == "AGE":
            self.put(str(rng.randint(18, 89)))
        elif name == "DOSE":
            self.put(rng.choice(_DOSES))
        elif name == "VITALS":
            self.put(f"BP {rng.randint(90, 180)}/{rng.randint(50, 110)}, HR {rng.randint(50, 130)}"
                     f", RR {rng.randint(10, 30)}, T {rng.randint(960, 1030) / 10} F, "
                     f"SpO2 {rng.randint(85, 100)}%")  # fmt: skip
        elif name == "LABS":
            self.put(f"Hgb {rng.randint(70, 170) / 10}, WBC {rng.randint(30, 200) / 10}, "
                     f"Na {rng.randint(128, 148)}, K {rng.randint(30, 55) / 10}, "
                     f"Cr {rng.randint(5, 40) / 10}")  # fmt: skip
        elif name == "MED":
            self.mention(MentionKind.MEDICATION)
        elif name == "DX":
            self.mention(MentionKind.DIAGNOSIS)
        elif name == "CLIN":
            self.frame()
        else:
            raise KeyError(f"unknown slot {{{name}}} in a note template")

    def frame(self) -> None:
        template, mods = self.rng.choice(FRAMES)
        at, slots = 0, iter(mods)
        for m in re.finditer(r"\{([XYZM])\}", template):
            self.put(template[at : m.start()])
            kind = MentionKind.MEDICATION if m.group(1) == "M" else MentionKind.DIAGNOSIS
            self.mention(kind, next(slots))
            at = m.end()
        self.put(template[at:])

    def person(self, first: str, last: str) -> str:
        style = self.rng.random()
        if style < 0.55:  # noqa: PLR2004
            return f"{first} {last}"
        if style < 0.7:  # noqa: PLR2004
            return f"{first} {self.fake.random_uppercase_letter()}. {last}"
        if style < 0.82:  # noqa: PLR2004
            return f"{last}, {first}"
        if style < 0.92:  # noqa: PLR2004
            return f"{first[0]}. {last}"
        return f"{first} {last}".upper()

    def pick_date(self) -> str:
        return self.date_format if self.rng.random() < 0.8 else self.rng.choice(_DATE_FORMATS)  # noqa: PLR2004

    def note(self, family: str) -> SynthNote:
        header, body, footer = FAMILIES[family]
        count = self.rng.randint(max(2, len(body) // 2), len(body))
        chosen = sorted(self.rng.sample(range(len(body)), count))
        lines = [*header, *(body[i] for i in chosen), *footer]
        for i, line in enumerate(lines):
            if i:
                self.put("\n" if self.rng.random() < 0.85 else "\n\n")  # noqa: PLR2004
            self.fill(line)
        return SynthNote(family, "".join(self.parts), tuple(self.phi), tuple(self.mentions))


def generate(families: tuple[str, ...], count: int, seed: int) -> Iterator[SynthNote]:
    """``count`` notes, round-robin over ``families``, from a generator seeded with ``seed``."""
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)  # noqa: S311 (synthetic data, not secrets)
    for i in range(count):
        yield _Writer(fake, rng).note(families[i % len(families)])
