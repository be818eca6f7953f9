"""Participant state: a pure fold over one participant's envelopes (SPEC §7).

The projector stores the result; ``show --as-of`` runs the same fold over a
prefix of the stream. Corrections update the current value and keep the
original; voids mark an entry voided and drop it from current values, but
it stays listed: originals are never hidden.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from domain.events import LEGACY_PRODUCT_FIELDS, product_values
from domain.rules.safety import is_susar, report_days
from domain.timeutil import calendar_date, study_day
from ledger.envelope import Envelope

STATUSES = ("registered", "consented", "screen_failed", "eligible", "enrolled", "treated", "completed", "withdrawn",
            "deceased")
TERMINAL_STATUSES = ("completed", "withdrawn", "deceased")
# Event types whose presence (or void) moves the status; a void or correction re-derives it from the entries.
_STATUS_TYPES = ("ConsentSigned", "ConsentWithdrawn", "EligibilityConfirmed", "ScreenFailed", "Enrolled",
                 "InfusionAdministered", "ParticipantCompleted", "ParticipantWithdrawn", "AdverseEventReported",
                 "AdverseEventUpdated", "EntryVoided", "EntryCorrected")


def empty_state(participant: str) -> dict[str, Any]:
    return {
        "participant": participant, "status": "registered", "site": None, "sex": None, "birth_year": None,
        "consent": {"status": "none", "icf_version": None, "signed_at": None, "withdrawn_at": None, "scope": None},
        "criteria": {}, "labs": [], "doses": [], "visits": [], "adverse_events": {}, "reviews": [],
        "recorded_deviations": [], "entries": {}, "events": 0, "last_position": 0, "enrolled": False,
        "outcome": None, "safety_reports": [], "ae_grades": {},
    }


def _study_day(state: dict[str, Any], occurred_at: str) -> int | None:
    dose1 = next((d for d in state["doses"] if d["dose_number"] == 1 and not d["voided"]), None)
    return study_day(calendar_date(dose1["occurred_at"]) if dose1 else None, calendar_date(occurred_at))


def apply(state: dict[str, Any], env: Envelope, position: int) -> dict[str, Any]:
    """Fold one envelope into ``state`` (mutated and returned)."""
    state["events"] += 1
    state["last_position"] = position
    data = env.data
    state["entries"][env.event_id] = {"type": env.type, "data": dict(data), "voided": False,
                                      "corrections": 0, "occurred_at": env.occurred_at, "position": position}
    handler = _HANDLERS.get(env.type)
    if handler is not None:
        handler(state, env)
    if env.type in ("EntryVoided", "EntryCorrected"):
        _derive_status(state)
    elif env.type in _STATUS_TYPES:
        _step(state, state["entries"][env.event_id])
        _susar_clocks(state)
    return state


def _derive_status(s: dict[str, Any]) -> None:
    """Status, consent and enrolment from the entries not voided, in log order (SPEC §4 voids and terminal states).

    A void undoes its target's effect; withdrawal, completion and death
    (a grade 5 adverse event) are terminal: nothing later moves the status.
    Appends step the fold incrementally; only an edit replays it.
    """
    s.update(status="registered", enrolled=False, outcome=None, ae_grades={},
             consent={"status": "none", "icf_version": None, "signed_at": None, "withdrawn_at": None, "scope": None})
    # log order: the stored state is JSON with sorted keys, so the entries dict's order is not the log's
    for entry in sorted(s["entries"].values(), key=lambda e: e.get("position", 0)):
        if not entry["voided"]:
            _step(s, entry)
    _susar_clocks(s)


def _step(s: dict[str, Any], entry: dict[str, Any]) -> None:
    kind, data, consent = entry["type"], entry["data"], s["consent"]
    grades = s.setdefault("ae_grades", {})
    if kind == "ConsentSigned":
        consent.update(status="signed", icf_version=data.get("icf_version"), signed_at=entry["occurred_at"],
                       withdrawn_at=None, scope=None)
    elif kind == "ConsentWithdrawn":
        consent.update(status=f"withdrawn ({data.get('scope')})", withdrawn_at=entry["occurred_at"],
                       scope=data.get("scope"))
    elif kind in ("AdverseEventReported", "AdverseEventUpdated") and data.get("grade") is not None:
        grades[str(data.get("ae_id"))] = data.get("grade")
    if 5 in grades.values():
        s["outcome"] = "death"
    if s["status"] in TERMINAL_STATUSES:
        return
    if kind == "ConsentSigned" and s["status"] == "registered":
        s["status"] = "consented"
    elif kind in _SIMPLE:
        s["status"] = _SIMPLE[kind]
    elif kind == "Enrolled":
        s["status"], s["enrolled"] = "enrolled", True
    elif kind == "InfusionAdministered":
        s["status"] = "treated"
    if 5 in grades.values():
        s["status"] = "deceased"


_SIMPLE = {"EligibilityConfirmed": "eligible", "ScreenFailed": "screen_failed", "ParticipantCompleted": "completed",
           "ParticipantWithdrawn": "withdrawn"}


def _susar_clocks(s: dict[str, Any]) -> None:
    """Each SUSAR's expedited-reporting clock: due date from awareness, and the report that stopped it."""
    for ae_id, ae in s["adverse_events"].items():
        if ae.get("voided") or not is_susar(ae):
            ae.pop("susar", None)
            continue
        days = report_days(ae)
        try:
            due = (datetime.fromisoformat(str(ae.get("awareness_at"))) + timedelta(days=days)).isoformat()
        except ValueError:
            due = None
        reports = [r for r in s["safety_reports"] if r["ae_id"] == ae_id and not r.get("voided")]
        ae["susar"] = {"report_within_days": days, "due": due,
                       "reported_at": reports[0]["occurred_at"] if reports else None,
                       "report_event_id": reports[0]["event_id"] if reports else None}


def _safety_report(s: dict[str, Any], env: Envelope) -> None:
    s["safety_reports"].append({"event_id": env.event_id, "occurred_at": env.occurred_at, "voided": False,
                                **env.data})
    _susar_clocks(s)


def _registered(s: dict[str, Any], env: Envelope) -> None:
    s.update(site=env.data.get("site"), sex=env.data.get("sex"), birth_year=env.data.get("birth_year"))


def _screening(s: dict[str, Any], env: Envelope) -> None:
    s["criteria"][str(env.data.get("criterion"))] = {
        "met": env.data.get("met"), "value": env.data.get("value"), "evidence": env.data.get("evidence"),
        "event_id": env.event_id, "occurred_at": env.occurred_at,
    }


def _lab(s: dict[str, Any], env: Envelope) -> None:
    s["labs"].append({"event_id": env.event_id, "occurred_at": env.occurred_at, "voided": False,
                      "corrected": False, **env.data})


def _infusion(s: dict[str, Any], env: Envelope) -> None:
    dose = {"event_id": env.event_id, "occurred_at": env.occurred_at, "voided": False, "corrected": False,
            **{k: v for k, v in env.data.items() if k not in LEGACY_PRODUCT_FIELDS},
            "product": product_values(env.data)}
    s["doses"].append(dose)
    dose["study_day"] = _study_day(s, env.occurred_at)


def _visit(s: dict[str, Any], env: Envelope) -> None:
    s["visits"].append({"event_id": env.event_id, "visit": env.data.get("visit"), "occurred_at": env.occurred_at,
                        "study_day": _study_day(s, env.occurred_at), "voided": False})


def _ae(s: dict[str, Any], env: Envelope) -> None:
    ae_id = str(env.data.get("ae_id"))
    s["adverse_events"][ae_id] = {"event_id": env.event_id, "onset_at": env.occurred_at,
                                  "recorded_at": env.recorded_at, "history": [], "voided": False, **env.data}


def _ae_update(s: dict[str, Any], env: Envelope) -> None:
    ae = s["adverse_events"].get(str(env.data.get("ae_id")))
    if ae is None:
        return
    changed = {k: v for k, v in env.data.items() if k != "ae_id"}
    ae["history"].append({"event_id": env.event_id, "at": env.recorded_at, "reason": env.reason,
                          "old": {k: ae.get(k) for k in changed}, "new": changed})
    ae.update(changed)


def _deviation(s: dict[str, Any], env: Envelope) -> None:
    s["recorded_deviations"].append({"event_id": env.event_id, "occurred_at": env.occurred_at, **env.data})


def _review(s: dict[str, Any], env: Envelope) -> None:
    s["reviews"].append({"event_id": env.event_id, "by": env.author, "at": env.recorded_at,
                         "scope": env.data.get("scope"), "meaning": env.meaning})


def _views(s: dict[str, Any]) -> list[Any]:
    return [*s["labs"], *s["doses"], *s["visits"], *s["adverse_events"].values(), *s["criteria"].values(),
            *s.get("safety_reports", [])]


def _correct(s: dict[str, Any], env: Envelope) -> None:
    target = str(env.data.get("target_event_id"))
    changes = env.data.get("changes") or {}
    entry = s["entries"].get(target)
    if entry is None:
        return
    entry["data"].update(changes)
    entry["corrections"] += 1
    if entry["type"] == "ParticipantRegistered":
        s.update({k: entry["data"].get(k) for k in ("site", "sex", "birth_year")})
    for view in _views(s):
        if view.get("event_id") == target:
            view.update(changes)
            view["corrected"] = True
            if isinstance(view.get("product"), dict):  # a dose: corrections in the older spelling
                view["product"] = {**view["product"], **{k: view.pop(k) for k in LEGACY_PRODUCT_FIELDS if k in view}}


def _void(s: dict[str, Any], env: Envelope) -> None:
    target = str(env.data.get("target_event_id"))
    entry = s["entries"].get(target)
    if entry is None:
        return
    entry["voided"] = True
    for view in _views(s):
        if view.get("event_id") == target:
            view["voided"] = True
    criteria = s["criteria"]
    for key in [k for k, v in criteria.items() if v.get("event_id") == target]:
        del criteria[key]


_HANDLERS = {
    "ParticipantRegistered": _registered,
    "ScreeningAssessed": _screening,
    "LabResultRecorded": _lab,
    "InfusionAdministered": _infusion,
    "VisitCompleted": _visit,
    "AdverseEventReported": _ae,
    "AdverseEventUpdated": _ae_update,
    "ProtocolDeviationRecorded": _deviation,
    "RecordReviewed": _review,
    "EntryCorrected": _correct,
    "EntryVoided": _void,
    "SafetyReportSubmitted": _safety_report,
}
