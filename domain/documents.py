"""Controlled documents (SPEC §10, EMA A5.3.2): ICFs and protocols bound by the hash of their file.

A ``DocumentRegistered`` study event records the SHA-256 of a document's
real bytes, its kind and version. Folding the study stream gives the
registry below; with it a consent names exactly which form was signed
(``ConsentSigned.document_sha256``), an amendment names exactly which
protocol it brings in, and anyone holding a file can ask which registered
document it is. Ledgers that register nothing keep working as before.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputRefused

from domain.protocol import Protocol, parse_protocol

KINDS = ("icf", "protocol")


@dataclass(frozen=True)
class Document:
    kind: str
    version: str
    sha256: str
    file_name: str
    size: int | None
    rules_sha256: str | None
    event_id: str
    author: str
    registered_at: str


def file_sha256(path: Path) -> tuple[str, int]:
    """The SHA-256 (hex) and size of a file's bytes, read in chunks."""
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise InputRefused(f"FILE {path}: {e.strerror or e}") from None
    return digest.hexdigest(), size


class DocumentRegistry:
    """The registered documents, folded from the study stream in log order."""

    def __init__(self) -> None:
        self.documents: list[Document] = []

    def observe(self, env: Envelope) -> None:
        if env.type != "DocumentRegistered":
            return
        data = env.data
        self.documents.append(Document(
            kind=str(data["kind"]), version=str(data["version"]), sha256=str(data["sha256"]),
            file_name=str(data["file_name"]), size=data.get("size"),
            rules_sha256=data.get("rules_sha256"), event_id=env.event_id,
            author=env.author, registered_at=env.recorded_at,
        ))

    def by_hash(self, sha256: str) -> Document | None:
        return next((d for d in self.documents if d.sha256 == sha256), None)

    def find(self, kind: str, version: str) -> Document | None:
        return next((d for d in self.documents if d.kind == kind and d.version == version), None)

    def sorted(self) -> list[Document]:
        """By kind, then version as people read it (1.9 before 1.10), then registration."""
        return sorted(self.documents, key=lambda d: (d.kind, _version_key(d.version), d.registered_at))

    # -- refusals (SPEC §4, §10) ---------------------------------------------------------------

    def check_registration(self, payload: dict[str, Any]) -> None:
        """One document per kind and version, and one registration per file."""
        same = self.by_hash(payload["sha256"])
        if same is not None:
            raise InputRefused(f"data.sha256: this file is already registered as {same.kind} "
                               f"version {same.version} ({same.file_name})")
        clash = self.find(payload["kind"], payload["version"])
        if clash is not None:
            raise InputRefused(f"data.version: {payload['kind']} version {payload['version']} is already "
                               f"registered with another hash ({clash.sha256[:12]}…); a new document needs a "
                               "new version")

    def check_consent(self, payload: dict[str, Any]) -> None:
        """A consent on a registered ICF version names that very document by hash."""
        icf = self.find("icf", payload["icf_version"])
        if icf is None:
            return  # nothing registered for that version: as before documents existed
        given = payload.get("document_sha256")
        if given is None:
            raise InputRefused(f"data.document_sha256: ICF version {icf.version} is registered "
                               f"({icf.file_name}, sha256 {icf.sha256}); the consent must name its hash")
        if given != icf.sha256:
            raise InputRefused(f"data.document_sha256: {given} is not the registered ICF version {icf.version} "
                               f"({icf.file_name}, sha256 {icf.sha256})")

    def check_amendment(self, payload: dict[str, Any]) -> None:
        """An amendment names a registered protocol document of its own version."""
        doc = self.by_hash(payload["protocol_sha256"])
        if doc is None or doc.kind != "protocol":
            raise InputRefused(f"data.protocol_sha256: {payload['protocol_sha256']} is not a registered protocol "
                               "document (register it with `trial-ledger document register --kind protocol`, or "
                               "use `trial-ledger amend --protocol FILE`)")
        if doc.version != payload["protocol_version"]:
            raise InputRefused(f"data.protocol_version: {payload['protocol_version']} is not the version of the "
                               f"registered document {doc.file_name} ({doc.version})")
        if payload.get("protocol") is not None:
            rules = parse_protocol(payload["protocol"], source="data.protocol").sha256()
            if doc.rules_sha256 is None:
                raise InputRefused(f"data.protocol: the registered document {doc.file_name} holds no rules the "
                                   "ledger can read; embed rules only from a TOML or JSON protocol file")
            if rules != doc.rules_sha256:
                raise InputRefused(f"data.protocol: the embedded rules are not those of the registered document "
                                   f"{doc.file_name}")


def consent_document_status(registry: DocumentRegistry, icf_version: Any, sha256: Any) -> str:
    """How a consent's document hash stands against the registry, in words for the report."""
    if not sha256:
        return "no document hash" if registry.find("icf", str(icf_version)) is None else \
            "no document hash (an ICF of this version is registered now)"
    doc = registry.by_hash(str(sha256))
    if doc is None:
        return "MISMATCH: no registered document has this hash"
    if doc.kind != "icf" or doc.version != str(icf_version):
        return f"MISMATCH: this is {doc.kind} version {doc.version}"
    return f"matches {doc.file_name}"


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.replace("-", ".").split("."))


# -- commands: what `document register` and `amend` append ------------------------------------


def registration_data(path: Path, kind: str, version: str) -> dict[str, Any]:
    """The ``DocumentRegistered`` payload for a file, hashed from its bytes.

    A protocol written as TOML or JSON is also read, so its rules' hash is
    recorded and its own version must be the one registered.
    """
    if kind not in KINDS:
        raise InputRefused(f"--kind: must be one of {', '.join(KINDS)}")
    data: dict[str, Any] = {"kind": kind, "version": version, "file_name": path.name[:200]}
    if kind == "protocol" and path.suffix in (".toml", ".json"):
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise InputRefused(f"FILE {path}: {e.strerror or e}") from None
        protocol = parse_protocol_bytes(raw, path.name)
        if protocol.version != version:
            raise InputRefused(f"--version: {path.name} is protocol version {protocol.version}, not {version}")
        return {**data, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw),
                "rules_sha256": protocol.sha256()}
    sha256, size = file_sha256(path)
    return {**data, "sha256": sha256, "size": size}


def parse_protocol_bytes(raw: bytes, name: str) -> Protocol:
    """The protocol a TOML or JSON file's bytes hold (JSON when the name ends in .json)."""
    try:
        text = raw.decode("utf-8")
        document = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if name.endswith(".json") else "TOML"
        raise InputRefused(f"{name}: not valid {kind}: {e}") from None
    if not isinstance(document, dict):
        raise InputRefused(f"{name}: must hold a table/object")
    return parse_protocol(document, source=name)
