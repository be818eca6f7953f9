"""A protocol amendment bound to its document (SPEC §10): `trial-ledger amend --protocol FILE`.

The new protocol file is read once: its bytes give the SHA-256 that is
registered as the protocol document and named by ``ProtocolAmended``, and
the same bytes, parsed, give the rules the amendment embeds. So the hash
and the rules cannot come from two different files. The registration and
the amendment are appended together, in one transaction.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from datetime import datetime
from pathlib import Path

from ledger.errors import InputRefused

from domain.documents import DocumentRegistry
from domain.protocol import Protocol, parse_protocol
from domain.service import Command


def read_protocol_file(path: Path) -> tuple[bytes, Protocol]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputRefused(f"--protocol {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
        document = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputRefused(f"--protocol {path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {e}") from None
    if not isinstance(document, dict):
        raise InputRefused(f"--protocol {path}: must hold a table/object")
    return raw, parse_protocol(document, source=str(path))


def amendment_commands(path: Path, documents: DocumentRegistry, *, icf_version: str | None,
                       reconsent_required: bool, effective_at: datetime | None) -> list[Command]:
    """Register the file as a protocol document (unless it already is) and amend to it."""
    raw, protocol = read_protocol_file(path)
    if icf_version is not None and icf_version != protocol.icf_version:
        raise InputRefused(f"--icf-version: {icf_version} is not the ICF version the protocol file names "
                           f"({protocol.icf_version})")
    sha256 = hashlib.sha256(raw).hexdigest()
    occurred = effective_at.isoformat() if effective_at else None
    commands = []
    known = documents.by_hash(sha256)
    if known is None:
        commands.append(Command("DocumentRegistered", None, {
            "kind": "protocol", "version": protocol.version, "sha256": sha256, "file_name": path.name[:200],
            "size": len(raw)}))
    elif (known.kind, known.version) != ("protocol", protocol.version):
        raise InputRefused(f"--protocol {path}: this file is registered as {known.kind} version {known.version}")
    commands.append(Command("ProtocolAmended", None, {
        "protocol_version": protocol.version, "protocol_sha256": sha256, "icf_version": protocol.icf_version,
        "protocol": protocol.document(), "reconsent_required": reconsent_required}, occurred_at=occurred))
    return commands
