"""The inspection report: one self-contained HTML file (inline CSS and SVG, no JavaScript, no network).

An inspector opens it on any machine. It shows the study, the integrity
verdict, a timeline per participant (doses against their window bands,
deviations in red), the deviations and AE tables, the signers, and each
participant's audit trail (collapsed, so a 1,000-participant study stays
usable).
"""

from __future__ import annotations

import contextlib
import html
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import IO, Any

from markupsafe import Markup


from domain.signers import STUDY_STREAM
from domain.timeutil import calendar_date, parse_time
from ledger import checkpoint as notes
from ledger.verdict import judge
from projections import audit as audit_rows
from projections import datamanagement as dm
from projections.consents import consent_rows, document_rows
from projections.verified_log import SummaryTally, VerifiedLog
from projections.witnessed import WitnessedTimes

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


def checkpoint_view(log: VerifiedLog) -> dict[str, Any] | None:
    """The checkpoint shown, checked against the log it is shown with: never presented on trust."""
    note = log.checkpoint_note
    if note is None:
        return None
    view: dict[str, Any] = {"note": note, "tree_size": None, "ok": False, "status": ""}
    root_public = log.registry.root_public
    try:
        cp = notes.parse(note)[0] if root_public is None else notes.verify(note, root_public)
    except notes.CheckpointError as e:
        view["status"] = f"does not verify: {e}"
        return view
    view["tree_size"] = cp.size
    if root_public is None:
        view["status"] = "the log has no root key to check it with"
    elif cp.size > log.size:
        view["status"] = f"covers {cp.size} events but the log holds {log.size}"
    elif log.merkle_root(cp.size) != cp.root:
        view["status"] = f"its root does not match the first {cp.size} events of the log"
    else:
        view["ok"] = True
        view["status"] = f"signed by the root key; its root matches the first {cp.size} events of the log"
    return view


class _Spool:
    """Rendered HTML kept on disk until the page's head (which needs every participant's totals) is written."""

    CHUNK = 1 << 20

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile("w+", encoding="utf-8", newline="")  # noqa: SIM115 - closed by read

    def write(self, text: str) -> None:
        self.file.write(text)

    def read(self) -> Iterator[Markup]:
        self.file.seek(0)
        while chunk := self.file.read(self.CHUNK):
            yield Markup(chunk)  # rendered (and escaped) by the template's macros, read back verbatim
        self.file.close()


class _Labels:
    """What a correction changed ("FBG"), from the entry in the participant's own stream, or (an entry of
    another stream) from that stream's verified read."""

    def __init__(self, log: VerifiedLog, stream: list[tuple[Any, Any]]):
        self.log = log
        self.own = {env.event_id: (env.type, env.data) for _r, env in stream}

    def __call__(self, event_id: str | None) -> str:
        if not event_id:
            return ""
        found = self.own.get(event_id)
        if found is None:
            record = self.log.source.record_by_event_id(event_id)
            if record is None:
                return ""
            env = record.envelope()
            found = (env.type, env.data)
        return audit_rows.entry_label(*found)


def build(log: VerifiedLog, as_of: datetime | None = None) -> str:
    """The report as one string (tests, small logs); ``write`` streams it."""
    out = io.StringIO()
    write(log, out, as_of)
    return out.getvalue()


def write(log: VerifiedLog, out: IO[str], as_of: datetime | None = None) -> None:
    """The report as a pure function of a verified log; see ``stages``."""
    for _participant in stages(log, out, as_of):
        pass


def stages(log: VerifiedLog, out: IO[str], as_of: datetime | None = None) -> Iterator[str]:
    """Write the report, yielding after each participant (the package drives it in step with the ODM
    writer, so each participant's stream is read and its deviations folded once for both).

    The report as a pure function of a verified log (the whole log, or its prefix up to ``as_of``).

    Participants are read, folded and rendered one at a time into spools (their sections, deviation
    rows and AE rows); the study totals they add up to are then rendered at the top of the page and
    the spools copied in after them. Memory holds one participant, never the log.
    """
    registry = log.registry
    protocol = registry.protocol
    witnessed = WitnessedTimes.from_log([env for _r, env in log.study], log.witness_notes(), log.records())
    now = as_of or parse_time(log.head_recorded_at)  # query ages as of the log, never the wall clock
    from jinja2 import Environment, PackageLoader, select_autoescape  # loaded by the report only, not every command

    env = Environment(loader=PackageLoader("projections", "templates"), autoescape=select_autoescape(["html"]))
    parts: Any = env.get_template("report_parts.html.j2").module  # its macros: participant, deviation_row, ae_row
    sections, deviation_rows, ae_rows = _Spool(), _Spool(), _Spool()
    tally = SummaryTally()
    dm_totals = dm.Totals(dm.DataManagement.fold(r for r, _e in log.study))
    for pid in log.participants:
        stream = log.stream(pid)
        st = log.state(pid, stream)
        tally.add(st, log.deviations(pid, stream))
        devs = log.deviation_rows(pid, stream)
        st["deviations"] = devs
        label = _Labels(log, stream)
        audit = []
        for row in log.participant_audit(pid, stream):
            row.update(witnessed.interval(row["position"]))
            row["what"] = label(row["target_event_id"])  # "FBG" of "FBG value: 6.2 → 7.2"
            audit.append(row)
        dm_view = dm_totals.participant(pid, (r for r, _e in stream), now)
        p = {"id": pid, "state": st, "deviations": devs, "audit": audit,
             "timeline": timeline(st, devs, protocol), "consents": consent_rows(st, registry.documents),
             "dm": dm.participant_summary(dm_view, pid, now=now)}
        sections.write(parts.participant(p))
        for d in devs:
            deviation_rows.write(parts.deviation_row(d))
        for ae_id, ae in sorted(st.get("adverse_events", {}).items()):
            recorded, aware = parse_time(ae.get("recorded_at"), aware=False), parse_time(ae.get("awareness_at"),
                                                                                      aware=False)
            lag = None
            with contextlib.suppress(TypeError):  # one aware, one naive: no lag shown
                lag = recorded - aware if recorded and aware else None
            ae_rows.write(parts.ae_row({"participant": pid, "ae_id": ae_id, **ae,
                                        "lag_hours": None if lag is None else round(lag.total_seconds() / 3600, 1)},
                                       protocol))
        yield pid
    report = log.report
    template = env.get_template("report.html.j2")
    for text in template.generate(
        study=registry.study_id, protocol=protocol, icf_versions=log.icf_versions,
        summary=tally.result(registry), verify=report, verdict=judge(report),
        root_fingerprint=report.root_fingerprint, checkpoint=checkpoint_view(log),
        participant_sections=sections.read(), deviation_rows=deviation_rows.read(), ae_rows=ae_rows.read(),
        signers=list(registry.signers.values()), as_of=as_of,
        generated=log.head_recorded_at, head_position=log.head_position,
        tree_size=log.size, tree_root=(log.merkle_root(log.size) or b"").hex(), study_stream=STUDY_STREAM,
        documents=document_rows(registry.documents), witnesses=witnessed.latest(),
        dm_totals=dm_totals.result(),
    ):
        out.write(text)


def failed_page(reason: str) -> str:
    """The whole report when the log does not verify: the verdict and nothing read from the ledger (SPEC §5.4)."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Inspection report — FAILED</title>\n'
        "<style>body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1c2430; }\n"
        ".fail { color: #b3261e; font-weight: 600; } .verdict { padding: 10px 14px; border: 2px solid #b3261e; "
        "border-radius: 6px; background: #fbeceb; }</style>\n</head>\n<body>\n<h1>Inspection report</h1>\n"
        '<h2 id="integrity">Integrity verdict</h2>\n<div class="verdict fail" id="verdict">'
        f'<span class="fail">FAILED</span>: {html.escape(reason)}</div>\n'
        "<p>Nothing read from this ledger is shown: it does not verify, so no figure from it can be trusted. "
        "Run <code>trial-ledger verify --json</code> for every finding.</p>\n</body>\n</html>\n"
    )
