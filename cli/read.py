"""Read commands: show, participants, audit, deviations, summary, rebuild (SPEC §6, §7)."""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime
from typing import Any

import click

from cli.options import emit, open_store
from domain.events import CATALOGUE
from domain.protocol import LEGACY_PRODUCT, Product
from domain.signers import STUDY_STREAM
from domain.timeutil import epoch_us, parse_time
from ledger.errors import InputRefused
from ledger.merkle_log import MerkleLog
from projections import audit as audit_rows
from projections import datamanagement as dm
from projections.projector import Projections
from projections.signatures import line as sig_line
from projections.signatures import signatures
from projections.verified import VerifiedProjections, open_verified
from projections.state import STATUSES
from projections.timetravel import state_at
from projections.witnessed import WitnessedTimes

TABLE_WIDTH = 100  # the table view shortens long values; csv and json carry them whole


class IsoTime(click.ParamType):  # type: ignore[type-arg]
    """An ISO 8601 time with an offset; a time without one is a usage error, never guessed."""

    name = "ISO-8601"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        parsed = parse_time(str(value), aware=False)
        if parsed is None:
            self.fail(f"{value!r} is not an ISO 8601 time", param, ctx)
        if parsed.tzinfo is None:
            self.fail(f"{value!r} has no UTC offset (add e.g. Z or +08:00)", param, ctx)
        return parsed


NOT_VERIFIED = ("NOT VERIFIED: read from the cached projection tables (--cached), which anyone with write "
                "access to the database can edit; run without --cached for output recomputed from the verified log")

cached_option = click.option("--cached", is_flag=True,
                             help="Fast path: read the projection cache. NOT verified; says so on stderr.")


def projections(ctx: click.Context, cached: bool = False) -> Projections | VerifiedProjections:
    """What a read command answers from: the verified log (default), or the unverified cache with --cached.

    The default verifies every row first and exits 1, showing nothing, if
    the log does not verify (SPEC §5.4).
    """
    if cached:
        click.echo(NOT_VERIFIED, err=True)
        proj = Projections(open_store(ctx))
        proj.catch_up()
        return proj
    return open_verified(open_store(ctx))


def _source(proj: Projections | VerifiedProjections) -> Any:
    """The log a projection reads: the verified view, or (``--cached``) the store itself."""
    return proj.store if isinstance(proj, Projections) else proj.vstore


@click.command()
@click.argument("participant")
@click.option("--as-of", type=IsoTime(), default=None, help="Show what the ledger held at this recorded time.")
@click.option("--position", type=click.IntRange(min=1), default=None, help="Show the record up to this log position.")
@cached_option
@click.pass_context
def show(ctx: click.Context, participant: str, as_of: datetime | None, position: int | None, cached: bool) -> None:
    """One participant's current state, or as it stood at --as-of / --position."""
    st: dict[str, Any] | None
    proj = projections(ctx, cached)  # verified unless --cached (which says so)
    trial = proj.trial
    if as_of is not None or position is not None:
        st = state_at(trial, participant, as_of=as_of, position=position)
    else:
        st = proj.participant(participant)
        if st is None:
            raise InputRefused(f"participant: {participant} is not in the ledger")
        st["deviations"] = proj.deviations(participant)
    assert st is not None
    source = _source(proj)
    kept = [r for r in source.stream_records(participant) if r.position <= st["last_position"]]
    st["signatures"] = signatures(kept, source.stream_records(STUDY_STREAM))
    public = {k: v for k, v in st.items() if k != "entries"}
    consent = [e for e, entry in st.get("entries", {}).items() if entry["type"] == "ConsentSigned"]
    view = dm.load_participant(source, participant, until_position=position, until_recorded=as_of)
    public["data_management"] = dm.participant_summary(view, participant)
    protocol = trial.registry().protocol
    emit(ctx, public, _render_state(public, protocol.investigational_product() if protocol else LEGACY_PRODUCT,
                                    consent[-1] if consent else None))


def _signed(st: dict[str, Any], event_id: str | None) -> list[str]:
    """The 11.50 lines under one value: who signed it, when (UTC and local), meaning; then each later change."""
    sig = st.get("signatures", {}).get(event_id or "")
    if sig is None:
        return []
    verbs = {"EntryCorrected": "corrected", "EntryVoided": "voided", "AdverseEventUpdated": "updated"}
    return ["    " + sig_line(sig)] + ["    " + sig_line(c, verbs.get(c["event_type"], "changed"))
                                     for c in sig["changes"]]


def _render_state(st: dict[str, Any], product: Product, consent_event: str | None = None) -> str:
    lines = [f"{st['participant']}  status: {st['status']}  site: {st['site']}  sex: {st['sex']}  "
             f"born: {st['birth_year']}"]
    if st.get("as_of") or st.get("as_of_position"):
        lines.append(f"(as recorded at {st.get('as_of') or 'position ' + str(st.get('as_of_position'))})")
    c = st["consent"]
    lines.append(f"consent: {c['status']} (ICF {c['icf_version']}, signed {c['signed_at']})")
    lines += _signed(st, consent_event)
    if st["criteria"]:
        lines.append("criteria: " + "  ".join(f"{k}={'met' if v['met'] else 'NOT met'}"
                                             for k, v in sorted(st["criteria"].items())))
        for k, v in sorted(st["criteria"].items()):
            signed = _signed(st, v.get("event_id"))
            lines += [f"  {k} {signed[0].strip()}", *signed[1:]] if signed else []
    for lab in st["labs"]:
        flag = " VOIDED" if lab["voided"] else (" (corrected)" if lab["corrected"] else "")
        lines.append(f"lab {lab['analyte']}: {lab['value']} {lab.get('unit', '')} at {lab['occurred_at']}{flag}")
        lines += _signed(st, lab["event_id"])
    for d in st["doses"]:
        flag = " VOIDED" if d["voided"] else ""
        values = product.describe(d.get("product") or {})
        lines.append(f"dose {d['dose_number']}: day {d['study_day']} {d['route']} lot {d['lot']}"
                     f"{' ' + values if values else ''}{flag}")
        lines += _signed(st, d["event_id"])
    for v in st["visits"]:
        lines.append(f"visit {v['visit']}: day {v['study_day']}")
        lines += _signed(st, v["event_id"])
    for ae_id, ae in sorted(st["adverse_events"].items()):
        lines.append(f"AE {ae_id}: {ae['term']} grade {ae['grade']}{' SERIOUS' if ae['serious'] else ''} "
                     f"({ae['relatedness']})" + (f"  {render_susar(ae['susar'])}" if ae.get("susar") else ""))
        lines += _signed(st, ae.get("event_id"))
    for dev in st.get("deviations", []):
        resolved = f" [resolved by {dev.get('resolved_who')}: {dev.get('resolved_why') or 'no reason given'}]" \
            if dev.get("status") == "resolved" else ""
        lines.append(f"DEVIATION {dev['kind']}{' (important)' if dev['important'] else ''}: {dev['message']}{resolved}")
    if "data_management" in st:
        d = st["data_management"]
        lines.append(f"sign-off: {dm.describe_signoff(d['signoff'])}")
        lines.append(f"SDV: verified {d['sdv']['verified']}, STALE {d['sdv']['stale']}, "
                     f"not verified {d['sdv']['not_verified']}; queries: {len(d['queries'])} "
                     f"({d['open_queries']} open)" + (f"; LOCKED ({d['lock']['event_id']})" if d["lock"] else ""))
    return "\n".join(lines)


@click.command()
@click.option("--status", type=click.Choice(STATUSES), default=None)
@cached_option
@click.pass_context
def participants(ctx: click.Context, status: str | None, cached: bool) -> None:
    """Every participant with status, consent, doses and AEs."""
    proj = projections(ctx, cached)
    rows = proj.participants(status)
    view = dm.load(_source(proj))
    for r in rows:
        r["signoff"] = view.signoff(r["participant"])["status"]
    text = "\n".join(f"{r['participant']:<12} {r['status']:<14} {r['consent']:<22} doses {r['doses']}  "
                     f"AEs {r['adverse_events']}  sign-off {r['signoff']}" for r in rows)
    emit(ctx, rows, text or "no participants")


@click.command()
@click.option("--participant", default=None)
@click.option("--user", default=None, help="User id of the signer.")
@click.option("--type", "type_name", type=click.Choice(sorted(CATALOGUE)), default=None)
@click.option("--since", type=IsoTime(), default=None, help="Recorded at or after (any offset).")
@click.option("--until", type=IsoTime(), default=None, help="Recorded at or before (any offset).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default=None,
              help="Default: table, or json under --json.")
@cached_option
@click.pass_context
def audit(ctx: click.Context, participant: str | None, user: str | None, type_name: str | None,
          since: datetime | None, until: datetime | None, fmt: str | None, cached: bool) -> None:
    """The audit trail: who, what, when (UTC), why, old → new; streamed, so any size exports."""
    fmt = fmt or ("json" if ctx.obj.get("json") else "table")
    proj = projections(ctx, cached)
    # Witnessed intervals recompute each checkpoint's root from the log; on the verified path every row
    # of that log has just verified.
    times = WitnessedTimes(proj.store if isinstance(proj, Projections) else proj.vstore.store) \
        if fmt == "json" else None
    rows = proj.audit(
        participant=participant, user=user, type_name=type_name,
        since_us=epoch_us(since.isoformat()) if since else None,
        until_us=epoch_us(until.isoformat()) if until else None)
    out = sys.stdout
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=audit_rows.COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    elif fmt == "json":
        out.write("[")
        for n, row in enumerate(rows):
            row.update(times.interval(row["position"]) if times else {})
            out.write(("," if n else "") + "\n" + json.dumps(row, sort_keys=True))
        out.write("\n]\n")
    else:
        label = _TargetLabels(_source(proj))
        for row in rows:
            what = label(row["target_event_id"])
            change = f"{what}{row['field']}: {row['old_value']} -> {row['new_value']}" if row["field"] else \
                (f"voided {what}{row['old_value']}" if row["event_type"] == "EntryVoided" else row["new_value"])
            change = change if len(change or "") <= TABLE_WIDTH else change[:TABLE_WIDTH - 1] + "…"
            out.write(f"#{row['position']:<6} {row['recorded_at']}  occurred {row['occurred_at']}  "
                      f"{row['user_id']} ({row['role']}, "
                      f"{row['user_name']}) {row['meaning']:<10} {row['participant'] or '-':<10} "
                      f"{row['event_type']:<24} {change}"
                      + (f"  reason: {row['reason']}" if row["reason"] else "")
                      + ("" if row["signature_verified"] else "  SIGNATURE NOT VERIFIED") + "\n")


class _TargetLabels:
    """What a correction or void changed, in the form's words ("FBG ", "dose 2 ", "AE-1 "), looked up once each."""

    def __init__(self, store: Any):
        self.store = store
        self.cache: dict[str, str] = {}

    def __call__(self, target_event_id: str | None) -> str:
        if not target_event_id:
            return ""
        if target_event_id not in self.cache:
            record = self.store.record_by_event_id(target_event_id)
            try:
                env = record.envelope() if record is not None else None
            except ValueError:
                env = None
            self.cache[target_event_id] = f"{audit_rows.entry_label(env.type, env.data)} " if env else ""
        return self.cache[target_event_id]


@click.command()
@click.option("--participant", default=None)
@click.option("--open", "open_only", is_flag=True, help="Only deviations not resolved since.")
@cached_option
@click.pass_context
def deviations(ctx: click.Context, participant: str | None, open_only: bool, cached: bool) -> None:
    """Every protocol deviation ever raised, open or resolved (with the event, who and why), plus recorded ones."""
    proj = projections(ctx, cached)
    if participant and proj.participant(participant) is None:
        raise InputRefused(f"participant: {participant} is not in the ledger")
    rows = proj.deviations(participant, open_only=open_only)
    emit(ctx, rows, "\n".join(render_deviation(r) for r in rows) or "no deviations")


def render_susar(clock: dict[str, Any]) -> str:
    """A SUSAR's expedited-reporting clock, as `show` and the demo print it."""
    done = f"reported {clock['reported_at']}" if clock.get("reported_at") else "NOT YET REPORTED"
    return f"SUSAR: expedited report within {clock['report_within_days']} days, due {clock['due']}; {done}"


def render_deviation(r: dict[str, Any]) -> str:
    line = (f"{r['participant']:<10} {'IMPORTANT' if r['important'] else 'minor':<9} {r['status']:<8} "
            f"{r['kind']:<34} {r['message']}  (raised at #{r['raised_at_position']})")
    if r["status"] == "resolved":
        line += (f"  resolved at #{r['resolved_at_position']} by {r['resolved_who']} (event {r['resolved_by']}): "
                 f"{r['resolved_why'] or 'no reason given'}")
    return line


@click.command()
@cached_option
@click.pass_context
def summary(ctx: click.Context, cached: bool) -> None:
    """Screened, enrolled against target, doses, AEs by grade, deviations."""
    proj = projections(ctx, cached)
    s = proj.summary()
    if s:
        s["data_management"] = dm.load(proj.store).totals() if isinstance(proj, Projections) else \
            dm.streamed_totals(proj.vstore)  # per participant from verified stream reads
    emit(ctx, s, render_summary(s))


def render_summary(s: dict[str, Any]) -> str:
    if not s:
        return "no participants yet"
    grades = ", ".join(f"grade {g}: {n}" for g, n in s["adverse_events_by_grade"].items()) or "none"
    kinds = "\n".join(f"  {k}: {n}" for k, n in s["deviations_by_kind"].items())
    statuses = ", ".join(f"{k} {v}" for k, v in s["by_status"].items())
    return (f"participants: {s['participants']} ({statuses})\n"
            f"screened: {s['screened']}   screen failures: {s['screen_failed']}\n"
            f"enrolled: {s['enrolled']} of {s['target_enrolment']}\n"
            f"doses given: {s['doses_given']} ({', '.join(f'dose {k}: {v}' for k, v in s['doses_by_number'].items())})\n"
            f"adverse events: {s['adverse_events']} ({grades}); serious: {s['serious_adverse_events']}\n"
            f"deviations: {s['deviations']} ({s['important_deviations']} important)\n{kinds}"
            + (_render_dm_totals(s["data_management"]) if "data_management" in s else ""))


def _render_dm_totals(t: dict[str, Any]) -> str:
    ages = ", ".join(str(a) for a in t["open_query_ages_days"]) or "-"
    return (f"\nqueries: {t['open_queries']} open (ages in days: {ages}), {t['answered_queries']} answered\n"
            f"SDV: {t['sdv_verified']} verified, {t['sdv_stale']} stale, {t['sdv_not_verified']} not verified\n"
            f"sign-offs: {', '.join(f'{k} {v}' for k, v in t['signoffs'].items()) or 'none'}"
            + ("\ndatabase LOCKED" if t["study_locked"] else "")
            + (f"\nlocked participants: {', '.join(t['locked_participants'])}" if t["locked_participants"] else ""))


@click.command()
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Recompute every projection, and the stored Merkle tree, from the log."""
    store = open_store(ctx)
    tree = MerkleLog(store)
    tree.reset()
    tree.sync()
    n = Projections(store).rebuild()
    emit(ctx, {"events": n}, f"rebuilt projections from {n} events")


COMMANDS = (show, participants, audit, deviations, summary, rebuild)
