"""Data-management read models (SPEC §11): queries, SDV state, sign-off state, lock state.

A pure fold over the log's records (``DataManagement.apply`` one record at a time, in global
order), so the answer is recomputed from the log on each read, never trusted from a table a
DBA could edit. The fold's state is plain JSON (``to_json`` / ``from_json``): folding a log in
pages with the state serialised between them gives exactly the fold of the whole log
(tested with hypothesis), so it can be materialised later without changing an answer.

Staleness:
* an SDV counts only if its ``target_hash`` is the entry's chain hash; it is **stale** once an ``EntryCorrected`` or ``EntryVoided`` of that entry
  comes later in the participant's stream; a newer ``SourceVerified`` makes it verified again;
* a sign-off is **stale** once any event of the participant other than data management
  (queries, SDV, sign-off, review) comes after its ``up_to_position``; it is **invalid** if its
  ``casebook_hash`` does not equal ``casebook_hash()`` of the chain hashes it covers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from domain.datamanagement import (
    CHANGE_TYPES,
    DM_TYPES,
    LOCK_TYPES,
    NOT_VERIFIABLE,
    QUERY_TYPES,
    casebook_hash,
)
from domain.signers import STUDY_STREAM
from ledger.envelope import Record

NEEDS_DATA = (*QUERY_TYPES, "SourceVerified", "CasebookSigned", *CHANGE_TYPES)
STATUS = {"QueryRaised": "open", "QueryAnswered": "answered", "QueryClosed": "closed", "QueryReopened": "open"}


def _empty_participant() -> dict[str, Any]:
    return {"hashes": [], "entries": {}, "changed_at": {}, "sdv": {}, "queries": {}, "signoffs": [],
            "last_change": 0}


class DataManagement:
    """The fold. ``state`` is JSON-serialisable; ``apply`` is the only writer."""

    def __init__(self, state: dict[str, Any] | None = None):
        self.state: dict[str, Any] = state or {"participants": {}, "locks": {"study": None, "participants": {}},
                                               "position": 0}

    @classmethod
    def fold(cls, records: Iterable[Record]) -> DataManagement:
        dm = cls()
        for record in records:
            dm.apply(record)
        return dm

    def to_json(self) -> dict[str, Any]:
        return copy.deepcopy(self.state)

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> DataManagement:
        return cls(copy.deepcopy(state))

    def apply(self, record: Record) -> None:
        # Most events matter only by type, place and chain hash: read those columns (bound by verify)
        # and decode the signed envelope only where its data is needed.
        if record.stream == STUDY_STREAM and record.type not in LOCK_TYPES:
            self.state["position"] = record.position
            return
        if record.stream != STUDY_STREAM and record.type not in NEEDS_DATA:
            self.state["position"] = record.position
            self._entry(record.stream, record.type, record.event_id, record.stream_position, record.hash)
            return
        try:
            env = record.envelope()
        except Exception:  # noqa: BLE001 - a damaged row is verify's to report
            return
        self.state["position"] = record.position
        if env.stream == STUDY_STREAM:
            self._apply_lock(env.type, env.data, env.event_id, env.recorded_at, env.author)
            return
        p = self._entry(env.stream, env.type, env.event_id, env.position, record.hash)
        pos, data = env.position, env.data
        at = {"event_id": env.event_id, "position": pos, "by": env.author, "at": env.recorded_at}
        if env.type in CHANGE_TYPES:
            target = str(data.get("target_event_id"))
            p["changed_at"][target] = {**at, "type": env.type, "reason": env.reason}
            if env.type == "EntryVoided" and target in p["entries"]:
                p["entries"][target]["voided"] = True
        elif env.type == "SourceVerified":
            p["sdv"][str(data.get("target_event_id"))] = {**at, "target_hash": data.get("target_hash")}
        elif env.type == "CasebookSigned":
            p["signoffs"].append({**at, "up_to_position": data.get("up_to_position"),
                                  "casebook_hash": data.get("casebook_hash")})
        elif env.type in QUERY_TYPES:
            qid = str(data.get("query_id"))
            q = p["queries"].setdefault(qid, {"query_id": qid, "target_event_id": data.get("target_event_id"),
                                              "raised_by": env.author, "raised_at": env.recorded_at,
                                              "thread": []})
            q["status"] = STATUS[env.type]
            said: dict[str, Any] = {k: data[k] for k in ("text", "reason", "correction_event_id") if k in data}
            q["thread"].append({**at, "type": env.type, **said})
            if env.type == "QueryClosed":
                q["closed_at"] = env.recorded_at
            elif env.type == "QueryReopened":
                q.pop("closed_at", None)

    def _entry(self, participant: str, type_name: str, event_id: str, position: int, chain_hash: bytes
               ) -> dict[str, Any]:
        p: dict[str, Any] = self.state["participants"].setdefault(participant, _empty_participant())
        p["hashes"].append(chain_hash.hex())
        if type_name not in DM_TYPES:
            p["last_change"] = position
        if type_name not in NOT_VERIFIABLE:
            p["entries"][event_id] = {"type": type_name, "position": position, "voided": False,
                                      "hash": chain_hash.hex()}
        return p

    def _apply_lock(self, type_name: str, data: dict[str, Any], event_id: str, at: str, by: str) -> None:
        locks = self.state["locks"]
        participant = data.get("participant")
        if type_name == "DatabaseLocked":
            lock = {"event_id": event_id, "at": at, "by": by, "participant": participant}
            if participant:
                locks["participants"][participant] = lock
            else:
                locks["study"] = lock
        elif type_name == "DatabaseUnlocked":
            if participant:
                locks["participants"].pop(participant, None)
            else:
                locks["study"] = None

    # -- answers -------------------------------------------------------------------------------------

    def participant_ids(self) -> list[str]:
        return sorted(self.state["participants"])

    def queries(self, participant: str | None = None, status: str | None = None,
                now: datetime | None = None) -> list[dict[str, Any]]:
        """Every query with its thread and age in days (until closure, or until ``now`` while open)."""
        now = now or datetime.now(UTC)
        out = []
        for pid in self.participant_ids():
            if participant and pid != participant:
                continue
            for q in self.state["participants"][pid]["queries"].values():
                if status and q["status"] != status:
                    continue
                end = datetime.fromisoformat(q["closed_at"]) if q.get("closed_at") else now
                age = (end - datetime.fromisoformat(q["raised_at"])).days
                out.append({"participant": pid, **copy.deepcopy(q), "age_days": age})
        return sorted(out, key=lambda q: (q["participant"], q["raised_at"], q["query_id"]))

    def sdv(self, participant: str) -> dict[str, Any]:
        """Verified / stale / not verified entries of one participant, and the stale ones."""
        p = self.state["participants"].get(participant) or _empty_participant()
        verified, stale, not_verified = [], [], []
        for event_id, entry in p["entries"].items():
            check = p["sdv"].get(event_id)
            change = p["changed_at"].get(event_id)
            if check is not None and check["target_hash"] != entry["hash"]:
                check = None  # signed over another hash than the entry's: not a verification of it
            if check is None:
                if not entry["voided"]:
                    not_verified.append(event_id)
            elif change is not None and change["position"] > check["position"]:
                stale.append({"target_event_id": event_id, "type": entry["type"], "verified_by": check["by"],
                              "verified_at": check["at"], "changed_by": change["event_id"],
                              "change": change["type"], "reason": change["reason"]})
            else:
                verified.append(event_id)
        return {"participant": participant, "verified": len(verified), "stale": len(stale),
                "not_verified": len(not_verified), "stale_entries": stale}

    def signoff(self, participant: str) -> dict[str, Any]:
        """The latest sign-off of a participant's casebook: none, current, stale or invalid."""
        p = self.state["participants"].get(participant) or _empty_participant()
        if not p["signoffs"]:
            return {"status": "not signed"}
        s = p["signoffs"][-1]
        up_to = int(s["up_to_position"])
        expected = casebook_hash(bytes.fromhex(h) for h in p["hashes"][:up_to])
        if expected != s["casebook_hash"] or up_to > len(p["hashes"]):
            status = "invalid"
        elif p["last_change"] > up_to:
            status = "stale"
        else:
            status = "current"
        return {"status": status, "signed_by": s["by"], "signed_at": s["at"], "event_id": s["event_id"],
                "up_to_position": up_to, "casebook_hash": s["casebook_hash"],
                "changed_after": p["last_change"] if status == "stale" else None}

    def lock(self, participant: str | None = None) -> dict[str, Any] | None:
        locks = self.state["locks"]
        return locks["study"] or (locks["participants"].get(participant) if participant else None)

    def totals(self, now: datetime | None = None) -> dict[str, Any]:
        """Study-wide: open queries and their ages, SDV counts, sign-offs by status, lock."""
        open_q = [q for q in self.queries(now=now) if q["status"] in ("open", "answered")]
        sdv = [self.sdv(p) for p in self.participant_ids()]
        signoffs: dict[str, int] = {}
        for pid in self.participant_ids():
            status = self.signoff(pid)["status"]
            signoffs[status] = signoffs.get(status, 0) + 1
        return {
            "open_queries": sum(1 for q in open_q if q["status"] == "open"),
            "answered_queries": sum(1 for q in open_q if q["status"] == "answered"),
            "open_query_max_age_days": max((q["age_days"] for q in open_q if q["status"] == "open"), default=None),
            "open_query_ages_days": sorted(q["age_days"] for q in open_q if q["status"] == "open"),
            "sdv_verified": sum(s["verified"] for s in sdv), "sdv_stale": sum(s["stale"] for s in sdv),
            "sdv_not_verified": sum(s["not_verified"] for s in sdv), "signoffs": dict(sorted(signoffs.items())),
            "study_locked": self.state["locks"]["study"] is not None,
            "locked_participants": sorted(self.state["locks"]["participants"]),
        }


class Totals:
    """``DataManagement.totals`` folded one participant at a time (the report streams participants).

    A participant's answers depend on its own stream and on the locks, which only the study stream
    sets: so the study stream is folded once, and each participant's fold starts from its final locks.
    """

    def __init__(self, study: DataManagement):
        self.locks = study.state["locks"]
        self.open_ages: list[int] = []
        self.open_queries = self.answered = self.verified = self.stale = self.not_verified = 0
        self.signoffs: dict[str, int] = {}

    def participant(self, participant: str, records: Iterable[Record], now: datetime | None) -> DataManagement:
        """The fold of one participant's records (in log order), added to the totals."""
        view = DataManagement({"participants": {}, "locks": self.locks, "position": 0})
        for record in records:
            view.apply(record)
        for q in view.queries(participant, now=now):
            if q["status"] == "open":
                self.open_queries += 1
                self.open_ages.append(q["age_days"])
            elif q["status"] == "answered":
                self.answered += 1
        if participant in view.state["participants"]:
            sdv = view.sdv(participant)
            self.verified += sdv["verified"]
            self.stale += sdv["stale"]
            self.not_verified += sdv["not_verified"]
            status = view.signoff(participant)["status"]
            self.signoffs[status] = self.signoffs.get(status, 0) + 1
        return view

    def result(self) -> dict[str, Any]:
        """What ``DataManagement.totals`` gives for the whole log."""
        return {
            "open_queries": self.open_queries, "answered_queries": self.answered,
            "open_query_max_age_days": max(self.open_ages, default=None),
            "open_query_ages_days": sorted(self.open_ages),
            "sdv_verified": self.verified, "sdv_stale": self.stale, "sdv_not_verified": self.not_verified,
            "signoffs": dict(sorted(self.signoffs.items())),
            "study_locked": self.locks["study"] is not None,
            "locked_participants": sorted(self.locks["participants"]),
        }


def streamed_totals(store: Any, now: datetime | None = None) -> dict[str, Any]:
    """``load(store).totals(now)`` folded one stream at a time (``store`` a verified store): memory holds
    one participant, not the log."""
    totals = Totals(DataManagement.fold(store.stream_records(STUDY_STREAM)))
    now = now or datetime.now(UTC)
    for stream in store.streams():
        if stream != STUDY_STREAM:
            totals.participant(stream, store.stream_records(stream), now)
    return totals.result()


def load(store: Any, until_recorded: datetime | None = None) -> DataManagement:
    """Fold the whole log of ``store`` (recomputed on each read), optionally as recorded by a time."""
    if until_recorded is None:
        return DataManagement.fold(store.records())
    return DataManagement.fold(r for r in store.records() if _recorded_by(r, until_recorded))


def _recorded_by(record: Record, until: datetime) -> bool:
    try:
        return datetime.fromisoformat(record.envelope().recorded_at) <= until
    except Exception:  # noqa: BLE001 - a damaged row is verify's to report
        return False


def load_participant(store: Any, participant: str, *, until_position: int | None = None,
                     until_recorded: datetime | None = None) -> DataManagement:
    """Fold one participant's stream and the study stream (locks), in global order, optionally up to a
    log position or a recorded time: what ``show`` needs, without reading the whole log."""
    records = sorted([*store.stream_records(participant), *store.stream_records(STUDY_STREAM)],
                     key=lambda r: r.position)
    dm = DataManagement()
    for record in records:
        if until_position is not None and record.position > until_position:
            break
        if until_recorded is not None and not _recorded_by(record, until_recorded):
            continue
        dm.apply(record)
    return dm


def participant_summary(view: DataManagement, participant: str, now: datetime | None = None) -> dict[str, Any]:
    """What ``show`` and the report print about one participant's data management (query ages as of ``now``)."""
    qs = view.queries(participant, now=now)
    return {"signoff": view.signoff(participant), "sdv": view.sdv(participant), "queries": qs,
            "open_queries": sum(1 for q in qs if q["status"] == "open"), "lock": view.lock(participant)}


def describe_signoff(s: dict[str, Any]) -> str:
    if s["status"] == "not signed":
        return "not signed"
    text = f"{s['status'].upper() if s['status'] != 'current' else 'current'}: {s['signed_by']} at {s['signed_at']} " \
           f"up to position {s['up_to_position']}"
    if s["status"] == "stale":
        text += f" (the record changed after it, at position {s['changed_after']})"
    return text
