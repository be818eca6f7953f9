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

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from domain.protocol import Protocol
from domain.rules.book import DeviationBook, ProtocolVersion, Tracked, deviation_history
from domain.rules.consent import (
    data_after_withdrawal,
    icf_not_current,
    procedure_before_consent,
)
from domain.rules.dosing import dose_not_allowed, dose_product_checks, dose_schedule
from domain.rules.edits import edit_that_matters, retrospective_entry
from domain.rules.eligibility import (
    eligibility_against_labs,
    eligibility_incomplete,
    enrolment_criteria,
)
from domain.rules.history import Deviation, Entry, History, IcfVersion
from domain.rules.recorded import recorded_deviations
from domain.rules.safety import susar_report_overdue
from domain.rules.reconsent import procedure_without_reconsent
from domain.rules.terminal import procedure_after_terminal
from domain.rules.timeliness import late_entry, serious_ae_late
from domain.rules.visits import visit_outside_window

Rule = Callable[[History], Iterable[Deviation]]

RULES: tuple[Rule, ...] = (
    procedure_before_consent,
    data_after_withdrawal,
    icf_not_current,
    enrolment_criteria,
    eligibility_against_labs,
    dose_not_allowed,
    dose_schedule,
    dose_product_checks,
    visit_outside_window,
    late_entry,
    serious_ae_late,
    recorded_deviations,
    eligibility_incomplete,
    edit_that_matters,
    retrospective_entry,
    procedure_after_terminal,
    susar_report_overdue,
    procedure_without_reconsent,
)


def find_deviations(protocol: Protocol, participant: str, entries: Sequence[Entry],
                    icf_versions: Sequence[IcfVersion] = (), times: dict[str, Any] | None = None) -> list[Deviation]:
    """Every deviation of the record as it stands now, in a stable order."""
    history = History.build(protocol, participant, entries, icf_versions, times)
    found = [d for rule in RULES for d in rule(history)]
    return sorted(found, key=lambda d: (d.first_position, d.kind, d.event_ids))


__all__ = ["RULES", "Deviation", "DeviationBook", "Entry", "History", "IcfVersion", "ProtocolVersion", "Tracked",
           "deviation_history", "find_deviations"]
