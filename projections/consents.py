"""Consents and controlled documents for the inspection report (SPEC §10, EMA A5.3.2).

Per participant, each consent with the hash of the form it names and
whether that hash is a registered ICF of its version; for the study, the
registered documents by kind and version. Data only: the template renders it.
"""

from __future__ import annotations

from typing import Any

from domain.documents import DocumentRegistry, consent_document_status


def consent_rows(state: dict[str, Any], documents: DocumentRegistry) -> list[dict[str, Any]]:
    rows = []
    for event_id, entry in state.get("entries", {}).items():
        if entry.get("type") != "ConsentSigned":
            continue
        data = entry.get("data") or {}
        status = consent_document_status(documents, data.get("icf_version"), data.get("document_sha256"))
        rows.append({"event_id": event_id, "signed_at": entry.get("occurred_at"), "voided": entry.get("voided"),
                     "icf_version": data.get("icf_version"), "obtained_by": data.get("obtained_by"),
                     "witness": data.get("witness"), "document_sha256": data.get("document_sha256"),
                     "document": status, "matches": status.startswith("matches")})
    return sorted(rows, key=lambda r: str(r["signed_at"]))


def document_rows(documents: DocumentRegistry) -> list[dict[str, Any]]:
    return [{"kind": d.kind, "version": d.version, "sha256": d.sha256, "file_name": d.file_name,
             "registered_by": d.author, "registered_at": d.registered_at} for d in documents.sorted()]
