"""A protocol amendment bound to its document (SPEC §10): `trial-ledger amend --protocol FILE`.

The new protocol file is read once: its bytes give the SHA-256 that is
registered as the protocol document and named by ``ProtocolAmended``, and
the same bytes, parsed, give the rules the amendment embeds. So the hash
and the rules cannot come from two different files. The registration and
the amendment are appended together, in one transaction.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

from ledger.errors import InputRefused

from domain.documents import DocumentRegistry, parse_protocol_bytes
from domain.service import Command


def read_protocol_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputRefused(f"--protocol {path}: {e.strerror or e}") from None


def amendment_commands(raw: bytes, file_name: str, documents: DocumentRegistry, *, icf_version: str | None,
                       reconsent_required: bool, effective_at: datetime | None) -> list[Command]:
    """Register the file's bytes as a protocol document (unless they already are) and amend to them."""
    protocol = parse_protocol_bytes(raw, file_name)
    if icf_version is not None and icf_version != protocol.icf_version:
        raise InputRefused(f"--icf-version: {icf_version} is not the ICF version the protocol file names "
                           f"({protocol.icf_version})")
    sha256 = hashlib.sha256(raw).hexdigest()
    commands = []
    known = documents.by_hash(sha256)
    if known is None:
        commands.append(Command("DocumentRegistered", None, {
            "kind": "protocol", "version": protocol.version, "sha256": sha256, "file_name": file_name[:200],
            "size": len(raw), "rules_sha256": protocol.sha256()}))
    elif (known.kind, known.version) != ("protocol", protocol.version):
        raise InputRefused(f"--protocol {file_name}: this file is registered as {known.kind} version {known.version}")
    commands.append(Command("ProtocolAmended", None, {
        "protocol_version": protocol.version, "protocol_sha256": sha256, "icf_version": protocol.icf_version,
        "protocol": protocol.document(), "reconsent_required": reconsent_required},
        occurred_at=effective_at.isoformat() if effective_at else None))
    return commands
