"""Participant state: a pure fold over one participant's envelopes (SPEC §7).

The projector stores the result; ``show --as-of`` runs the same fold over a
prefix of the stream. Corrections update the current value and keep the
original; voids mark an entry voided and drop it from current values, but
it stays listed: originals are never hidden.
"""

from __future__ import annotations

from typing import Any

from domain.events import LEGACY_PRODUCT_FIELDS, product_values
from domain.timeutil import calendar_date, study_day
from ledger.envelope import Envelope

STATUSES = ("registered", "consented", "screen_failed", "eligible", "enrolled", "treated", "completed", "withdrawn")


def empty_state(participant: str) -> dict[str, Any]:
    return {
        "participant": participant, "status": "registered", "site": None, "sex": None, "birth_year": None,
        "consent": {"status": "none", "icf_version": None, "signed_at": None, "withdrawn_at": None, "scope": None},
        "criteria": {}, "labs": [], "doses": [], "visits": [], "adverse_events": {}, "reviews": [],
        "recorded_deviations": [], "entries": {}, "events": 0, "last_position": 0, "enrolled": False,
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
                                      "corrections": 0, "occurred_at": env.occurred_at}
    handler = _HANDLERS.get(env.type)
    if handler is not None:
        handler(state, env)
    return state


def _registered(s: dict[str, Any], env: Envelope) -> None:
    s.update(site=env.data.get("site"), sex=env.data.get("sex"), birth_year=env.data.get("birth_year"))


def _consent(s: dict[str, Any], env: Envelope) -> None:
    s["consent"].update(status="signed", icf_version=env.data.get("icf_version"), signed_at=env.occurred_at,
                        withdrawn_at=None, scope=None)
    if s["status"] == "registered":
        s["status"] = "consented"


def _withdrawn_consent(s: dict[str, Any], env: Envelope) -> None:
    scope = env.data.get("scope")
    s["consent"].update(status=f"withdrawn ({scope})", withdrawn_at=env.occurred_at, scope=scope)


def _screening(s: dict[str, Any], env: Envelope) -> None:
    s["criteria"][str(env.data.get("criterion"))] = {
        "met": env.data.get("met"), "value": env.data.get("value"), "evidence": env.data.get("evidence"),
        "event_id": env.event_id, "occurred_at": env.occurred_at,
    }


def _lab(s: dict[str, Any], env: Envelope) -> None:
    s["labs"].append({"event_id": env.event_id, "occurred_at": env.occurred_at, "voided": False,
                      "corrected": False, **env.data})


def _status(new: str) -> Any:
    def handler(s: dict[str, Any], env: Envelope) -> None:
        s["status"] = new
    return handler


def _enrolled(s: dict[str, Any], env: Envelope) -> None:
    s["status"] = "enrolled"
    s["enrolled"] = True


def _infusion(s: dict[str, Any], env: Envelope) -> None:
    dose = {"event_id": env.event_id, "occurred_at": env.occurred_at, "voided": False, "corrected": False,
            **{k: v for k, v in env.data.items() if k not in LEGACY_PRODUCT_FIELDS},
            "product": product_values(env.data)}
    s["doses"].append(dose)
    dose["study_day"] = _study_day(s, env.occurred_at)
    if s["status"] not in ("completed", "withdrawn"):
        s["status"] = "treated"


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
    return [*s["labs"], *s["doses"], *s["visits"], *s["adverse_events"].values(), *s["criteria"].values()]


def _correct(s: dict[str, Any], env: Envelope) -> None:
    target = str(env.data.get("target_event_id"))
    changes = env.data.get("changes") or {}
    entry = s["entries"].get(target)
    if entry is None:
        return
    entry["data"].update(changes)
    entry["corrections"] += 1
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
    "ConsentSigned": _consent,
    "ConsentWithdrawn": _withdrawn_consent,
    "ScreeningAssessed": _screening,
    "LabResultRecorded": _lab,
    "EligibilityConfirmed": _status("eligible"),
    "ScreenFailed": _status("screen_failed"),
    "Enrolled": _enrolled,
    "InfusionAdministered": _infusion,
    "VisitCompleted": _visit,
    "AdverseEventReported": _ae,
    "AdverseEventUpdated": _ae_update,
    "ProtocolDeviationRecorded": _deviation,
    "RecordReviewed": _review,
    "EntryCorrected": _correct,
    "EntryVoided": _void,
    "ParticipantCompleted": _status("completed"),
    "ParticipantWithdrawn": _status("withdrawn"),
}
