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
| procedure after an amendment without re-consent | ``reconsent.py`` |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from domain.protocol import Protocol
from domain.rules.consent import data_after_withdrawal, icf_not_current, procedure_before_consent
from domain.rules.dosing import dose_not_allowed, dose_schedule, dose_product_checks
from domain.rules.eligibility import eligibility_against_labs, enrolment_criteria
from domain.rules.history import Deviation, Entry, History, IcfVersion
from domain.rules.recorded import recorded_deviations
from domain.rules.reconsent import procedure_without_reconsent
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
    procedure_without_reconsent,
)


def find_deviations(protocol: Protocol, participant: str, entries: Sequence[Entry],
                    icf_versions: Sequence[IcfVersion] = ()) -> list[Deviation]:
    """Every deviation of one participant, in a stable order."""
    history = History.build(protocol, participant, entries, icf_versions)
    found = [d for rule in RULES for d in rule(history)]
    return sorted(found, key=lambda d: (d.first_position, d.kind, d.event_ids))


__all__ = ["RULES", "Deviation", "Entry", "History", "IcfVersion", "find_deviations"]
