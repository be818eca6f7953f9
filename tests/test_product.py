"""The investigational product is declared by the protocol, not by the generic event catalogue (issue 14)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from domain.events import json_schema, validate_payload
from domain.protocol import LEGACY_PRODUCT, bundled_protocol_path, load_protocol, parse_protocol
from domain.service import Trial
from ledger.envelope import Envelope
from ledger.errors import InputRefused
from tests.conftest import Cli, Keys, register

T0 = "2010-09-02T09:00:00+08:00"


def test_catalogue_holds_no_product_specific_field() -> None:
    properties = json_schema("InfusionAdministered")["properties"]
    assert not {"cell_source", "cell_count", "viability_pct"} & set(properties)
    assert "product" in properties and properties["route"]["type"] == "string"


def test_older_spelling_is_stored_in_product() -> None:
    data = validate_payload("InfusionAdministered", {
        "dose_number": 1, "route": "intravenous", "lot": "L", "identity_checked": True,
        "cell_source": "bm", "cell_count": 1e6, "viability_pct": 95})
    assert data["product"] == {"cell_source": "bm", "cell_count": 1e6, "viability_pct": 95}
    assert "cell_source" not in data


def test_bundled_protocol_declares_the_cell_product() -> None:
    product = load_protocol(bundled_protocol_path()).investigational_product()
    assert [f.id for f in product.fields] == ["cell_source", "cell_count", "viability_pct"]
    assert product.describe({"cell_count": 6.4e7, "viability_pct": 95.1}) == "6.4e+07 cells, viability 95.1%"


def test_a_protocol_without_a_product_keeps_its_document_and_hash() -> None:
    document = load_protocol(bundled_protocol_path()).document()
    del document["product"]
    old = parse_protocol(document)
    assert "product" not in old.document()
    assert old.investigational_product() == LEGACY_PRODUCT
    assert parse_protocol(old.document()).sha256() == old.sha256()


@pytest.mark.parametrize(("change", "message"), [
    ({"display": "{purity}"}, r"display: \{purity\} is not a declared field"),
    ({"routes": ["oral"]}, r"doses: dose 1's route 'intra-arterial-pancreatic' is not a product route \(oral\)"),
])
def test_inconsistent_product_is_refused(change: dict[str, object], message: str) -> None:
    document = load_protocol(bundled_protocol_path()).document()
    document["product"].update(change)
    with pytest.raises(InputRefused, match=message):
        parse_protocol(document)


@pytest.mark.parametrize(("product", "needle"), [
    ({"cell_source": "bm", "cell_count": 0, "viability_pct": 95}, "data.product.cell_count: must be greater than 0"),
    ({"cell_source": "bm", "viability_pct": 95}, "data.product.cell_count: required by the protocol"),
    ({"cell_source": "bm", "cell_count": 1e6, "viability_pct": 95, "purity": 1},
     "data.product.purity: not a field of autologous bone-marrow MSC"),
    ({"cell_source": 7, "cell_count": 1e6, "viability_pct": 95}, "data.product.cell_source"),
])
def test_product_values_are_checked_against_the_protocol(trial: Trial, keys: Keys, run: Cli,
                                                         product: dict[str, object], needle: str) -> None:
    register(trial, keys, "S01-001")
    r = run("append", "InfusionAdministered", "--participant", "S01-001", "--occurred-at", T0, "--data", json.dumps(
        {"dose_number": 1, "route": "intravenous", "lot": "L", "identity_checked": True, "product": product}),
        "--key", str(keys.path("pharm1")))
    assert r.exit_code == 3 and needle in r.stderr, r.output
    assert r.stderr.count("\n") == 1


def test_an_event_written_before_products_were_declared_still_verifies_and_shows(trial: Trial, keys: Keys,
                                                                                 run: Cli) -> None:
    """Old events hold the cell fields at the top level; the hash covers the stored bytes, reading still works."""
    register(trial, keys, "S01-001")
    signer = keys.signers["pharm1"]
    old = Envelope(event_id=str(uuid.uuid4()), type="InfusionAdministered", stream="S01-001",
                   position=trial.store.stream_length("S01-001") + 1, occurred_at=T0,
                   recorded_at=datetime.now(UTC).isoformat(), author="pharm1", key_id=signer.key_id,
                   meaning="authorship", reason=None,
                   data={"dose_number": 1, "route": "intra-arterial-pancreatic", "lot": "OLD-1",
                         "cell_source": "autologous bone marrow", "cell_count": 6.4e7, "viability_pct": 95.1,
                         "identity_checked": True})
    trial.store.append([old], signer)
    assert run("verify").exit_code == 0
    shown = run("show", "S01-001")
    assert "dose 1: day 0 intra-arterial-pancreatic lot OLD-1 6.4e+07 cells, viability 95.1%" in shown.stdout
    dose = run.json("show", "S01-001")["doses"][0]  # type: ignore[index]
    assert dose["product"] == {"cell_source": "autologous bone marrow", "cell_count": 6.4e7, "viability_pct": 95.1}
