"""Re-consent after an amendment (ICH E6(R3); SPEC §10).

An amendment with ``reconsent_required`` applies from its position in the
log to what happened clinically from its effective time on. From then, a
procedure on an active participant whose latest consent (by clinical time)
is on an ICF older than the amendment's is an important deviation, until a
consent on that ICF, or on one brought in by a later amendment, is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from domain.events import TERMINAL
from domain.rules.consent import PROCEDURES
from domain.rules.history import Deviation, Fact, History
from domain.rules.rule import Rule, reads


def procedure_without_reconsent(h: History) -> Iterator[Deviation]:
    for f in h.of(*PROCEDURES):
        yield from _without_reconsent(h, f)


def _without_reconsent(h: History, f: Fact) -> Iterator[Deviation]:
    if f.type not in PROCEDURES:
        return
    amendments = [(n, v) for n, v in enumerate(h.icf_versions) if v.reconsent_required]
    if not amendments:
        return
    latest = _latest_consent(h.of("ConsentSigned"), f)
    if latest is None or any(t.occurred <= f.occurred for t in h.of(*TERMINAL)):
        return  # no consent at all, or after withdrawal/completion: other rules speak
    if any(latest.occurred < w.occurred <= f.occurred and w.data.get("scope") == "all"
           for w in h.of("ConsentWithdrawn")):
        return  # data after withdrawal is its own deviation
    for n, amendment in amendments:
        if amendment.position >= f.position:
            continue
        if amendment.effective is not None and f.occurred < amendment.effective:
            continue
        accepted = {v.version for v in h.icf_versions[n:]}
        if latest.data.get("icf_version") not in accepted:
            yield h.deviation(
                "procedure_without_reconsent", True, [f],
                f"{f.type} at {f.occurred.isoformat()} without re-consent on ICF {amendment.version} "
                f"(amendment at #{amendment.position}); latest consent is on ICF {latest.data.get('icf_version')}")
            return


def _latest_consent(consents: Sequence[Fact], procedure: Fact) -> Fact | None:
    before = [c for c in consents if c.occurred <= procedure.occurred]
    return before[-1] if before else None


PROCEDURE_WITHOUT_RECONSENT = Rule(procedure_without_reconsent, reads("ConsentSigned", "ConsentWithdrawn", TERMINAL),
                                   each=_without_reconsent)

__all__ = ["PROCEDURE_WITHOUT_RECONSENT", "procedure_without_reconsent"]
