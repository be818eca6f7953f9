"""A second, different protocol file runs an append-and-deviation scenario with no code change."""

from __future__ import annotations

import json
from pathlib import Path

from domain.service import Trial
from ledger.store import Store
from tests.conftest import Cli, Keys

OTHER = Path(__file__).parent / "protocols" / "vaccine-two-dose.json"


def test_other_protocol_end_to_end(sqlite_db: str, keys: Keys) -> None:
    run = Cli(sqlite_db)
    admin, nurse = ("--key", str(keys.path("admin"))), ("--key", str(keys.path("inv1")))
    assert run("init", "--protocol", str(OTHER), "--study-id", "VAX", "--admin-id", "admin",
               "--admin-name", "Ada", *admin).exit_code == 0
    # the role table is the file's: "investigator" does not exist here, "nurse" does
    assert run("signer", "add", "--user-id", "inv1", "--name", "N", "--role", "investigator",
               "--public-key", f"{keys.path('inv1')}.pub", *admin).exit_code == 3
    assert run("signer", "add", "--user-id", "inv1", "--name", "N", "--role", "nurse",
               "--public-key", f"{keys.path('inv1')}.pub", *admin).exit_code == 0

    def append(type_name: str, data: dict, when: str) -> None:
        r = run("append", type_name, "--participant", "P-1", "--data", json.dumps(data), "--occurred-at", when, *nurse)
        assert r.exit_code == 0, r.output

    append("ParticipantRegistered", {"site": "A", "sex": "M", "birth_year": 1950}, "2020-01-01T09:00:00+00:00")
    append("ConsentSigned", {"icf_version": "3.0", "obtained_by": "inv1"}, "2020-01-01T10:00:00+00:00")
    # this protocol knows TITRE, not FBG
    r = run("append", "LabResultRecorded", "--participant", "P-1", "--data",
            '{"analyte": "FBG", "value": 8, "unit": "mmol/L"}', "--occurred-at", "2020-01-02T09:00:00+00:00", *nurse)
    assert r.exit_code == 3 and "TITRE" in r.stderr
    append("LabResultRecorded", {"analyte": "TITRE", "value": 4, "unit": "U/mL"}, "2020-01-02T09:00:00+00:00")
    for c, met in (("I1", True), ("I2", True), ("I3", True), ("E1", False)):
        append("ScreeningAssessed", {"criterion": c, "met": met}, "2020-01-03T09:00:00+00:00")
    append("EligibilityConfirmed", {}, "2020-01-04T09:00:00+00:00")
    append("Enrolled", {}, "2020-01-04T10:00:00+00:00")
    # the product is the file's too: intramuscular doses, no cell fields
    r = run("append", "InfusionAdministered", "--participant", "P-1", "--data", json.dumps(
        {"dose_number": 1, "route": "intravenous", "lot": "V1", "identity_checked": True}),
        "--occurred-at", "2020-01-05T09:00:00+00:00", *nurse)
    assert r.exit_code == 3 and "data.route: 'intravenous' is not a route of two-dose vaccine (intramuscular)" in r.stderr
    r = run("append", "InfusionAdministered", "--participant", "P-1", "--data", json.dumps(
        {"dose_number": 1, "route": "intramuscular", "lot": "V1", "identity_checked": True, "cell_source": "n/a"}),
        "--occurred-at", "2020-01-05T09:00:00+00:00", *nurse)
    assert r.exit_code == 3 and "data.product.cell_source: not a field of two-dose vaccine" in r.stderr
    append("InfusionAdministered", {"dose_number": 1, "route": "intramuscular", "lot": "V1", "identity_checked": True},
           "2020-01-05T09:00:00+00:00")
    # dose 2 on day 33: outside this protocol's day 28 ±3 window
    append("InfusionAdministered", {"dose_number": 2, "route": "intramuscular", "lot": "V2", "identity_checked": True},
           "2020-02-07T09:00:00+00:00")
    assert run("verify").exit_code == 0
    shown = run("show", "P-1")
    assert "dose 2: day 33 intramuscular lot V2\n" in shown.stdout, shown.stdout

    trial = Trial(Store(sqlite_db))
    found = trial.deviations("P-1")
    late = {d.kind for d in found}
    assert "dose_outside_window" in late
    assert [d.message for d in found if d.kind == "dose_outside_window"] == [
        "dose 2 on study day 33, outside its window (days 25 to 31)"]
    # everything was entered long after 2020 with this protocol's 24 h limit: late entries, nothing else
    assert late == {"dose_outside_window", "late_entry"}
    trial.store.close()


def test_other_protocol_supervision_and_meanings(sqlite_db: str, keys: Keys) -> None:
    """The file's own supervision map: a physician supervises nurses, not the other way round."""
    run = Cli(sqlite_db)
    admin = ("--key", str(keys.path("admin")))
    assert run("init", "--protocol", str(OTHER), "--study-id", "VAX", "--admin-id", "admin",
               "--admin-name", "Ada", *admin).exit_code == 0
    for user, role in (("inv1", "physician"), ("coord1", "nurse")):
        assert run("signer", "add", "--user-id", user, "--name", user, "--role", role,
                   "--public-key", f"{keys.path(user)}.pub", *admin).exit_code == 0

    def append(user: str, type_name: str, data: dict, *extra: str) -> tuple[int, str]:
        r = run("--json", "append", type_name, "--participant", "P-1", "--data", json.dumps(data),
                "--key", str(keys.path(user)), *extra)
        return r.exit_code, (json.loads(r.stdout)["event_id"] if r.exit_code == 0 else r.stderr)

    _, registered = append("coord1", "ParticipantRegistered", {"site": "A", "sex": "M", "birth_year": 1950})
    _, screening = append("inv1", "ScreeningAssessed", {"criterion": "E1", "met": False})
    code, err = append("coord1", "EntryVoided", {"target_event_id": screening}, "--reason", "x")
    assert code == 3 and "may not void an entry of inv1 (physician)" in err
    code, _ = append("inv1", "EntryCorrected", {"target_event_id": registered, "changes": {"birth_year": 1951}},
                     "--reason", "ID card")
    assert code == 0
    code, err = append("coord1", "RecordReviewed", {"scope": "all"}, "--meaning", "approval")
    assert code == 3 and "meaning" in err
