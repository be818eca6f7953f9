"""Consent rules: nothing before consent, nothing after withdrawal, the current ICF (21 CFR 11.10(f))."""

from __future__ import annotations

from collections.abc import Iterator

from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads

PROCEDURES = ("ScreeningAssessed", "LabResultRecorded", "InfusionAdministered", "VisitCompleted")
DATA_EVENTS = PROCEDURES + ("AdverseEventReported", "AdverseEventUpdated")


def procedure_before_consent(h: History) -> Iterator[Deviation]:
    for f in h.of(*PROCEDURES):
        yield from _before_consent(h, f)


def _before_consent(h: History, f: Fact) -> Iterator[Deviation]:
    if f.type not in PROCEDURES:
        return
    consents = h.of("ConsentSigned")
    if not consents or f.occurred < consents[0].occurred:
        yield h.deviation("procedure_before_consent", True, [f],
                          f"{f.type} at {f.occurred.isoformat()} before any signed consent")


def data_after_withdrawal(h: History) -> Iterator[Deviation]:
    for f in h.of(*DATA_EVENTS):
        yield from _after_withdrawal(h, f)


def _after_withdrawal(h: History, f: Fact) -> Iterator[Deviation]:
    for w in h.of("ConsentWithdrawn"):
        scope = w.data.get("scope")
        covered = DATA_EVENTS if scope == "all" else ("InfusionAdministered",)
        if f.type not in covered or f.occurred <= w.occurred:
            continue
        reconsent = next((c for c in h.of("ConsentSigned") if c.occurred > w.occurred), None)
        if reconsent is None or f.occurred < reconsent.occurred:
            yield h.deviation("data_after_withdrawal", True, [w, f],
                              f"{f.type} at {f.occurred.isoformat()} after consent was withdrawn "
                              f"(scope {scope}) at {w.occurred.isoformat()}")


def icf_not_current(h: History) -> Iterator[Deviation]:
    """Judged by clinical time: a consent signed before an amendment took effect, entered after it, is current."""
    for c in h.of("ConsentSigned"):
        in_force = [v for v in h.versions_before(c.position) if v.effective is None or v.effective <= c.occurred]
        current = in_force[-1].version if in_force else h.protocol.icf_version
        if c.data.get("icf_version") != current:
            yield h.deviation("icf_not_current", True, [c],
                              f"consent on ICF version {c.data.get('icf_version')} while {current} was current")


PROCEDURE_BEFORE_CONSENT = Rule(procedure_before_consent, reads("ConsentSigned"), each=_before_consent)
DATA_AFTER_WITHDRAWAL = Rule(data_after_withdrawal, reads("ConsentWithdrawn", "ConsentSigned"),
                             each=_after_withdrawal)
ICF_NOT_CURRENT = Rule(icf_not_current, reads("ConsentSigned"))

__all__ = ["DATA_AFTER_WITHDRAWAL", "ICF_NOT_CURRENT", "PROCEDURE_BEFORE_CONSENT", "data_after_withdrawal",
           "icf_not_current", "procedure_before_consent"]
