"""The witness set the log asks for cosignatures, folded from signed study events (SPEC §9).

``WitnessAdded`` registers a witness by name, URL and verifier key (a
cosignature/v1 vkey, type 0x04); ``WitnessRemoved`` drops it;
``WitnessPolicySet`` sets how many cosignatures a checkpoint needs. With
no policy event the quorum is every registered witness. This is the
*log's* policy, used when it collects cosignatures; an inspector brings
their own keys and quorum to ``verify`` and never takes them from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ledger.envelope import Envelope
from ledger.errors import InputRefused
from ledger.note import COSIGNATURE_V1, NoteError, Vkey, parse_vkey

TYPES = ("WitnessAdded", "WitnessRemoved", "WitnessPolicySet")


@dataclass(frozen=True)
class RegisteredWitness:
    name: str
    url: str
    vkey: Vkey
    added_at: str


class WitnessSet:
    def __init__(self) -> None:
        self.witnesses: dict[str, RegisteredWitness] = {}
        self.policy_quorum: int | None = None

    @classmethod
    def replay(cls, envelopes: Iterable[Envelope]) -> WitnessSet:
        ws = cls()
        for env in envelopes:
            ws.observe(env)
        return ws

    @property
    def quorum(self) -> int:
        return len(self.witnesses) if self.policy_quorum is None else self.policy_quorum

    def observe(self, env: Envelope) -> None:
        try:
            if env.type == "WitnessAdded":
                vkey = parse_vkey(env.data["vkey"])
                self.witnesses[env.data["name"]] = RegisteredWitness(env.data["name"], env.data["url"], vkey,
                                                                     env.recorded_at)
            elif env.type == "WitnessRemoved":
                self.witnesses.pop(env.data["name"], None)
            elif env.type == "WitnessPolicySet":
                self.policy_quorum = int(env.data["quorum"])
        except (KeyError, TypeError, ValueError):
            pass  # a malformed payload cannot be appended; verify reports a forged one elsewhere

    def check(self, type_name: str, payload: dict[str, Any]) -> None:
        """Refuse a witness event that would make the set inconsistent (one line naming the field)."""
        if type_name == "WitnessAdded":
            try:
                vkey = parse_vkey(payload["vkey"])
            except NoteError as e:
                raise InputRefused(f"data.vkey: {e}") from None
            if vkey.sig_type != COSIGNATURE_V1:
                raise InputRefused("data.vkey: a witness key must be a cosignature/v1 key (type 0x04)")
            if vkey.name != payload["name"]:
                raise InputRefused(f"data.name: {payload['name']!r} differs from the vkey's name {vkey.name!r}")
            if payload["name"] in self.witnesses:
                raise InputRefused(f"data.name: witness {payload['name']} is already registered")
            if any(w.vkey.public_raw == vkey.public_raw for w in self.witnesses.values()):
                raise InputRefused("data.vkey: this key is already registered to another witness")
        elif type_name == "WitnessRemoved" and payload["name"] not in self.witnesses:
            raise InputRefused(f"data.name: {payload['name']} is not a registered witness")
