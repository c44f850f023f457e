"""Deterministic PHI recognizers: the formats a rule finds better than a learned tagger.

Dates (numeric with a year, ISO, month names), phone and fax numbers (North American), social
security numbers, medical record and account numbers after their label, e-mail addresses, URLs,
street addresses and ZIP codes after a state. Each is a regular expression with its PHI type;
they run on the whole note and their spans are merged with the tagger's (``pipeline.py``). They
are written to miss little: a false hit costs a redacted word, a miss leaks PHI. Every repetition
that can follow a failed start is bounded, so no note makes a rule take quadratic time (a 1 MB
note of "A.A.A..." once took hours; tests/notes/test_recognizers.py sends such notes).
"""

from __future__ import annotations

import re

from appliance.notes.types import PhiSpan, PhiType

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_D, _M = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])"
_YEAR = r"(?:19|20)\d{2}"
_STREET = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|drive|dr|lane|ln|court|ct|way|place|pl|"
    r"parkway|pkwy|circle|cir|terrace|ter|trail|trl|highway|hwy|square|sq|loop|row|crossing|"
    r"xing|path|pike|alley|plaza|ridge|park|run|walk|view|heights|hills?|mills?|springs?|"
    r"points?|ports?|station|vista|villages?|camp|estates?|gardens?|manor|meadows?|orchard|"
    r"passage|ranch|shores?|summit|unions?|valleys?|viaduct|wells?|fields?|forge|forks?|"
    r"glen|harbor|haven|island|junction|keys?|knolls?|landing|locks?|lodge|mission|mount|"
    r"neck|oval|pass|pines|prairie|radial|rapids?|rest|route|spur|stream|track|turnpike|"
    r"underpass|branch|bridge|brook|burg|bypass|canyon|cape|causeway|center|cliffs?|club|"
    r"common|corners?|course|cove|creek|crest|curve|dale|dam|divide|expressway|extension|"
    r"falls?|ferry|flats?|ford|fort|freeway|gateway|green|grove|inlet|lake|land|light|"
    r"mall|motorway|overpass|plains?|port|river|shoal|skyway|stravenue|throughway|tunnel|"
    r"ville|well)\.?"
)
_FACILITY = (
    r"Memorial Hospital|Medical Center|General Hospital|Community Hospital|Children's Hospital|"
    r"Hospital|Clinic|Health System|Health Center|Surgical Center|Surgery Center|Medical Group|"
    r"Health|Healthcare|Infirmary|Hospice|Nursing Home|Rehabilitation Center|Urgent Care|"
    r"Pharmacy|Home Care|Laboratories|Lab"
)
_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH "
    "NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY AS GU MP PR VI UM AA AE AP"
)

RULES: tuple[tuple[PhiType, re.Pattern[str]], ...] = (
    (PhiType.DATE, re.compile(rf"\b{_M}[/.-]{_D}[/.-](?:{_YEAR}|\d{{2}})\b")),
    (PhiType.DATE, re.compile(rf"\b{_YEAR}[/.-]{_M}[/.-]{_D}\b")),
    (PhiType.DATE, re.compile(rf"\b{_MONTH}\s+{_D}(?:st|nd|rd|th)?(?:,?\s+{_YEAR})?\b", re.I)),
    (PhiType.DATE, re.compile(rf"\b{_D}(?:st|nd|rd|th)?\s+{_MONTH}(?:,?\s+{_YEAR})?\b", re.I)),
    (PhiType.DATE, re.compile(rf"\b{_MONTH}\s+{_YEAR}\b", re.I)),
    (
        PhiType.CONTACT,
        re.compile(
            r"(?<![\w-])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}"
            r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?\b"
        ),
    ),
    (PhiType.CONTACT, re.compile(r"(?<![\w-])\d{10}(?![\w-])")),
    (PhiType.CONTACT, re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}\b")),
    (PhiType.CONTACT, re.compile(r"\b(?:https?://|www\.)[^\s<>\"']+", re.I)),
    (PhiType.ID, re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")),
    (
        PhiType.ID,
        re.compile(  # a number after its label; the label itself stays
            r"(?i:\b(?:mrn|medical record(?: number| no\.?)?|record|acct|account|member|policy|"
            r"insurance|subscriber|ssn|id|encounter|visit|fin|csn|claim|license|dl)\b"
            r"(?:\s*(?:#|no\.?|number|id))?\s*[:#]?\s*)"
            r"(?P<phi>[A-Z]{0,4}-?\d[\dA-Z-]{3,18})\b"
        ),
    ),
    (PhiType.ID, re.compile(r"(?<![\w.,/-])(?:[A-Z]{1,3}-?)?\d{7,}(?![\w.,/-]\d|[\w-])")),
    (
        PhiType.ORGANIZATION,
        re.compile(
            rf"(?:\b[A-Z][\w'.-]{{0,30}}[ \t]+){{1,3}}(?:{_FACILITY})\b(?:[ \t]+(?:{_FACILITY})\b)?"
        ),
    ),
    (
        PhiType.ORGANIZATION,
        re.compile(
            r"\b[A-Z][a-z]+(?:[,-][ \t]{0,3}[A-Z][a-z]+){0,3}"
            r"(?:,?[ \t]+(?:and|&)[ \t]+[A-Z][a-z]+)?"
            r",?[ \t]+(?:LLC|PLC|Inc|Ltd|Group|and Sons|PC|LLP|Corp|Co)\b\.?"
        ),
    ),
    (PhiType.ORGANIZATION, re.compile(r"\b[A-Z][a-z]+, [A-Z][a-z]+ and [A-Z][a-z]+\b")),
    (
        PhiType.LOCATION,
        re.compile(
            rf"\b\d{{1,6}}(?:[ \t]+[A-Z][a-z]+\.?){{1,3}}[ \t]+(?i:{_STREET})\b"
            r"(?:,?\s+(?i:apt\.?|suite|ste\.?|unit|#)\s*[\w-]+)?",
        ),
    ),
    (PhiType.LOCATION, re.compile(rf"\b(?:{_STATES.replace(' ', '|')})\s+\d{{5}}(?:-\d{{4}})?\b")),
    (PhiType.LOCATION, re.compile(r"(?i:\b(?:p\.?\s?o\.?\s+box)\s+\d+)")),
)


def recognize(text: str) -> list[PhiSpan]:
    """Every span a rule finds in ``text`` (possibly overlapping; the merge resolves overlaps)."""
    spans: list[PhiSpan] = []
    for kind, pattern in RULES:
        for m in pattern.finditer(text):
            start, end = m.span("phi") if "phi" in pattern.groupindex else m.span()
            if end > start:
                spans.append(PhiSpan(start, end, kind))
    return sorted(spans)
