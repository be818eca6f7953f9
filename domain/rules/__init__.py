"""Deviation rules (SPEC §4, "recorded but flagged"): the ledger records reality, these flag it.

Each rule is a pure function of one participant's history (``History``:
the protocol, the participant's events with their global positions, and the
ICF versions in force) returning typed ``Deviation`` values. Where to look:

| deviation kind | module |
| --- | --- |
| procedure before consent, data after withdrawal, ICF not current | ``consent.py`` |
| enrolment with a failed/unassessed criterion, eligibility against labs | ``eligibility.py`` |
| dose to a non-enrolled/ineligible participant, window, order, missing, route, identity | ``dosing.py`` |
| follow-up visit outside its window | ``visits.py`` |
| late entry, serious AE reported late | ``timeliness.py`` |
| explicit ``ProtocolDeviationRecorded`` | ``recorded.py`` |
| eligibility incomplete, lab missing, assessment contradicting its lab, age to confirm | ``eligibility.py`` |
| an edit of an eligibility input or a dose record; retrospective consent/eligibility/enrolment | ``edits.py`` |
| a procedure after withdrawal, completion or death | ``terminal.py`` |
| a SUSAR's expedited report overdue | ``safety.py`` |
| procedure after an amendment without re-consent | ``reconsent.py`` |

``find_deviations`` judges the record as it stands now; ``deviation_history``
(book.py) judges each event as it is appended and keeps every deviation
ever raised, open or resolved: that is what the projection and
``deviations`` show (SPEC §4, "Deviations are facts with a history").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from domain.protocol import Protocol
from domain.rules.book import DeviationBook, ProtocolVersion, Tracked, deviation_history
from domain.rules.consent import DATA_AFTER_WITHDRAWAL, ICF_NOT_CURRENT, PROCEDURE_BEFORE_CONSENT
from domain.rules.dosing import DOSE_NOT_ALLOWED, DOSE_PRODUCT_CHECKS, DOSE_SCHEDULE
from domain.rules.edits import EDIT_THAT_MATTERS, RETROSPECTIVE_ENTRY
from domain.rules.eligibility import ELIGIBILITY_AGAINST_LABS, ELIGIBILITY_INCOMPLETE, ENROLMENT_CRITERIA
from domain.rules.history import Deviation, Entry, History, IcfVersion
from domain.rules.reconsent import PROCEDURE_WITHOUT_RECONSENT
from domain.rules.recorded import RECORDED_DEVIATIONS
from domain.rules.rule import Rule
from domain.rules.safety import SUSAR_REPORT_OVERDUE
from domain.rules.terminal import PROCEDURE_AFTER_TERMINAL
from domain.rules.timeliness import LATE_ENTRY, SERIOUS_AE_LATE
from domain.rules.visits import VISIT_OUTSIDE_WINDOW

RULES: tuple[Rule, ...] = (
    PROCEDURE_BEFORE_CONSENT,
    DATA_AFTER_WITHDRAWAL,
    ICF_NOT_CURRENT,
    ENROLMENT_CRITERIA,
    ELIGIBILITY_AGAINST_LABS,
    DOSE_NOT_ALLOWED,
    DOSE_SCHEDULE,
    DOSE_PRODUCT_CHECKS,
    VISIT_OUTSIDE_WINDOW,
    LATE_ENTRY,
    SERIOUS_AE_LATE,
    RECORDED_DEVIATIONS,
    ELIGIBILITY_INCOMPLETE,
    EDIT_THAT_MATTERS,
    RETROSPECTIVE_ENTRY,
    PROCEDURE_AFTER_TERMINAL,
    SUSAR_REPORT_OVERDUE,
    PROCEDURE_WITHOUT_RECONSENT,
)


def find_deviations(protocol: Protocol, participant: str, entries: Sequence[Entry],
                    icf_versions: Sequence[IcfVersion] = (), times: dict[str, Any] | None = None) -> list[Deviation]:
    """Every deviation of the record as it stands now, in a stable order."""
    history = History.build(protocol, participant, entries, icf_versions, times)
    found = [d for rule in RULES for d in rule.judge(history)]
    return sorted(found, key=lambda d: (d.first_position, d.kind, d.event_ids))


__all__ = ["RULES", "Deviation", "DeviationBook", "Entry", "History", "IcfVersion", "ProtocolVersion", "Rule",
           "Tracked",
           "deviation_history", "find_deviations"]
