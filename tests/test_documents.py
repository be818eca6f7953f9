"""Controlled documents, consent bound to its form, amendments bound to theirs, and re-consent (issue 19)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from domain.protocol import bundled_protocol_path
from domain.service import Trial
from ledger.store import Store
from tests.conftest import Cli, Keys, USER_ROLES, event_count

T_REG = "2010-09-01T09:00:00+08:00"
T_CONSENT = "2010-09-06T09:30:00+08:00"
T_AMEND = "2010-10-01T09:00:00+08:00"


def _keyed(keys: Keys, user: str) -> tuple[str, str]:
    return ("--key", str(keys.path(user)))


@pytest.fixture
def study(sqlite_db: str, keys: Keys) -> Cli:
    """An initialised ledger with one signer per role and one registered participant, all through the CLI."""
    return initialised(Cli(sqlite_db), keys)


def initialised(run: Cli, keys: Keys) -> Cli:
    assert run("init", "--protocol", str(bundled_protocol_path()), "--study-id", "MSC-T2DM", "--admin-id", "admin",
               "--admin-name", "Ada Admin", *_keyed(keys, "admin")).exit_code == 0
    for user, role in USER_ROLES.items():
        r = run("signer", "add", "--user-id", user, "--name", f"Name of {user}", "--role", role,
                "--public-key", f"{keys.path(user)}.pub", "--valid-from", "2010-01-01T00:00:00+00:00",
                *_keyed(keys, "admin"))
        assert r.exit_code == 0, r.output
    append(run, keys, "ParticipantRegistered", {"site": "S01", "sex": "M", "birth_year": 1960}, T_REG)
    return run


def append(run: Cli, keys: Keys, type_name: str, data: dict, when: str, user: str = "inv1",
           participant: str = "S01-001") -> object:
    return run("append", type_name, "--participant", participant, "--data", json.dumps(data),
               "--occurred-at", when, *_keyed(keys, user))


def icf_file(tmp_path: Path, version: str, text: str = "") -> Path:
    path = tmp_path / f"icf-{version}.txt"
    path.write_text(text or f"Informed consent form, version {version}.\nYou may withdraw at any time.\n")
    return path


def register_icf(run: Cli, keys: Keys, path: Path, version: str) -> str:
    r = run("document", "register", str(path), "--kind", "icf", "--version", version, *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    return hashlib.sha256(path.read_bytes()).hexdigest()


def amended_protocol(tmp_path: Path, version: str = "1.1", icf: str = "2.0") -> Path:
    text = bundled_protocol_path().read_text()
    text = text.replace('version = "1.0"\n', f'version = "{version}"\n', 1)
    text = text.replace('icf_version = "1.0"', f'icf_version = "{icf}"', 1)
    path = tmp_path / f"protocol-{version}.toml"
    path.write_text(text)
    return path


def deviations(db: str, kind: str) -> list:
    trial = Trial(Store(db))
    try:
        return [d for d in trial.deviations("S01-001") if d.kind == kind]
    finally:
        trial.store.close()


# -- documents ------------------------------------------------------------------------------


def test_document_check_names_the_registered_icf_and_not_an_edited_copy(study: Cli, keys: Keys, tmp_path: Path) -> None:
    icf = icf_file(tmp_path, "1.0")
    sha = register_icf(study, keys, icf, "1.0")
    r = study("document", "check", str(icf))
    assert r.exit_code == 0 and "icf version 1.0" in r.stdout and sha in r.stdout
    edited = tmp_path / "copy" / icf.name
    edited.parent.mkdir()
    edited.write_bytes(icf.read_bytes().replace(b"any time", b"no time"))
    r = study("document", "check", str(edited))
    assert r.exit_code == 1
    assert "matches no registered document" in r.stdout and "this copy differs" in r.stdout
    listed = study.json("document", "list")
    assert [(d["kind"], d["version"], d["sha256"], d["file_name"]) for d in listed] == [("icf", "1.0", sha, icf.name)]
    assert study("verify").exit_code == 0


def test_document_register_is_admin_only_and_once_per_version(study: Cli, keys: Keys, tmp_path: Path) -> None:
    icf = icf_file(tmp_path, "1.0")
    before = event_count(study.db)
    r = study("document", "register", str(icf), "--kind", "icf", "--version", "1.0", *_keyed(keys, "inv1"))
    assert r.exit_code == 3 and "may not sign DocumentRegistered" in r.stderr
    register_icf(study, keys, icf, "1.0")
    r = study("document", "register", str(icf), "--kind", "icf", "--version", "1.1", *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "already registered as icf version 1.0" in r.stderr
    other = icf_file(tmp_path, "other", "a different form\n")
    r = study("document", "register", str(other), "--kind", "icf", "--version", "1.0", *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "data.version" in r.stderr
    assert event_count(study.db) == before + 1


# -- consent bound to its form and taken by a registered signer ---------------------------------


def test_consent_with_a_missing_or_wrong_document_hash_is_refused(study: Cli, keys: Keys, tmp_path: Path) -> None:
    sha = register_icf(study, keys, icf_file(tmp_path, "1.0"), "1.0")
    before = event_count(study.db)
    consent = {"icf_version": "1.0", "obtained_by": "inv1"}
    r = append(study, keys, "ConsentSigned", consent, T_CONSENT)
    assert r.exit_code == 3 and "data.document_sha256" in r.stderr and "must name its hash" in r.stderr
    r = append(study, keys, "ConsentSigned", {**consent, "document_sha256": "0" * 64}, T_CONSENT)
    assert r.exit_code == 3 and "is not the registered ICF version 1.0" in r.stderr
    # another spelling of the version cannot step around the registered document
    for spelling in (" 1.0", "1.0 ", "v1.0"):
        r = append(study, keys, "ConsentSigned", {**consent, "icf_version": spelling}, T_CONSENT)
        assert r.exit_code == 3 and "is not an ICF version of this study" in r.stderr, r.output
    assert event_count(study.db) == before
    r = append(study, keys, "ConsentSigned", {**consent, "document_sha256": sha}, T_CONSENT)
    assert r.exit_code == 0, r.output


def test_consent_without_a_registered_icf_works_as_before(study: Cli, keys: Keys) -> None:
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "coord1", "witness": "Mr Lee"},
               T_CONSENT, user="coord1")
    assert r.exit_code == 0, r.output
    assert study("verify").exit_code == 0


@pytest.mark.parametrize(("who", "message"), [
    ("Dr Somebody", "'Dr Somebody' is not a registered signer"),
    ("lab1", "lab1 is a lab; the protocol lets only coordinator, investigator obtain consent"),
    ("admin", "admin is a admin"),
])
def test_consent_obtained_by_an_unregistered_name_is_refused(study: Cli, keys: Keys, who: str, message: str) -> None:
    before = event_count(study.db)
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": who}, T_CONSENT)
    assert r.exit_code == 3 and "data.obtained_by" in r.stderr and message in r.stderr
    assert event_count(study.db) == before


def test_consent_obtained_by_a_revoked_signer_is_refused(study: Cli, keys: Keys) -> None:
    assert study("signer", "revoke", "--user-id", "coord1", "--reason", "left the site",
                 *_keyed(keys, "admin")).exit_code == 0
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "coord1"}, T_CONSENT)
    assert r.exit_code == 3 and "signer coord1 was revoked" in r.stderr


# -- amendments bound to their document --------------------------------------------------------


def test_an_amendment_naming_no_registered_protocol_document_is_refused(study: Cli, keys: Keys) -> None:
    r = study("append", "ProtocolAmended", "--data",
              json.dumps({"protocol_version": "1.1", "protocol_sha256": "0" * 64, "icf_version": "2.0"}),
              *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "data.protocol_sha256" in r.stderr and "not a registered protocol" in r.stderr


def test_amend_registers_the_file_and_embeds_its_rules(study: Cli, keys: Keys, tmp_path: Path) -> None:
    path = amended_protocol(tmp_path)
    before = event_count(study.db)
    r = study("amend", "--protocol", str(path), "--icf-version", "9.9", *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "--icf-version" in r.stderr
    r = study("amend", "--protocol", str(path), "--icf-version", "2.0", "--reconsent-required",
              "--effective-at", T_AMEND, *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    assert event_count(study.db) == before + 2
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    r = study("document", "check", str(path))
    assert r.exit_code == 0 and "protocol version 1.1" in r.stdout
    trial = Trial(Store(study.db))
    registry = trial.registry()
    assert registry.protocol is not None and registry.protocol.version == "1.1"
    assert (registry.protocol_sha256, registry.icf_version) == (sha, "2.0")
    trial.store.close()
    # the same document again: no second registration, but a second amendment to it is allowed
    path.write_text(path.read_text() + "\n# edited after registration\n")
    assert study("document", "check", str(path)).exit_code == 1
    assert study("verify").exit_code == 0


# -- re-consent ----------------------------------------------------------------------------


def _consented_then_amended(study: Cli, keys: Keys, tmp_path: Path) -> str:
    """Consent on ICF 1.0, then an amendment to ICF 2.0 requiring re-consent; returns ICF 2.0's hash."""
    sha1 = register_icf(study, keys, icf_file(tmp_path, "1.0"), "1.0")
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1", "document_sha256": sha1},
               T_CONSENT)
    assert r.exit_code == 0, r.output
    sha2 = register_icf(study, keys, icf_file(tmp_path, "2.0"), "2.0")
    r = study("amend", "--protocol", str(amended_protocol(tmp_path)), "--reconsent-required",
              "--effective-at", T_AMEND, *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    return sha2


FBG = {"analyte": "FBG", "value": 8.1, "unit": "mmol/L"}


def test_a_lab_after_an_amendment_requiring_reconsent_before_reconsent_is_an_important_deviation(
        study: Cli, keys: Keys, tmp_path: Path) -> None:
    sha2 = _consented_then_amended(study, keys, tmp_path)
    assert append(study, keys, "LabResultRecorded", FBG, "2010-10-02T09:00:00+08:00", user="lab1").exit_code == 0
    found = deviations(study.db, "procedure_without_reconsent")
    assert len(found) == 1 and found[0].important
    assert "without re-consent on ICF 2.0" in found[0].message and "latest consent is on ICF 1.0" in found[0].message
    # re-consent, then another lab: no new deviation; the first stays raised
    r = append(study, keys, "ConsentSigned", {"icf_version": "2.0", "obtained_by": "coord1", "document_sha256": sha2},
               "2010-10-03T09:00:00+08:00", user="coord1")
    assert r.exit_code == 0, r.output
    assert append(study, keys, "LabResultRecorded", FBG, "2010-10-04T09:00:00+08:00", user="lab1").exit_code == 0
    assert len(deviations(study.db, "procedure_without_reconsent")) == 1
    assert deviations(study.db, "icf_not_current") == []
    shown = study.json("deviations")
    assert any(d["kind"] == "procedure_without_reconsent" and d["important"] for d in shown)


def test_a_lab_after_reconsent_is_no_deviation(study: Cli, keys: Keys, tmp_path: Path) -> None:
    sha2 = _consented_then_amended(study, keys, tmp_path)
    r = append(study, keys, "ConsentSigned", {"icf_version": "2.0", "obtained_by": "inv1", "document_sha256": sha2},
               "2010-10-01T10:00:00+08:00")
    assert r.exit_code == 0, r.output
    assert append(study, keys, "LabResultRecorded", FBG, "2010-10-02T09:00:00+08:00", user="lab1").exit_code == 0
    assert deviations(study.db, "procedure_without_reconsent") == []
    assert deviations(study.db, "icf_not_current") == []


def test_a_lab_before_the_amendment_takes_effect_is_no_deviation(study: Cli, keys: Keys, tmp_path: Path) -> None:
    _consented_then_amended(study, keys, tmp_path)
    # collected before the effective date, entered after the amendment: judged by its clinical time
    assert append(study, keys, "LabResultRecorded", FBG, "2010-09-30T09:00:00+08:00", user="lab1").exit_code == 0
    assert deviations(study.db, "procedure_without_reconsent") == []


def test_a_consent_signed_before_but_entered_after_an_amendment_is_no_deviation(
        study: Cli, keys: Keys, tmp_path: Path) -> None:
    register_icf(study, keys, icf_file(tmp_path, "2.0"), "2.0")
    r = study("amend", "--protocol", str(amended_protocol(tmp_path)), "--reconsent-required",
              "--effective-at", T_AMEND, *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    # signed on ICF 1.0 on 6 September, typed in after the October amendment
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, T_CONSENT)
    assert r.exit_code == 0, r.output
    assert deviations(study.db, "icf_not_current") == []
    # a consent on the old ICF signed after the amendment took effect is still flagged
    r = append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"},
               "2010-10-05T09:00:00+08:00", participant="S01-001")
    assert r.exit_code == 0, r.output
    assert [d.message for d in deviations(study.db, "icf_not_current")] == [
        "consent on ICF version 1.0 while 2.0 was current"]


# -- report --------------------------------------------------------------------------------


def test_report_lists_each_consent_with_its_document_and_the_registered_documents(
        study: Cli, keys: Keys, tmp_path: Path) -> None:
    sha2 = _consented_then_amended(study, keys, tmp_path)
    append(study, keys, "ConsentSigned", {"icf_version": "2.0", "obtained_by": "inv1", "document_sha256": sha2},
           "2010-10-01T10:00:00+08:00")
    out = tmp_path / "report.html"
    r = study("report", "--out", str(out))
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert 'class="documents"' in html and "icf-2.0.txt" in html and "protocol-1.1.toml" in html
    assert 'class="consents"' in html and sha2 in html and "matches icf-2.0.txt" in html


def test_a_correction_of_a_consent_is_checked_like_a_new_consent(study: Cli, keys: Keys, tmp_path: Path) -> None:
    sha = register_icf(study, keys, icf_file(tmp_path, "1.0"), "1.0")
    append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1", "document_sha256": sha},
           T_CONSENT)
    consent = study.json("audit", "--type", "ConsentSigned")[0]["event_id"]

    r = study("append", "EntryCorrected", "--participant", "S01-001", "--reason", "typo", "--data",
              json.dumps({"target_event_id": consent, "changes": {"obtained_by": "Dr Somebody"}}), *_keyed(keys, "inv1"))
    assert r.exit_code == 3 and "data.obtained_by" in r.stderr
    r = study("append", "EntryCorrected", "--participant", "S01-001", "--reason", "typo", "--data",
              json.dumps({"target_event_id": consent, "changes": {"document_sha256": "f" * 64}}), *_keyed(keys, "inv1"))
    assert r.exit_code == 3 and "data.document_sha256" in r.stderr
    r = study("append", "EntryCorrected", "--participant", "S01-001", "--reason", "witness was there", "--data",
              json.dumps({"target_event_id": consent, "changes": {"witness": "Mr Lee", "obtained_by": "coord1"}}),
              *_keyed(keys, "inv1"))
    assert r.exit_code == 0, r.output


def test_an_amendment_s_rules_apply_to_what_happens_after_its_effective_date(
        study: Cli, keys: Keys, tmp_path: Path) -> None:
    append(study, keys, "ConsentSigned", {"icf_version": "1.0", "obtained_by": "inv1"}, T_CONSENT)
    path = amended_protocol(tmp_path)
    path.write_text(path.read_text() + '\n[[analytes]]\nid = "LIPASE"\nunits = ["U/L"]\nmin = 0\nmax = 5000\n')
    r = study("amend", "--protocol", str(path), "--effective-at", T_AMEND, *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    lipase = {"analyte": "LIPASE", "value": 40, "unit": "U/L"}
    r = append(study, keys, "LabResultRecorded", lipase, "2010-09-20T09:00:00+08:00", user="lab1")
    assert r.exit_code == 3 and "'LIPASE' is not in the protocol" in r.stderr
    assert append(study, keys, "LabResultRecorded", lipase, "2010-10-02T09:00:00+08:00", user="lab1").exit_code == 0


def test_reconsent_needs_a_new_icf_version(study: Cli, keys: Keys, tmp_path: Path) -> None:
    r = study("amend", "--protocol", str(amended_protocol(tmp_path, icf="1.0")), "--reconsent-required",
              *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "re-consent needs a new ICF version" in r.stderr
    assert study.json("document", "list") == []


def test_an_amendment_s_embedded_rules_must_be_those_of_its_registered_file(
        study: Cli, keys: Keys, tmp_path: Path) -> None:
    path = amended_protocol(tmp_path)
    r = study("document", "register", str(path), "--kind", "protocol", "--version", "1.2", *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "is protocol version 1.1, not 1.2" in r.stderr
    r = study("document", "register", str(path), "--kind", "protocol", "--version", "1.1", *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    trial = Trial(Store(study.db))
    rules = trial.protocol().document()  # the genesis rules, not the registered file's
    trial.store.close()
    forged = {**rules, "version": "1.1", "icf_version": "2.0", "late_entry_hours": 10000}
    data = {"protocol_version": "1.1", "protocol_sha256": sha, "icf_version": "2.0", "protocol": forged}
    r = study("append", "ProtocolAmended", "--data", json.dumps(data), *_keyed(keys, "admin"))
    assert r.exit_code == 3 and "not those of the registered document protocol-1.1.toml" in r.stderr
    # amend with the registered file itself reuses its registration
    r = study("amend", "--protocol", str(path), *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    assert len(study.json("document", "list")) == 1


def test_a_protocol_written_before_documents_existed_can_register_and_amend(
        sqlite_db: str, keys: Keys, tmp_path: Path) -> None:
    """Its admin may amend the protocol, so may register the amendment's document (no deadlock)."""
    run = Cli(sqlite_db)
    old = bundled_protocol_path().read_text().replace(', "DocumentRegistered"]', "]")
    assert "DocumentRegistered" not in old
    (tmp_path / "old.toml").write_text(old)
    assert run("init", "--protocol", str(tmp_path / "old.toml"), "--study-id", "OLD", "--admin-id", "admin",
               "--admin-name", "Ada", *_keyed(keys, "admin")).exit_code == 0
    r = run("amend", "--protocol", str(amended_protocol(tmp_path)), *_keyed(keys, "admin"))
    assert r.exit_code == 0, r.output
    assert run("verify").exit_code == 0


@pytest.mark.postgres
def test_amend_and_reconsent_on_postgres(pg_url: str, keys: Keys, tmp_path: Path) -> None:
    study = initialised(Cli(pg_url), keys)
    sha2 = _consented_then_amended(study, keys, tmp_path)
    assert append(study, keys, "LabResultRecorded", FBG, "2010-10-02T09:00:00+08:00", user="lab1").exit_code == 0
    append(study, keys, "ConsentSigned", {"icf_version": "2.0", "obtained_by": "inv1", "document_sha256": sha2},
           "2010-10-03T09:00:00+08:00")
    kinds = [d["kind"] for d in study.json("deviations")]
    assert kinds.count("procedure_without_reconsent") == 1
    assert study("verify").exit_code == 0
