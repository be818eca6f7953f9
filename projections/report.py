"""The inspection report: one self-contained HTML file (inline CSS and SVG, no JavaScript, no network).

An inspector opens it on any machine. It shows the study, the integrity
verdict, a timeline per participant (doses against their window bands,
deviations in red), the deviations and AE tables, the signers, and each
participant's audit trail (collapsed, so a 1,000-participant study stays
usable).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from domain.service import Trial
from domain.signers import SignerRegistry, STUDY_STREAM
from domain.timeutil import calendar_date, epoch_us, parse_time
from ledger.merkle_log import MerkleLog
from ledger.verdict import judge
from ledger.verify_log import verify_log
from projections import datamanagement as dm
from projections.consents import consent_rows, document_rows
from projections.witnessed import WitnessedTimes
from projections.projector import Projections
from projections.summary import summarise
from projections.timetravel import state_at

DOSING = (-30, 20)     # days shown in the left panel
FOLLOW_UP = (20, 400)  # days shown in the right panel
LEFT_W, RIGHT_W, PAD = 520, 300, 10


@dataclass
class Mark:
    x: float
    kind: str
    label: str
    deviant: bool


def _x(day: float) -> float:
    if day <= DOSING[1]:
        lo, hi = DOSING
        return PAD + (max(day, lo) - lo) / (hi - lo) * LEFT_W
    lo, hi = FOLLOW_UP
    return PAD + LEFT_W + PAD + (min(day, hi) - lo) / (hi - lo) * RIGHT_W


def _date(text: str | None) -> date | None:
    return calendar_date(text)


def timeline(st: dict[str, Any], deviations: list[dict[str, Any]], protocol: Any) -> dict[str, Any]:
    """Everything the SVG of one participant needs, in pixels."""
    deviant_ids = {e for d in deviations for e in d["event_ids"]}
    dose1 = next((d for d in st["doses"] if d["dose_number"] == 1 and not d["voided"]), None)
    origin = _date(dose1["occurred_at"]) if dose1 else _date(st["consent"].get("signed_at"))
    marks: list[Mark] = []

    def add(when: str | None, kind: str, label: str, event_id: str | None = None) -> None:
        day = _date(when)
        if day is None or origin is None:
            return
        marks.append(Mark(_x((day - origin).days), kind, label, bool(event_id and event_id in deviant_ids)))

    add(st["consent"].get("signed_at"), "consent", "consent")
    for c in st["criteria"].values():
        add(c.get("occurred_at"), "screening", f"screening {c.get('met')}", c.get("event_id"))
    for lab in st["labs"]:
        if not lab["voided"]:
            add(lab["occurred_at"], "lab", f"{lab['analyte']} {lab['value']}", lab["event_id"])
    for d in st["doses"]:
        if not d["voided"]:
            add(d["occurred_at"], "dose", f"dose {d['dose_number']} day {d.get('study_day')}", d["event_id"])
    for v in st["visits"]:
        add(v["occurred_at"], "visit", f"visit {v['visit']}", v["event_id"])
    for ae in st["adverse_events"].values():
        add(ae.get("onset_at"), "ae", f"AE {ae.get('term')} grade {ae.get('grade')}", ae.get("event_id"))
    bands = []
    if protocol is not None and dose1 is not None:
        for spec in protocol.doses:
            x0, x1 = _x(spec.day - spec.minus), _x(spec.day + spec.plus + 1)
            bands.append({"x": x0, "w": max(2.0, x1 - x0), "label": f"dose {spec.number}: day {spec.day}"
                          + (f" ±{spec.plus}" if spec.plus else "")})
    return {"marks": marks, "bands": bands, "width": LEFT_W + RIGHT_W + 3 * PAD,
            "split": PAD + LEFT_W + PAD / 2, "zero": _x(0)}


def build(trial: Trial, as_of: datetime | None = None, jobs: int | None = None) -> str:
    store = trial.store
    projections = Projections(store)
    projections.catch_up()
    registry = trial.registry()
    report, _cp = verify_log(store, SignerRegistry(), jobs=jobs)
    tree = MerkleLog(store)
    checkpoint = tree.latest_checkpoint()
    witnessed = WitnessedTimes(store)
    until_us = None if as_of is None else epoch_us(as_of.isoformat())
    dm_view = dm.load(store, until_recorded=as_of)
    participants = []
    for row in projections.participants():
        pid = row["participant"]
        if as_of is not None:
            st = state_at(trial, pid, as_of=as_of)
            if st["events"] == 0:
                continue  # not yet in the ledger at that time
            devs = st["deviations"]
        else:
            st = projections.participant(pid) or {}
            devs = projections.deviations(pid)
        audit = [{**a, **witnessed.interval(a["position"])} for a in projections.audit(participant=pid, until_us=until_us)]
        participants.append({"id": pid, "state": st, "deviations": devs, "audit": audit,
                             "timeline": timeline(st, devs, registry.protocol),
                             "consents": consent_rows(st, registry.documents),
                             "dm": dm.participant_summary(dm_view, pid)})
    deviations = [d for p in participants for d in p["deviations"]]
    aes = []
    for p in participants:
        for ae_id, ae in sorted(p["state"].get("adverse_events", {}).items()):
            recorded, aware = parse_time(ae.get("recorded_at"), aware=False), parse_time(ae.get("awareness_at"),
                                                                                      aware=False)
            lag = None
            with contextlib.suppress(TypeError):  # one aware, one naive: no lag shown
                lag = recorded - aware if recorded and aware else None
            aes.append({"participant": p["id"], "ae_id": ae_id, **ae,
                        "lag_hours": None if lag is None else round(lag.total_seconds() / 3600, 1)})
    env = Environment(loader=PackageLoader("projections", "templates"), autoescape=select_autoescape(["html"]))
    template = env.get_template("report.html.j2")
    return template.render(
        study=registry.study_id, protocol=registry.protocol, icf_versions=trial.icf_versions(),
        summary=projections.summary() or summarise([], [], None), verify=report, verdict=judge(report),
        root_fingerprint=report.root_fingerprint,
        checkpoint=checkpoint, participants=participants, deviations=deviations, aes=aes,
        signers=list(registry.signers.values()), as_of=as_of, generated=datetime.now().astimezone(),
        tree_size=report.tree_size, tree_root=report.tree_root.hex(), study_stream=STUDY_STREAM,
        documents=document_rows(registry.documents),
        witnesses=witnessed.latest(),
        dm_totals=dm_view.totals(now=as_of),
    )
