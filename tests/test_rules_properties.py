"""Property tests: the rules depend on clinical time, not on the order entries were typed in, except that
a consent, eligibility or enrolment typed after a procedure it should precede is a retrospective entry;
and no rule crashes on any ordering or on arbitrary payloads."""

from __future__ import annotations

import uuid
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.events import CATALOGUE, PARTICIPANT_TYPES
from domain.protocol import bundled_protocol_path, load_protocol
from domain.rules import Entry, find_deviations
from domain.rules.edits import PRECEDES
from ledger.envelope import Envelope
from tests.builders import HistoryBuilder, compliant

PROTOCOL = load_protocol(bundled_protocol_path())


def reorder(h: HistoryBuilder, order: list[int]) -> list[Entry]:
    """The same events typed in another order: positions follow the new order."""
    entries = [h.entries[i] for i in order]
    return [replace(e, position=1000 + n) for n, e in enumerate(entries)]


def inverted(entries: list[Entry]) -> bool:
    """Whether some consent/eligibility/enrolment was typed after a procedure it should precede."""
    return any(e.envelope.type in PRECEDES and any(p.envelope.type in PRECEDES[e.envelope.type] for p in entries[:n])
               for n, e in enumerate(entries))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["F", "M"]))
def test_compliant_participant_in_any_order_has_no_deviation(data: st.DataObject, sex: str) -> None:
    h = compliant(sex)
    order = data.draw(st.permutations(range(len(h.entries))))
    entries = reorder(h, list(order))
    found = {d.kind for d in find_deviations(PROTOCOL, h.participant, entries)}
    assert found == ({"retrospective_entry"} if inverted(entries) else set())


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_planted_deviations_are_found_in_any_order(data: st.DataObject) -> None:
    h = compliant("F", doses=False, visits=())
    h.lab("FBG", 8.0, "mmol/L", day=-20)          # before consent
    h.dose(1, 0)
    h.dose(2, 9)                                   # outside day 7 ±1
    h.dose(3, 14, data={"identity_checked": False})
    h.lab("CPEPTIDE", 0.4, "nmol/L", day=20, recorded_lag_h=100)  # late entry
    order = data.draw(st.permutations(range(len(h.entries))))
    found = {d.kind for d in find_deviations(PROTOCOL, h.participant, reorder(h, list(order)))}
    assert found - {"retrospective_entry"} == {
        "procedure_before_consent", "dose_outside_window", "identity_not_checked", "late_entry"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def arbitrary_entry(draw: st.DrawFn) -> Entry:
    type_name = draw(st.sampled_from(PARTICIPANT_TYPES))
    fields = list(CATALOGUE[type_name].model.model_fields)
    data = {f: draw(json_values) for f in draw(st.lists(st.sampled_from(fields), unique=True)) } if fields else {}
    day = draw(st.integers(-30, 400))
    occurred = f"2010-{1 + day % 12:02d}-{1 + day % 28:02d}T09:00:00+08:00"
    recorded = draw(st.sampled_from([occurred, "2026-01-01T00:00:00+00:00", "not a time"]))
    env = Envelope(event_id=str(uuid.uuid4()), type=type_name, stream="S01-001", position=1,
                   occurred_at=occurred, recorded_at=recorded, author="x", key_id="k", meaning="authorship",
                   data=data)
    return Entry(env, draw(st.integers(1, 10**6)))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(arbitrary_entry(), max_size=25))
def test_no_rule_crashes_on_arbitrary_histories(entries: list[Entry]) -> None:
    for d in find_deviations(PROTOCOL, "S01-001", entries):
        assert d.kind and d.message and d.event_ids
