"""Who may correct or void whose entry, and which signature meanings a role may use (SPEC §4, 21 CFR 11.10(g), 11.50).

Both answers come from the protocol file: ``roles.<role>.supervises``,
``editors`` (the only roles that may touch an entry type at all) and
``roles.<role>.meanings``. A protocol file that declares no supervision
keeps the older behaviour: any role that may sign a correction may make it,
subject to ``own_entries_only``.
"""

from __future__ import annotations

from domain.protocol import Protocol
from ledger.errors import InputRefused


def check_edit(protocol: Protocol, *, verb: str, editor: str, editor_role: str | None, author: str,
               author_role: str | None, target_type: str) -> None:
    """Refuse a correction or void of ``author``'s ``target_type`` entry by ``editor`` unless the protocol allows it."""
    editors = protocol.editors.get(target_type)
    if editors is not None and editor_role not in editors:
        raise InputRefused(f"data.target_event_id: only {', '.join(editors)} may {verb} a {target_type} "
                           f"(you are {editor_role})")
    if not protocol.supervision or editor == author:
        return
    spec = protocol.roles.get(editor_role or "")
    if spec is None or author_role not in spec.supervises:
        raise InputRefused(f"data.target_event_id: {editor} ({editor_role}) may not {verb} an entry of {author} "
                           f"({author_role}): only its author or a supervising role may")


def check_meaning(protocol: Protocol, role: str | None, meaning: str) -> None:
    """Refuse a signature meaning the signer's role may not use (e.g. approval by a coordinator)."""
    spec = protocol.roles.get(role or "")
    if spec is not None and spec.meanings is not None and meaning not in spec.meanings:
        raise InputRefused(f"meaning: role {role} may not sign with meaning {meaning!r} "
                           f"(allowed: {', '.join(spec.meanings)})")


def default_meaning(protocol: Protocol, role: str | None, type_default: str) -> str:
    """The type's default meaning, or authorship when the role may not use it (a coordinator's review note)."""
    spec = protocol.roles.get(role or "")
    if spec is not None and spec.meanings is not None and type_default not in spec.meanings:
        return "authorship"
    return type_default
