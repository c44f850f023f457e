"""The template families of the synthetic notes (vendor side): text with slots, no PHI of its own.

Each family is a kind of clinical document with its own layout and wording: a header (always
written), body lines (a random subset, in order) and a footer. Slots in braces are filled by
``notesdata.py``: PHI slots with Faker values, ``{CLIN}`` with a clinical statement whose mentions
carry known negation, history and hypothesis. Whole families are held out for testing
(``HELD_OUT``), so the held-out metrics measure layouts and wordings the tagger never saw.
"""

from __future__ import annotations

from types import MappingProxyType

Family = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # header, body, footer

FAMILIES: MappingProxyType[str, Family] = MappingProxyType(
    {
        "discharge": (
            (
                "DISCHARGE SUMMARY",
                "Patient: {NAME}    MRN: {MRN}",
                "Admission Date: {DATE}",
                "Discharge Date: {DATE}",
                "Attending: {DOC}",
            ),
            (
                "Mr. {LAST} is a {AGE}-year-old man admitted to {HOSP} with {DX}.",
                "Hospital course: {CLIN}",
                "{CLIN}",
                "He was seen by {DOC} from cardiology on {DATE}.",
                "Discharge medications: {MED} {DOSE} daily, {MED} {DOSE} twice daily.",
                "Vitals at discharge: {VITALS}.",
                "Labs: {LABS}.",
                "Follow up with {DOC} at {HOSP} on {DATE}; call {PHONE} to confirm.",
                "Home address on file: {ADDRESS}, {CITYLINE}.",
                "{CLIN}",
            ),
            ("Dictated by {PROVIDER}, MD on {DATE}.",),
        ),
        "progress": (
            ("Progress Note - {DATE}", "Pt: {NAME} (MRN {MRN})"),
            (
                "S: {FIRST} reports feeling better today. {CLIN}",
                "O: {VITALS}. {LABS}.",
                "A: {DX}, stable. {CLIN}",
                "P: continue {MED} {DOSE}; recheck labs on {DATE}.",
                "Wife {REL} at bedside, can be reached at {PHONE}.",
                "{CLIN}",
                "Discussed with {DOC}, who agrees with the plan.",
            ),
            ("-- {PROVIDER}, NP",),
        ),
        "ed_triage": (
            (
                "EMERGENCY DEPARTMENT TRIAGE",
                "Name: {NAME}  DOB: {DATE}  Acct #: {ACCT}",
                "Arrival: {DATE} by ambulance",
            ),
            (
                "Chief complaint: {DX}.",
                "{CLIN}",
                "Triage vitals: {VITALS}.",
                "Brought in by daughter {REL} ({PHONE}).",
                "PCP: {DOC}, {HOSP}.",
                "{CLIN}",
                "Allergies: {MED}.",
                "Home meds: {MED}, {MED}.",
            ),
            ("Triage RN: {PROVIDER}",),
        ),
        "consult": (
            (
                "CONSULTATION",
                "Requesting physician: {DOC}",
                "Patient name: {NAME}",
                "Date of service: {DATE}",
                "Medical record number: {MRN}",
            ),
            (
                "Reason for consult: {DX}.",
                "HPI: {NAME} is a {AGE} y/o with {CLIN}",
                "{CLIN}",
                "Social history: works at {EMPLOYER}; lives in {CITY} with her son {REL}.",
                "Exam: {VITALS}.",
                "Impression: {CLIN}",
                "Recommend {MED} {DOSE} and follow up on {DATE}.",
                "Thank you for this referral. Questions: {EMAIL} or {PHONE}.",
            ),
            ("Electronically signed: {PROVIDER}, MD {DATE}",),
        ),
        "nursing": (
            ("Nursing shift note {DATE}", "{NAME} / {MRN} / Rm {AGE}"),
            (
                "Patient resting in bed. {CLIN}",
                "{VITALS}.",
                "Gave {MED} {DOSE} as ordered.",
                "{CLIN}",
                "Husband {REL} called at {PHONE} for update.",
                "Notified {DOC} of new {DX}.",
                "Fall precautions in place.",
            ),
            ("{PROVIDER}, RN",),
        ),
        "operative": (
            (
                "OPERATIVE REPORT",
                "PATIENT: {NAME}",
                "DATE OF SURGERY: {DATE}",
                "SURGEON: {DOC}",
                "ASSISTANT: {DOC}",
                "MR#: {MRN}",
            ),
            (
                "PREOPERATIVE DIAGNOSIS: {DX}.",
                "{CLIN}",
                "The patient was brought to the OR at {HOSP}.",
                "Estimated blood loss 150 mL. {CLIN}",
                "Antibiotic prophylaxis with {MED} {DOSE}.",
                "The patient tolerated the procedure well and went to PACU in stable condition.",
                "Postoperative plan discussed with the family ({REL}, {PHONE}).",
            ),
            ("{PROVIDER}, MD, FACS",),
        ),
        "lab_result": (
            ("Result note", "Patient {NAME}, MRN {MRN}, collected {DATE}"),
            (
                "{LABS}.",
                "{CLIN}",
                "Results reviewed by {DOC} on {DATE}.",
                "Left a message for the patient at {PHONE} to discuss.",
                "{CLIN}",
                "Repeat panel ordered for {DATE} at the {HOSP} lab.",
            ),
            ("{PROVIDER}",),
        ),
        "home_health": (
            (
                "Home Health Visit",
                "Client: {NAME}",
                "Address: {ADDRESS}, {CITYLINE}",
                "Visit date: {DATE}",
            ),
            (
                "Arrived at the home at 10:30. {CLIN}",
                "{VITALS}.",
                "Medication review: {MED}, {MED}.",
                "{CLIN}",
                "Caregiver {REL} present; emergency contact {PHONE}.",
                "Agency: {HOSP} Home Care. Supervisor {PROVIDER}.",
                "Next visit {DATE}.",
            ),
            ("Clinician: {PROVIDER}, PT",),
        ),
        "portal_message": (
            ("Patient message received {DATE}", "From: {NAME} <{EMAIL}>"),
            (
                "Hi {DOC}, this is {FIRST} {LAST}. {CLIN}",
                "I have been taking {MED} {DOSE}.",
                "{CLIN}",
                "You can call me at {PHONE} after 5.",
                "My insurance ID is {ACCT}.",
                "Thanks, {FIRST}",
            ),
            ("Routed to {PROVIDER} on {DATE}",),
        ),
        "billing": (
            (
                "ENCOUNTER / BILLING SUMMARY",
                "Guarantor: {NAME}  SSN: {SSN}",
                "Account number: {ACCT}  Encounter: {MRN}",
            ),
            (
                "Service date {DATE}, {HOSP}.",
                "Diagnosis coded: {DX}.",
                "{CLIN}",
                "Billing address: {ADDRESS}, {CITYLINE}.",
                "Employer: {EMPLOYER}.",
                "Contact: {PHONE}; {EMAIL}.",
                "Rendering provider {DOC}.",
            ),
            ("Prepared {DATE}",),
        ),
        "psych": (
            ("Behavioral Health Intake", "Client name: {NAME}   DOB {DATE}"),
            (
                "{FIRST} was referred by {DOC} for {DX}.",
                "{CLIN}",
                "Lives with partner {REL} in {CITY}.",
                "{CLIN}",
                "Currently prescribed {MED} {DOSE}.",
                "Safety plan reviewed; crisis line given. Next session {DATE}.",
                "{CLIN}",
            ),
            ("{PROVIDER}, LCSW",),
        ),
        "transfer": (
            (
                "INTERFACILITY TRANSFER",
                "Sending facility: {HOSP}",
                "Receiving facility: {HOSP}",
                "Patient: {NAME}, MRN {MRN}, SSN {SSN}",
            ),
            (
                "Transfer date {DATE}.",
                "Reason: {DX}. {CLIN}",
                "{VITALS}.",
                "Accepting physician {DOC} (phone {PHONE}, fax {FAX}).",
                "{CLIN}",
                "Next of kin: {REL}, {ADDRESS}, {CITYLINE}.",
                "Lines and drips: {MED} infusion.",
            ),
            ("Report called by {PROVIDER} at {DATE}",),
        ),
        # --- held out: the tagger never trains on these layouts --------------------------------
        "telephone": (
            (
                "TELEPHONE ENCOUNTER {DATE}",
                "Caller: {REL} (daughter of {NAME})",
                "Callback: {PHONE}",
            ),
            (
                "Caller states her mother {FIRST} {CLIN}",
                "{CLIN}",
                "Advised to go to {HOSP} if symptoms worsen.",
                "Chart {MRN} reviewed with {DOC}.",
                "Pharmacy on file: {EMPLOYER} pharmacy, fax {FAX}.",
                "Will call back on {DATE}.",
            ),
            ("Taken by {PROVIDER}",),
        ),
        "radiology": (
            (
                "RADIOLOGY REPORT",
                "Exam: CT chest with contrast",
                "Patient: {LAST}, {FIRST}",
                "MRN: {MRN}   Exam date: {DATE}",
                "Ordering: {DOC}",
            ),
            (
                "Clinical history: {DX}. {CLIN}",
                "Comparison: prior study from {DATE}.",
                "Findings: {CLIN}",
                "Impression: {CLIN}",
                "Findings were discussed with {DOC} by telephone at {PHONE} on {DATE}.",
            ),
            ("Read by {PROVIDER}, MD, {HOSP} Radiology",),
        ),
        "referral": (
            ("{HOSP}", "{ADDRESS}, {CITYLINE}", "{DATE}", "Dear {DOC},"),
            (
                "I am writing to refer {NAME} (date of birth {DATE}) for evaluation of {DX}.",
                "{CLIN}",
                "{CLIN}",
                "Current medications include {MED} and {MED}.",
                "She can be reached at {PHONE} or {EMAIL}.",
                "Her record number with us is {MRN}.",
            ),
            ("Sincerely,", "{PROVIDER}, MD"),
        ),
        "pharmacy": (
            ("Pharmacy consult - anticoagulation", "{NAME} | {MRN} | {DATE}"),
            (
                "Indication: {DX}. {CLIN}",
                "Current regimen {MED} {DOSE}; INR 2.4 on {DATE}.",
                "{CLIN}",
                "Counseled patient and spouse {REL} by phone ({PHONE}).",
                "Recommendations sent to {DOC}.",
                "{CLIN}",
            ),
            ("{PROVIDER}, PharmD",),
        ),
        # Written after the others were tuned and never inspected for errors: its metrics are the
        # check that the tuning on the four above did not leak into the reported numbers.
        "instructions": (
            ("After Visit Summary for {NAME}", "Visit with {DOC} on {DATE} at {HOSP}"),
            (
                "You were seen today for {DX}.",
                "{CLIN}",
                "Take {MED} {DOSE} every morning with food.",
                "{CLIN}",
                "Your next appointment: {DATE} with {PROVIDER}.",
                "Questions? Call the nurse line at {PHONE} or write to {EMAIL}.",
                "Your patient portal username is linked to record {MRN}.",
                "Bring this sheet and your insurance card (member {ACCT}) to the visit.",
                "{CLIN}",
            ),
            ("Printed for {FIRST} {LAST} at {ADDRESS}, {CITYLINE}",),
        ),
    }
)

HELD_OUT = ("telephone", "radiology", "referral", "pharmacy", "instructions")
TRAIN = tuple(f for f in FAMILIES if f not in HELD_OUT)

# Clinical statement frames: {X}, {Y}, {Z} are diagnoses, {M} a medication. The letters after the
# frame are each slot's modifiers in order: a = affirmed, n = negated, h = historical,
# y = hypothetical.
FRAMES: tuple[tuple[str, str], ...] = (
    ("Patient denies {X}.", "n"),
    ("He denies {X}, {Y}, or {Z}.", "nnn"),
    ("No {X} or {Y}.", "nn"),
    ("No history of {X}.", "n"),
    ("Negative for {X}.", "n"),
    ("There is no evidence of {X}.", "n"),
    ("{X} was ruled out.", "n"),
    ("She denies {X} but reports {Y}.", "na"),
    ("No {X}; however, she has {Y}.", "na"),
    ("Presents with {X} and {Y}.", "aa"),
    ("Diagnosed with {X} this admission.", "a"),
    ("Assessment: {X}.", "a"),
    ("Known {X}, controlled on {M}.", "aa"),
    ("Continues {M} for {X}.", "aa"),
    ("History of {X}.", "h"),
    ("Past medical history significant for {X} and {Y}.", "hh"),
    ("Status post {X} treated with {M}.", "hh"),
    ("Had {X} years ago.", "h"),
    ("Previously on {M}, stopped due to {X}.", "ha"),
    ("Return if {X} develops.", "y"),
    ("Call if {X} or {Y} occurs.", "yy"),
    ("Watch for {X}; continue {M}.", "ya"),
    ("Not taking {M}.", "n"),
    ("Started {M} for {X}.", "aa"),
    ("Denies {X}. Reports {Y} since yesterday.", "na"),
    ("Without {X} at this time.", "n"),
)
