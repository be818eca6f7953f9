"""Edits that matter raise their own flag (SPEC §4, "Deviations are facts with a history").

* A correction or void of an eligibility input (sex, birth year, a screening
  assessment, a lab value a criterion checks, a screen failure) once
  eligibility was confirmed on it, or of an infusion (any of its fields)
  after it was given, is an important deviation naming the edit, even
  when the new value passes: an inspector asks why the record changed.
* A consent, eligibility or enrolment entry recorded after a procedure it
  should precede, whatever clinical time it claims, is a retrospective entry.
"""

from __future__ import annotations

from collections.abc import Iterator

from domain.rules.consent import PROCEDURES
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads

PRECEDES = {
    "ConsentSigned": PROCEDURES,
    "EligibilityConfirmed": ("InfusionAdministered",),
    "Enrolled": ("InfusionAdministered",),
}


def _eligibility_input(h: History, target: Fact) -> bool:
    if target.type in ("ParticipantRegistered", "ScreeningAssessed", "ScreenFailed"):
        return True
    if target.type == "LabResultRecorded":
        checked = {c.analyte for crit in h.protocol.criteria for c in crit.checks if c.source == "lab"}
        return target.data.get("analyte") in checked
    return False


def _what(edit: Fact) -> str:
    if edit.type == "EntryVoided":
        return "voided"
    changes = edit.data.get("changes")
    return "changed " + ", ".join(sorted(map(str, changes))) if isinstance(changes, dict) else "corrected"


def edit_that_matters(h: History) -> Iterator[Deviation]:
    for edit in h.of("EntryCorrected", "EntryVoided"):
        target = h.by_id(edit.data.get("target_event_id"))
        if target is None:
            continue
        if target.type == "InfusionAdministered":
            yield h.deviation("dosing_record_edited", True, [edit],
                              f"dose {target.data.get('dose_number')} record {_what(edit)} after the infusion "
                              f"(edit {edit.event_id})")
        elif _eligibility_input(h, target):
            confirmed = [c for c in h.of("EligibilityConfirmed")
                         if c.position < edit.position and target.occurred <= c.occurred]
            if confirmed:
                yield h.deviation("eligibility_input_edited", True, [edit],
                                  f"{target.type} {_what(edit)} after eligibility was confirmed on it "
                                  f"(edit {edit.event_id})")


def retrospective_entry(h: History) -> Iterator[Deviation]:
    for entry in h.of(*PRECEDES):
        peers = [p for p in h.of(entry.type) if p is not entry]
        for proc in h.of(*PRECEDES[entry.type]):
            covered = any(p.position < proc.position and p.occurred <= proc.occurred for p in peers)
            if proc.position < entry.position and proc.occurred >= entry.occurred and not covered:
                yield h.deviation("retrospective_entry", True, [entry],
                                  f"{entry.type} recorded after the {proc.type} it should precede "
                                  f"(claims {entry.occurred.isoformat()})")
                break


# A new procedure comes after every consent, eligibility or enrolment entry in the log, so it cannot make one of
# them retrospective; an edit's target is looked up among originals, and the book judges afresh on every edit.
EDIT_THAT_MATTERS = Rule(edit_that_matters, reads("EntryCorrected", "EntryVoided", "EligibilityConfirmed"))
RETROSPECTIVE_ENTRY = Rule(retrospective_entry, reads(tuple(PRECEDES)))
