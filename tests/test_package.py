"""The inspection package and the lossless ODM (SPEC §12; issue 22): export, verify offline, fail naming the file."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import odmlib
import pytest
import xmlschema
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from odmlib import loader, odm_loader

from cli.main import cli
from domain.events import CATALOGUE
from domain.service import Command, Trial
from ledger import checkpoint as notes
from ledger.canonical import canonical_bytes
from ledger.keys import read_private
from ledger.merkle_log import MerkleLog
from ledger.notes import sign_note
from ledger.signed_log import decode_lines
from ledger.store import Store
from projections import odm as odm_module
from projections.package import FILES, MANIFEST, manifest_body
from tests.conftest import PASSPHRASE, Cli, Keys

BIN = str(Path(sys.executable).with_name("trial-ledger"))
NS = "{http://www.cdisc.org/ns/odm/v1.3}"
XSD = Path(odmlib.__file__).parent / "schemas" / "odm" / "1.3.2" / "ODM1-3-2.xsd"
ADMIN_KEY = "demo-keys/admin-sponsor.key"


def tl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRIAL_LEDGER_PASSPHRASE": "demo-passphrase"}
    return subprocess.run([BIN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("package")
    for args in (("demo",), ("checkpoint", "--key", ADMIN_KEY, "--out", "cp.txt"),
                 ("export", "--format", "package", "--out", "pkg.zip", "--key", ADMIN_KEY),
                 ("export", "--format", "odm", "--out", "demo.xml")):
        r = tl("--db", "demo.db", *args, cwd=cwd)
        assert r.returncode == 0, (args, r.stderr)
    return cwd


def verify_pkg(cwd: Path, package: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return tl("verify-package", package, "--public-key", f"{ADMIN_KEY}.pub", *extra, cwd=cwd)


def odm_load_subjects(path: Path) -> int:
    odm = loader.ODMLoader(odm_loader.XMLODMLoader(model_package="odm_1_3_2", ns_uri=NS[1:-1]))
    odm.open_odm_document(str(path))
    return len(odm.load_odm().ClinicalData[0].SubjectData)


def groups_by_event(subject: ET.Element) -> dict[str, tuple[ET.Element, ET.Element]]:
    """event id -> (FormData, ItemGroupData), through the AuditRecord's SourceID."""
    found = {}
    for form in subject.iter(f"{NS}FormData"):
        for group in form.findall(f"{NS}ItemGroupData"):
            source = group.findtext(f"{NS}AuditRecord/{NS}SourceID", "")
            if source:  # derived deviations carry no signed source
                found[source.split()[0]] = (form, group)
    return found


def items(group: ET.Element) -> dict[str, str]:
    return {i.get("ItemOID", "").rpartition(".")[2]: i.get("Value", "") for i in group.findall(f"{NS}ItemData")}


# -- ODM ---------------------------------------------------------------------------------------


def test_odm_of_the_demo_validates_loads_and_keeps_every_clinical_time(demo: Path) -> None:
    errors = list(xmlschema.XMLSchema(str(XSD)).iter_errors(str(demo / "demo.xml")))
    assert errors == [], str(errors[0])[:1000]
    assert odm_load_subjects(demo / "demo.xml") == 28  # odmlib's ODM 1.3.2 loader reads it back
    root = ET.parse(demo / "demo.xml").getroot()
    # the participant with the serious AE and its reassessment
    log = list(decode_lines(io.BytesIO(zipfile.ZipFile(demo / "pkg.zip").read("log.jsonl"))))
    envs = [r.envelope() for r in log]
    updated = next(e for e in envs if e.type == "AdverseEventUpdated")
    pid = updated.stream
    stream = [e for e in envs if e.stream == pid]
    subject = root.find(f"{NS}ClinicalData/{NS}SubjectData[@SubjectKey='{pid}']")
    assert subject is not None
    found = groups_by_event(subject)
    assert {e.type for e in stream} >= {"ParticipantRegistered", "ConsentSigned", "LabResultRecorded",
                                        "ScreeningAssessed", "EligibilityConfirmed", "Enrolled",
                                        "InfusionAdministered", "AdverseEventReported", "AdverseEventUpdated",
                                        "RecordReviewed"}
    for env in stream:  # every event the demo wrote for this participant, with its clinical time and signature
        form, group = found[env.event_id]
        assert group.find(f"{NS}Signature").get("ID") == f"SIG.{env.event_id}"
        assert group.find(f"{NS}Signature/{NS}SignatureRef").get("SignatureOID") == f"SD.{env.meaning}"
        if group.get("TransactionType") == "Insert":
            assert form.get("FormOID") == f"F.{env.type}"
            assert items(group)["OCCURRED_AT"] == env.occurred_at  # with its offset
    form, group = found[updated.event_id]  # the AE reassessment: an Update under that AE, after its Insert
    ae_id = updated.data["ae_id"]
    assert (group.get("TransactionType"), group.get("ItemGroupOID"), group.get("ItemGroupRepeatKey"),
            form.get("FormRepeatKey")) == ("Update", "IG.AdverseEventReported", ae_id, ae_id)
    assert items(group)["relatedness"] == "probable"
    dose = next(e for e in stream if e.type == "InfusionAdministered")
    dose_items = {i.get("ItemOID"): i.get("Value") for i in found[dose.event_id][1].findall(f"{NS}ItemData")}
    assert dose_items["IT.InfusionAdministered.product.cell_count"] == odm_module._value(dose.data["product"]["cell_count"])
    assert "IT.InfusionAdministered.product.cell_count" in {d.get("OID") for d in root.iter(f"{NS}ItemDef")}
    assert group.findtext(f"{NS}AuditRecord/{NS}ReasonForChange")
    inserts = [g for g in subject.iter(f"{NS}ItemGroupData") if g.get("ItemGroupRepeatKey") == ae_id
               and g.get("TransactionType") == "Insert"]
    assert len(inserts) == 1 and items(inserts[0])["relatedness"] == "possible"  # the original is kept
    everything = {}
    for subject_data in root.iter(f"{NS}SubjectData"):
        everything.update(groups_by_event(subject_data))
    written = [e for e in envs if e.stream != "@study"]
    assert all(e.event_id in everything for e in written)  # every participant event of the demo, all types
    assert {e.type for e in written} >= {"ParticipantWithdrawn", "ConsentWithdrawn", "ParticipantCompleted",
                                         "VisitCompleted", "ScreenFailed", "ProtocolDeviationRecorded",
                                         "EntryCorrected"}
    derived = [g for g in root.iter(f"{NS}ItemGroupData") if g.get("ItemGroupOID") == "IG.DerivedDeviation"]
    listed = json.loads(tl("--db", "demo.db", "--json", "deviations", cwd=demo).stdout)
    assert len(derived) == len(listed) >= 4  # every deviation the rules raised, open or resolved
    assert all(g.find(f"{NS}Signature") is None and g.find(f"{NS}Annotation/{NS}Comment") is not None
               for g in derived)  # marked as derived, never dressed up as signed
    assert any("dose 2 on study day 9" in items(g)["message"] for g in derived)
    # study facts from the protocol, not a literal in the code
    assert {e.get("EffectiveDate") for e in root.iter(f"{NS}MetaDataVersionRef")} == {"2010-08-31"}
    assert root.find(f"{NS}Study/{NS}GlobalVariables/{NS}ProtocolName").text == "MSC-T2DM-2010"
    assert root.find(f"{NS}Study/{NS}GlobalVariables/{NS}StudyDescription").text.endswith(
        "(start 2010-08-31; primary completion 2011-08-31; completion 2011-12-31)")
    assert not list(root.iter(f"{NS}Organization"))  # the demo names no organisations; a role is not one


def test_odm_metadata_is_derived_from_the_payload_models() -> None:
    for name, et in odm_module.forms().items():
        fields = [f for f, _dt in odm_module.item_defs(et)]
        assert fields[:len(et.model.model_fields)] == list(et.model.model_fields), name
    types = dict(odm_module.item_defs(CATALOGUE["InfusionAdministered"]))
    assert (types["dose_number"], types["identity_checked"], types["ended_at"], types["product"]) == \
        ("integer", "boolean", "datetime", "object")
    assert dict(odm_module.item_defs(CATALOGUE["LabResultRecorded"]))["value"] == "text"  # number or word


def test_odm_maps_every_participant_type_and_keys_an_ae_correction_by_its_ae(trial: Trial, keys: Keys, run: Cli,
                                                                            tmp_path: Path) -> None:
    from tests.test_projections import full_history
    full_history(trial, keys)
    s = keys.signers
    ae = next(r.envelope() for r in trial.store.stream_records("S01-001") if r.type == "AdverseEventReported")
    fix = trial.append(Command("EntryCorrected", "S01-001", {"target_event_id": ae.event_id,
                                                             "changes": {"term": "pyrexia"}},
                               occurred_at="2010-09-02T09:00:00+08:00", reason="MedDRA term"), s["inv1"])
    trial.append(Command("SignerRegistered", None, {
        "user_id": "cro1", "name": "Cora Ro", "role": "monitor", "public_key": s["outsider"].public_b64,
        "valid_from": "2010-01-01T00:00:00+00:00", "organisation": "Example CRO Ltd"}), s["admin"])
    out = tmp_path / "o.xml"
    r = run("export", "--format", "odm", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert list(xmlschema.XMLSchema(str(XSD)).iter_errors(str(out))) == []
    root = ET.parse(out).getroot()
    subject = root.find(f"{NS}ClinicalData/{NS}SubjectData[@SubjectKey='S01-001']")
    found = groups_by_event(subject)
    envs = [r.envelope() for r in trial.store.stream_records("S01-001")]
    assert len({e.type for e in envs}) >= 18  # the clinical catalogue full_history writes
    assert all(e.event_id in found for e in envs)  # every participant event type maps to ClinicalData
    form, group = found[fix.event_id]
    assert (group.get("TransactionType"), group.get("ItemGroupRepeatKey"), form.get("FormRepeatKey")) == \
        ("Update", "AE-1", "AE-1")
    assert items(group) == {"term": "pyrexia"}
    voids = [g for _f, g in found.values() if g.get("TransactionType") == "Remove"]
    assert len(voids) == 1 and not items(voids[0])
    orgs = {u.get("OID"): u.findtext(f"{NS}Organization") for u in root.iter(f"{NS}User")}
    assert orgs["USR.cro1"] == "Example CRO Ltd" and orgs["USR.inv1"] is None


# -- the package -------------------------------------------------------------------------------


def test_package_verifies_offline_and_regenerates_byte_identically(demo: Path, tmp_path: Path) -> None:
    r = verify_pkg(demo, "pkg.zip")
    assert r.returncode == 0, r.stderr
    assert "byte for byte" in r.stdout
    with zipfile.ZipFile(demo / "pkg.zip") as z:
        assert sorted(z.namelist()) == sorted([*FILES, MANIFEST])
        assert z.read("checkpoint.txt") == (demo / "cp.txt").read_bytes()  # as `checkpoint` produced it
    again = tl("--db", "demo.db", "export", "--format", "package", "--out", str(tmp_path / "again.zip"),
               "--key", ADMIN_KEY, cwd=demo)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.zip").read_bytes() == (demo / "pkg.zip").read_bytes()
    other = tmp_path / "other.pub"
    other.write_text(base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes_raw()).decode())
    r = tl("verify-package", "pkg.zip", "--public-key", str(other), cwd=demo)
    assert r.returncode == 1 and "manifest.txt" in r.stderr  # a key the inspector did not pin


def rezip(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for info in z.infolist():
            out.writestr(info, replace.get(info.filename, z.read(info.filename)))


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


@pytest.mark.parametrize("name", [*FILES, MANIFEST])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_package_fails_naming_the_file_after_one_byte_changes(demo: Path, tmp_path: Path, name: str,
                                                            where: str) -> None:
    blob = zipfile.ZipFile(demo / "pkg.zip").read(name)
    at = {"start": 0, "middle": len(blob) // 2, "end": len(blob) - 2}[where]
    bad = tmp_path / "bad.zip"
    rezip(demo / "pkg.zip", bad, {name: flip(blob, at)})
    r = verify_pkg(demo, str(bad))
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith(f"error: {name}:"), r.stderr


def test_package_signature_line_of_the_manifest_is_checked(demo: Path, tmp_path: Path) -> None:
    text = zipfile.ZipFile(demo / "pkg.zip").read(MANIFEST).decode()
    body, _, sig = text.partition("\n\n")
    blob = sig.split(" ")[-1]
    forged = f"{body}\n\n{sig[:-len(blob)]}{'A' if blob[0] != 'A' else 'B'}{blob[1:]}"
    rezip(demo / "pkg.zip", tmp_path / "bad.zip", {MANIFEST: forged.encode()})
    r = verify_pkg(demo, str(tmp_path / "bad.zip"))
    assert r.returncode == 1 and r.stderr.startswith("error: manifest.txt:"), r.stderr


@pytest.mark.parametrize("name", ["report.html", "odm.xml", "audit.csv"])
def test_a_re_signed_manifest_does_not_cover_an_edited_report(demo: Path, tmp_path: Path, name: str) -> None:
    """Even the holder of the root key cannot ship a report the log does not regenerate."""
    with zipfile.ZipFile(demo / "pkg.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    files[name] = files[name].replace(b"S01-003", b"S01-O03", 1)
    signer = read_private(demo / ADMIN_KEY, "demo-passphrase")
    origin = notes.parse(files["checkpoint.txt"].decode())[0].origin
    files[MANIFEST] = sign_note(manifest_body({n: files[n] for n in FILES}), signer, origin).encode()
    rezip(demo / "pkg.zip", tmp_path / "bad.zip", files)
    r = verify_pkg(demo, str(tmp_path / "bad.zip"))
    assert r.returncode == 1 and r.stderr.startswith(f"error: {name}: differs at byte"), r.stderr


def cosign(note: str, name: str, key: Ed25519PrivateKey, timestamp: int = 1_700_000_000) -> str:
    body = note.partition("\n\n")[0] + "\n"
    public = key.public_key().public_bytes_raw()
    kid = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    signature = key.sign(f"cosignature/v1\ntime {timestamp}\n{body}".encode())
    blob = base64.b64encode(kid + timestamp.to_bytes(8, "big") + signature).decode()
    return note + f"\u2014 {name} {blob}\n"


def vkey(name: str, key: Ed25519PrivateKey) -> str:
    public = key.public_key().public_bytes_raw()
    kid = hashlib.sha256(name.encode() + b"\n\x04" + public).digest()[:4]
    encoded = base64.b64encode(b"\x04" + public).decode()
    return f"{name}+{kid.hex()}+{encoded}\n"


def test_package_counts_witness_cosignatures_against_the_inspectors_quorum(tmp_path: Path, demo: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    for item in ("demo.db", "demo-keys"):
        subprocess.run(["cp", "-r", str(demo / item), str(work / item)], check=True)
    w1, w2, stranger = (Ed25519PrivateKey.generate() for _ in range(3))
    store = Store(str(work / "demo.db"))
    tree = MerkleLog(store)
    latest = tree.latest_checkpoint()
    assert latest is not None
    note = cosign(cosign(latest["note"], "w1.example", w1), "w2.example", w2)
    tree.save_checkpoint(latest["tree_size"], latest["root"], note)
    store.close()
    for n, k in (("w1.example", w1), ("w2.example", w2), ("stranger.example", stranger)):
        (work / f"{n}.vkey").write_text(vkey(n, k))
    r = tl("--db", "demo.db", "export", "--format", "package", "--out", "cos.zip", "--key", ADMIN_KEY, cwd=work)
    assert r.returncode == 0, r.stderr
    assert "w2.example" in zipfile.ZipFile(work / "cos.zip").read("checkpoint.txt").decode()
    ok = verify_pkg(work, "cos.zip", "--witness", "w1.example.vkey", "--witness", "w2.example.vkey",
                    "--quorum", "2")
    assert ok.returncode == 0 and "cosigned by w1.example, w2.example" in ok.stdout, ok.stderr
    short = verify_pkg(work, "cos.zip", "--witness", "w1.example.vkey", "--witness", "stranger.example.vkey",
                       "--quorum", "2")
    assert short.returncode == 1 and "checkpoint.txt: 1 valid cosignature" in short.stderr, short.stderr


def test_export_package_needs_a_checkpoint_and_the_root_key(trial: Trial, keys: Keys, run: Cli,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "p.zip"
    r = run("export", "--format", "package", "--out", str(out), "--key", str(keys.path("admin")))
    assert r.exit_code == 3 and "checkpoint" in r.output and not out.exists()
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp")).exit_code == 0
    r = run("export", "--format", "package", "--out", str(out), "--key", str(keys.path("inv1")))
    assert r.exit_code == 1 and "root key" in r.output and not out.exists()
    r = run("export", "--format", "package", "--out", str(out))
    assert r.exit_code == 2 and "--key" in r.output
    assert run("export", "--format", "package", "--out", str(out), "--key", str(keys.path("admin"))).exit_code == 0
    assert PASSPHRASE and out.exists()
    runner = CliRunner()
    pub = str(keys.path("admin")) + ".pub"
    r = runner.invoke(cli, ["verify-package", str(out), "--public-key", pub], obj={}, catch_exceptions=False)
    assert r.exit_code == 0, r.output


# -- report --as-of: everything as it stood ---------------------------------------------------


def test_report_as_of_shows_nothing_recorded_later_and_judges_only_that_prefix(trial: Trial, keys: Keys, run: Cli,
                                                                            tmp_path: Path) -> None:
    s = keys.signers
    when = "2010-09-01T09:00:00+08:00"
    trial.append(Command("ParticipantRegistered", "S01-001", {"site": "S01", "sex": "M", "birth_year": 1960},
                         occurred_at=when), s["inv1"])
    trial.append(Command("ConsentSigned", "S01-001", {"icf_version": "1.0", "obtained_by": "inv1"},
                         occurred_at=when), s["coord1"])
    lab = trial.append(Command("LabResultRecorded", "S01-001", {"analyte": "FBG", "value": 6.2, "unit": "mmol/L"},
                               occurred_at=when), s["lab1"])
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp1")).exit_code == 0
    then_size = trial.store.count()
    as_of = lab.recorded_at
    trial.append(Command("DocumentRegistered", None, {"kind": "protocol", "version": "1.1", "sha256": "b" * 64,
                                                      "file_name": "protocol-1.1.pdf"}), s["admin"])
    trial.append(Command("ProtocolAmended", None, {"protocol_version": "1.1", "protocol_sha256": "b" * 64,
                                                   "icf_version": "2.0"}), s["admin"])
    trial.append(Command("SignerRegistered", None, {
        "user_id": "late1", "name": "Laura Late", "role": "monitor", "public_key": s["outsider"].public_b64,
        "valid_from": "2010-01-01T00:00:00+00:00"}), s["admin"])
    trial.append(Command("EntryCorrected", "S01-001", {"target_event_id": lab.event_id, "changes": {"value": 7.2}},
                         occurred_at=when, reason="transposed on entry"), s["lab1"])
    trial.append(Command("ProtocolDeviationRecorded", "S01-001", {
        "category": "procedure", "description": "sample haemolysed", "important": True}, occurred_at=when), s["mon1"])
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp2")).exit_code == 0
    r = run("report", "--out", str(tmp_path / "then.html"), "--as-of", as_of)
    assert r.exit_code == 0, r.output
    then = (tmp_path / "then.html").read_text()
    now_r = run("report", "--out", str(tmp_path / "now.html"))
    assert now_r.exit_code == 0, now_r.output
    now = (tmp_path / "now.html").read_text()
    for later in ("ICF 2.0", "protocol-1.1.pdf", "Laura Late", "transposed on entry", "sample haemolysed", "7.2"):
        assert later in now and later not in then, later
    assert "<td>FBG value</td><td class=\"mono\">6.2 → 7.2</td>" in now  # the item a correction changed
    assert f"authorisation of {then_size} events checks" in then and "VERIFIED" in then
    cp1, cp2 = ((tmp_path / n).read_text().splitlines()[2] for n in ("cp1", "cp2"))
    assert cp1 in then and cp2 not in then and cp2 in now  # the checkpoint that existed then
    assert f"size {then_size} — " in then and "matches the first" in then


def test_the_in_memory_log_gives_the_projections_rows(trial: Trial, keys: Keys) -> None:
    """Report, CSV and package read the verified log, not the tables: the two must agree wherever both exist."""
    from projections.log_source import load
    from projections.projector import Projections
    from tests.test_projections import full_history
    full_history(trial, keys)
    full_history(trial, keys, participant="S01-002")
    trial.append(Command("DocumentRegistered", None, {"kind": "protocol", "version": "1.1", "sha256": "a" * 64,
                                                      "file_name": "protocol-1.1.pdf"}), keys.signers["admin"])
    trial.append(Command("ProtocolAmended", None, {"protocol_version": "1.1", "protocol_sha256": "a" * 64,
                                                   "icf_version": "1.1"}), keys.signers["admin"])
    log = load(trial.store)
    proj = Projections(trial.store)
    proj.catch_up()
    assert log.report.ok and log.report.events == trial.store.count()
    assert list(log.audit()) == list(proj.audit())
    assert log.summary() == proj.summary()
    for pid in ("S01-001", "S01-002"):
        assert log.deviation_rows(pid) == proj.deviations(pid)
        assert {k: v for k, v in log.state(pid).items()} == proj.participant(pid)


def test_verify_package_needs_no_database(demo: Path, tmp_path: Path) -> None:
    for name in ("pkg.zip", f"{ADMIN_KEY}.pub"):
        (tmp_path / Path(name).name).write_bytes((demo / name).read_bytes())
    r = tl("verify-package", "pkg.zip", "--public-key", "admin-sponsor.key.pub", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin-sponsor.key.pub", "pkg.zip"]  # nothing created


def test_exports_of_a_tampered_ledger_are_refused_and_write_nothing(trial: Trial, keys: Keys, run: Cli,
                                                                    tmp_path: Path) -> None:
    from tests.conftest import as_owner
    from tests.test_projections import full_history
    full_history(trial, keys)
    assert run("checkpoint", "--key", str(keys.path("admin")), "--out", str(tmp_path / "cp")).exit_code == 0
    store = as_owner(trial.store)
    table = store.table("ledger_events")
    store.execute_raw(f"UPDATE {table} SET state = CAST(REPLACE(CAST(state AS TEXT), '6.1', '9.1') AS "
                      f"{'BYTEA' if store.postgres else 'BLOB'}) WHERE topic = 'LabResultRecorded'"
                      if not store.postgres else
                      f"UPDATE {table} SET state = convert_to(replace(convert_from(state, 'UTF8'), '6.1', '9.1'), "
                      "'UTF8') WHERE topic = 'LabResultRecorded'")
    for fmt in ("odm", "csv", "package"):
        out = tmp_path / f"out.{fmt}"
        r = run("export", "--format", fmt, "--out", str(out), "--key", str(keys.path("admin")))
        assert r.exit_code == 1 and "does not verify" in r.output, (fmt, r.output)
        assert not out.exists()
    r = run("report", "--out", str(tmp_path / "r.html"))
    assert r.exit_code == 1  # the page is written, says FAILED and shows nothing read from the ledger
    html = (tmp_path / "r.html").read_text()
    assert '<span class="fail">FAILED</span>' in html and ">VERIFIED<" not in html
    assert "hash mismatch" in html


def test_a_re_signed_manifest_does_not_cover_a_forged_log_line(demo: Path, tmp_path: Path) -> None:
    """The log itself is verified (chain, signatures, authorisation), not only hashed."""
    with zipfile.ZipFile(demo / "pkg.zip") as z:
        files = {n: z.read(n) for n in z.namelist()}
    lines = files["log.jsonl"].split(b"\n")
    row = json.loads(lines[40])
    row["signature"] = ("B" if row["signature"][0] != "B" else "C") + row["signature"][1:]  # still base64
    lines[40] = canonical_bytes(row)
    files["log.jsonl"] = b"\n".join(lines)
    signer = read_private(demo / ADMIN_KEY, "demo-passphrase")
    origin = notes.parse(files["checkpoint.txt"].decode())[0].origin
    files[MANIFEST] = sign_note(manifest_body({n: files[n] for n in FILES}), signer, origin).encode()
    rezip(demo / "pkg.zip", tmp_path / "bad.zip", files)
    r = verify_pkg(demo, str(tmp_path / "bad.zip"))
    assert r.returncode == 1 and r.stderr.startswith("error: log.jsonl: line 41 (event "), r.stderr
    assert "signature does not verify" in r.stderr


def test_verify_package_refuses_bad_witness_keys_and_an_impossible_quorum(demo: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.vkey").write_text("w1.example+00000000+AAAA\n")
    r = verify_pkg(demo, "pkg.zip", "--witness", str(tmp_path / "bad.vkey"))
    assert r.returncode == 3 and "--witness" in r.stderr and "vkey" in r.stderr, r.stderr
    good = tmp_path / "w.vkey"
    good.write_text(vkey("w.example", Ed25519PrivateKey.generate()))
    r = verify_pkg(demo, "pkg.zip", "--witness", str(good), "--quorum", "2")
    assert r.returncode == 2 and "--quorum" in r.stderr, r.stderr
    r = verify_pkg(demo, "pkg.zip", "--witness", str(good))  # default quorum: every witness named
    assert r.returncode == 1 and "checkpoint.txt: 0 valid cosignature" in r.stderr, r.stderr
