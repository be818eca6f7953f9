"""The seed trial's history, for `trial-ledger demo` (issue 5).

A deterministic, plausible run of the MSC-T2DM pilot: 28 people screened,
4 screen failures (HbA1c, BMI, hepatitis B, age), 24 enrolled, three doses
each, follow-up at days 30, 90, 180 and 365, labs, adverse events (one
serious), a correction, monitor reviews and one withdrawal. Four
deviations are planted on purpose:

* S01-005 dose 2 on study day 9 (window day 6–8), and the monitor's own
  ProtocolDeviationRecorded about it;
* S01-008 a day-90 C-peptide result entered five days after collection;
* S01-012 a fasting glucose drawn the day before consent.

The ICF is a controlled document: version 1.0 is registered by the hash of
its text before the first consent, and every consent names that hash. On
7 March 2011 the protocol is amended (1.1, ICF 2.0, re-consent required);
the amended protocol file and ICF 2.0 are registered with the amendment,
and every active participant re-consents on ICF 2.0 that evening, before
any further procedure, so the amendment adds no deviation.

Two more show the ledger's history of deviations and safety clocks:

* S01-006 a day-30 visit keyed as D90 (outside its window): raised, then
  resolved the next day by the investigator's correction and its reason;
* S01-014 a serious, related, unexpected adverse event (a SUSAR) whose
  15-day expedited-reporting clock stops with a ``SafetyReportSubmitted``.

The trial ran in 2010–2011, so ``recorded_at`` comes from a simulated
clock that follows the trial's calendar (entries are made the same
afternoon), not from today's system clock. Everything else — canonical
bytes, chaining, signing, roles, refusals — is the production path. Keys,
event ids and values derive from ``seed``, so a seed gives a byte-identical
ledger.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.keys import Signer

from domain.amendments import amendment_commands
from domain.demo_datamanagement import data_management
from domain.documents import DocumentRegistry
from domain.protocol import Protocol, bundled_protocol_path
from domain.service import Command, Trial

TZ = timezone(timedelta(hours=8))
GENESIS_AT = datetime(2010, 8, 20, 9, 0, tzinfo=TZ)
FIRST_SCREENING = datetime(2010, 9, 6, 9, 0, tzinfo=TZ)

PEOPLE = {  # user id: (printed name, role)
    "admin-sponsor": ("Dr Anna Sponsor", "admin"),
    "inv-li": ("Dr Li Wei", "investigator"),
    "inv-chen": ("Dr Chen Jing", "investigator"),
    "coord-wang": ("Wang Fang", "coordinator"),
    "lab-zhao": ("Zhao Min", "lab"),
    "pharm-liu": ("Liu Yang", "pharmacy"),
    "mon-smith": ("Jane Smith", "monitor"),
}
SCREEN_FAILURES = {4: "I5", 10: "I4", 19: "E4", 25: "I3"}
WITHDRAWN = 17
DOSE2_DAY9 = 5
LATE_LAB = 8
LAB_BEFORE_CONSENT = 12
CORRECTED = 3
SERIOUS_AE = 14
MISKEYED_VISIT = 6
AMENDED_AT = datetime(2011, 3, 7, 18, 0, tzinfo=TZ)  # no procedure is ever scheduled at 18:00-18:30
ICF_TEXT = (
    "MSC-T2DM-2010 participant information sheet and informed consent form, version {version}\n\n"
    "You are invited to take part in a study of bone marrow mesenchymal stem cell transplantation\n"
    "for insulin resistance in type 2 diabetes. Taking part is voluntary; you may withdraw at any\n"
    "time without giving a reason and without any effect on your care.\n{extra}"
)
ICF_2_EXTRA = ("\nVersion 2.0 adds: follow-up visits at days 180 and 365 include a C-peptide test.\n")


def demo_documents() -> dict[str, bytes]:
    """The demo's controlled documents, file name -> bytes: two ICFs and the amended protocol."""
    protocol = bundled_protocol_path().read_text()
    protocol = protocol.replace('version = "1.0"\n', 'version = "1.1"\n', 1)
    protocol = protocol.replace('icf_version = "1.0"', 'icf_version = "2.0"', 1)
    return {
        "icf-1.0.txt": ICF_TEXT.format(version="1.0", extra="").encode(),
        "icf-2.0.txt": ICF_TEXT.format(version="2.0", extra=ICF_2_EXTRA).encode(),
        "protocol-1.1.toml": protocol.encode(),
    }


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class SimClock:
    """The demo's clock: ``recorded_at`` follows the trial's calendar."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(order=True)
class Planned:
    recorded_at: datetime
    seq: int
    user: str = field(compare=False)
    command: Command = field(compare=False)


class Scenario:
    def __init__(self, seed: int, participants: int):
        self.rng = random.Random(seed)
        self.participants = participants
        self.plan: list[Planned] = []
        self.signers = {user: Signer(Ed25519PrivateKey.from_private_bytes(self.rng.randbytes(32)))
                        for user in PEOPLE}
        self.documents = demo_documents()
        # participant id: (investigator, consent time, end of participation or None)
        self.spans: dict[str, tuple[str, datetime, datetime | None]] = {}

    def icf(self, version: str) -> dict[str, str]:
        """A consent's ICF fields: the version and its registered document's hash."""
        return {"icf_version": version, "document_sha256": _sha256(self.documents[f"icf-{version}.txt"])}

    def end(self, pid: str, when: datetime) -> None:
        inv, consented, _ = self.spans[pid]
        self.spans[pid] = (inv, consented, when)

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def add(self, user: str, type_name: str, pid: str | None, data: dict[str, Any], when: datetime, *,
            lag: timedelta | None = None, reason: str | None = None, meaning: str | None = None) -> str:
        event_id = self.new_id()
        recorded = when + (lag if lag is not None else timedelta(hours=self.rng.uniform(0.2, 6)))
        self.plan.append(Planned(recorded, len(self.plan), user, Command(
            type_name, pid, data, occurred_at=when.isoformat(), meaning=meaning, reason=reason, event_id=event_id)))
        return event_id

    def lab(self, pid: str, analyte: str, value: float | str, unit: str, when: datetime, **kw: object) -> str:
        return self.add("lab-zhao", "LabResultRecorded", pid, {"analyte": analyte, "value": value, "unit": unit},
                        when, **kw)  # type: ignore[arg-type]

    # -- one candidate ------------------------------------------------------------------------

    def candidate(self, n: int) -> None:
        rng = self.rng
        pid = f"S01-{n:03d}"
        day0 = FIRST_SCREENING + timedelta(days=3 * (n - 1))
        sex = rng.choice("FM")
        birth_year = 1932 if SCREEN_FAILURES.get(n) == "I3" else rng.randint(1950, 1985)
        inv = rng.choice(["inv-li", "inv-chen"])
        registered = day0 - timedelta(days=2) if n == LAB_BEFORE_CONSENT else day0
        self.add("coord-wang", "ParticipantRegistered", pid, {"site": "S01", "sex": sex, "birth_year": birth_year},
                 registered, lag=timedelta(minutes=2))
        if n == LAB_BEFORE_CONSENT:
            self.lab(pid, "FBG", round(rng.uniform(7.5, 11), 1), "mmol/L", day0 - timedelta(hours=25))
        consented = day0 + timedelta(minutes=30)
        self.add("coord-wang", "ConsentSigned", pid,
                 {**self.icf("1.0" if consented < AMENDED_AT else "2.0"), "obtained_by": inv, "witness": "coord-wang"},
                 consented, lag=timedelta(minutes=10))
        self.spans[pid] = (inv, consented, None)
        draw = day0 + timedelta(hours=1)
        fails = SCREEN_FAILURES.get(n)
        fbg = round(rng.uniform(7.3, 12.5), 1)
        hba1c = 6.4 if fails == "I5" else round(rng.uniform(7.2, 10.4), 1)
        bmi = 32.5 if fails == "I4" else round(rng.uniform(21.0, 29.5), 1)
        self.lab(pid, "FBG", fbg, "mmol/L", draw)
        if n == CORRECTED:
            wrong = self.lab(pid, "HBA1C", 6.8, "%", draw)
            self.add("lab-zhao", "EntryCorrected", pid, {"target_event_id": wrong, "changes": {"value": 8.6}},
                     draw + timedelta(days=1), reason="transposed digits: analyser printout reads 8.6 %")
            hba1c = 8.6
        else:
            self.lab(pid, "HBA1C", hba1c, "%", draw)
        self.lab(pid, "BMI", bmi, "kg/m2", draw)
        if sex == "F":
            self.lab(pid, "PREGNANCY", "negative", "", draw)
        self.lab(pid, "ITT", "resistant", "", day0 + timedelta(days=1, hours=1))
        assess = day0 + timedelta(days=2, hours=1)
        values = {"I3": assess.year - birth_year, "I4": bmi, "I5": hba1c}
        failed = []
        for criterion in ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "I8", "I9", "E1", "E2", "E3", "E4"):
            if criterion == "I8" and sex != "F":
                continue
            met = criterion.startswith("I")
            if criterion == fails:
                met = not met
                failed.append(criterion)
            data: dict[str, Any] = {"criterion": criterion, "met": met}
            if criterion in values:
                data["value"] = values[criterion]
            if criterion == "E4" and fails == "E4":
                data["evidence"] = "HBsAg positive"
            self.add(inv, "ScreeningAssessed", pid, data, assess, lag=timedelta(minutes=20))
        if failed:
            self.add(inv, "ScreenFailed", pid, {"failed_criteria": failed}, assess + timedelta(hours=1))
            self.end(pid, assess + timedelta(hours=1))
            return
        self.add(inv, "EligibilityConfirmed", pid, {}, assess + timedelta(hours=1), lag=timedelta(minutes=30))
        self.add("coord-wang", "Enrolled", pid, {}, assess + timedelta(hours=2), lag=timedelta(minutes=30))
        self.treat(pid, inv, n, dose1=day0 + timedelta(days=7))

    def treat(self, pid: str, inv: str, n: int, dose1: datetime) -> None:
        rng = self.rng
        days = {1: 0, 2: 9 if n == DOSE2_DAY9 else rng.choice([6, 7, 7, 8]), 3: rng.choice([12, 13, 14, 14, 15, 16])}
        for number, day in days.items():
            start = dose1 + timedelta(days=day)
            if n == WITHDRAWN and number == 3:
                withdrawn = dose1 + timedelta(days=10)
                self.add(inv, "ConsentWithdrawn", pid, {"scope": "all"}, withdrawn,
                         reason="relocating to another city; does not wish further visits")
                self.add(inv, "ParticipantWithdrawn", pid, {}, withdrawn + timedelta(minutes=20),
                         reason="consent withdrawn")
                self.end(pid, withdrawn)
                return
            route = "intra-arterial-pancreatic" if number == 1 else "intravenous"
            self.add("pharm-liu", "InfusionAdministered", pid, {
                "dose_number": number, "route": route, "lot": f"BM-MSC-{pid}-D{number}",
                "product": {"cell_source": "autologous bone marrow", "cell_count": float(rng.randint(50, 80)) * 1e6,
                            "viability_pct": round(rng.uniform(90, 98), 1)},
                "identity_checked": True,
                "ended_at": (start + timedelta(minutes=45 if number == 1 else 30)).isoformat()}, start)
            if n == DOSE2_DAY9 and number == 2:
                self.add("mon-smith", "ProtocolDeviationRecorded", pid, {
                    "category": "dosing window", "important": True,
                    "description": "Dose 2 given on study day 9 (window day 6-8): cell product release delayed",
                    "corrective_action": "release testing now scheduled 48 h before the dosing day"},
                    start + timedelta(days=2))
        self.adverse_events(pid, inv, n, dose1)
        self.add("mon-smith", "RecordReviewed", pid, {"scope": "consent, eligibility and dosing"},
                 dose1 + timedelta(days=18))
        fbg = rng.uniform(7.0, 11.0)
        for visit, day in (("D30", 30), ("D90", 90), ("D180", 180), ("D365", 365)):
            when = dose1 + timedelta(days=day + rng.randint(-2, 2), hours=1)
            visit_id = self.add(inv, "VisitCompleted", pid, {"visit": "D90" if n == MISKEYED_VISIT and visit == "D30"
                                                            else visit}, when)
            if n == MISKEYED_VISIT and visit == "D30":
                self.add(inv, "EntryCorrected", pid, {"target_event_id": visit_id, "changes": {"visit": "D30"}},
                         when + timedelta(days=1),
                         reason="visit id mis-keyed: this was the day-30 visit (see visit worksheet)")
            fbg *= rng.uniform(0.85, 1.0)
            self.lab(pid, "FBG", round(fbg, 1), "mmol/L", when)
            self.lab(pid, "HBA1C", round(rng.uniform(6.3, 8.5), 1), "%", when)
            late = timedelta(days=5, hours=3) if (n == LATE_LAB and visit == "D90") else None
            self.lab(pid, "CPEPTIDE", round(rng.uniform(0.3, 1.2), 2), "nmol/L", when, lag=late)
        self.add(inv, "ParticipantCompleted", pid, {}, dose1 + timedelta(days=368))
        self.end(pid, dose1 + timedelta(days=368))

    def amendment(self) -> None:
        """Protocol 1.1 with ICF 2.0, re-consent required; every active participant re-consents that evening."""
        commands = [Command("DocumentRegistered", None, {
            "kind": "icf", "version": "2.0", "sha256": _sha256(self.documents["icf-2.0.txt"]),
            "file_name": "icf-2.0.txt", "size": len(self.documents["icf-2.0.txt"])})]
        commands += amendment_commands(self.documents["protocol-1.1.toml"], "protocol-1.1.toml", DocumentRegistry(),
                                       icf_version="2.0", reconsent_required=True, effective_at=AMENDED_AT)
        for n, command in enumerate(commands):
            self.plan.append(Planned(AMENDED_AT + timedelta(minutes=10 + n), len(self.plan), "admin-sponsor",
                                     replace(command, occurred_at=command.occurred_at or AMENDED_AT.isoformat(),
                                             event_id=self.new_id())))
        for pid, (inv, consented, ended) in sorted(self.spans.items()):
            if consented < AMENDED_AT and (ended is None or ended > AMENDED_AT):
                self.add("coord-wang", "ConsentSigned", pid,
                         {**self.icf("2.0"), "obtained_by": inv, "witness": "coord-wang"},
                         AMENDED_AT + timedelta(minutes=30))

    def adverse_events(self, pid: str, inv: str, n: int, dose1: datetime) -> None:
        rng = self.rng
        if n == SERIOUS_AE:
            aware = dose1 + timedelta(days=1, hours=-1)
            self.add(inv, "AdverseEventReported", pid, {
                "ae_id": f"{pid}-AE1", "term": "acute pancreatitis", "grade": 3, "serious": True,
                "relatedness": "possible", "expected": False, "awareness_at": aware.isoformat()},
                aware - timedelta(hours=6), lag=timedelta(hours=13))
            self.add(inv, "AdverseEventUpdated", pid, {"ae_id": f"{pid}-AE1", "relatedness": "probable"},
                     aware + timedelta(days=3), reason="lipase peak 24 h after intra-arterial infusion")
            # serious, related and unexpected: a SUSAR, reported within its 15-day clock
            self.add(inv, "SafetyReportSubmitted", pid, {
                "ae_id": f"{pid}-AE1", "recipient": "national regulator (expedited SUSAR report)",
                "reference": f"SUSAR-2010-{n:03d}"}, aware + timedelta(days=6))
        elif rng.random() < 0.35:
            term, grade = rng.choice([("abdominal pain", 1), ("fever", 1), ("headache", 1), ("nausea", 2)])
            onset = dose1 + timedelta(days=rng.choice([0, 7, 14]), hours=5)
            self.add(inv, "AdverseEventReported", pid, {
                "ae_id": f"{pid}-AE1", "term": term, "grade": grade, "serious": False,
                "relatedness": rng.choice(["unlikely", "possible"]), "expected": True,
                "awareness_at": (onset + timedelta(hours=2)).isoformat()}, onset, lag=timedelta(hours=3))


def build(trial: Trial, clock: SimClock, protocol: Protocol, *, seed: int, participants: int) -> Scenario:
    """Write the whole history; returns the scenario (keys, people) for the summary."""
    scenario = Scenario(seed, participants)
    signers = scenario.signers
    clock.now = GENESIS_AT
    trial.initialise(protocol, study_id="MSC-T2DM", admin_id="admin-sponsor",
                     admin_name=PEOPLE["admin-sponsor"][0], signer=signers["admin-sponsor"],
                     event_id=scenario.new_id())
    for user, (name, role) in PEOPLE.items():
        if role == "admin":
            continue
        clock.now += timedelta(minutes=5)
        trial.append(Command("SignerRegistered", None, {
            "user_id": user, "name": name, "role": role, "public_key": signers[user].public_b64,
            "valid_from": GENESIS_AT.isoformat()}, event_id=scenario.new_id()), signers["admin-sponsor"])
    clock.now += timedelta(minutes=5)
    icf = scenario.documents["icf-1.0.txt"]
    trial.append(Command("DocumentRegistered", None, {
        "kind": "icf", "version": "1.0", "sha256": _sha256(icf), "file_name": "icf-1.0.txt", "size": len(icf)},
        event_id=scenario.new_id()), signers["admin-sponsor"])
    for n in range(1, participants + len(SCREEN_FAILURES) + 1):
        scenario.candidate(n)
    scenario.amendment()
    scenario.plan.sort()
    batch: list[Planned] = []
    for item in [*scenario.plan, None]:
        if batch and (item is None or item.user != batch[0].user or item.recorded_at != batch[-1].recorded_at):
            clock.now = batch[-1].recorded_at
            trial.append_batch([b.command for b in batch], signers[batch[0].user])
            batch = []
        if item is not None:
            batch.append(item)
    data_management(trial, clock, scenario)
    return scenario
