"""The verifier reuses an authorisation decision (issue 21); these show a reused grant never outlives its facts.

``SignerRegistry.authorise`` remembers a grant per (key, author, type) until
a study event changes the registry. Every rule must still apply to every
event: a revocation, a role taken away by an amendment and ``valid_from``
each refuse the next event even though the same grant was given before.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from domain.signers import STUDY_STREAM, SignerRegistry
from domain.service import Trial
from ledger.envelope import Envelope
from ledger.keys import key_id
from ledger.verify import Unauthorised

from tests.conftest import Keys


def _registry(trial: Trial) -> SignerRegistry:
    return SignerRegistry.replay(trial.store.stream(STUDY_STREAM))


def _env(keys: Keys, user: str, type_name: str, *, stream: str = "S01-001", position: int = 1,
         recorded_at: str = "2020-01-01T00:00:00+00:00", data: dict[str, Any] | None = None,
         author: str | None = None) -> Envelope:
    return Envelope(event_id=str(uuid.uuid4()), type=type_name, stream=stream, position=position,
                    occurred_at=recorded_at, recorded_at=recorded_at, author=author or user,
                    key_id=key_id(keys.signers[user].public_raw), meaning="authorship", data=data or {})


def test_revocation_refuses_the_next_event_after_a_granted_one(trial: Trial, keys: Keys) -> None:
    registry = _registry(trial)
    lab = _env(keys, "inv1", "LabResultRecorded")
    assert registry.authorise(lab) == keys.signers["inv1"].public_raw
    assert registry.authorise(lab) == keys.signers["inv1"].public_raw  # the remembered grant
    registry.observe(_env(keys, "admin", "SignerRevoked", stream=STUDY_STREAM, position=99,
                          data={"user_id": "inv1"}))
    with pytest.raises(Unauthorised, match="signer inv1 was revoked"):
        registry.authorise(lab)


def test_an_amendment_that_takes_a_type_away_refuses_the_next_event(trial: Trial, keys: Keys) -> None:
    registry = _registry(trial)
    lab = _env(keys, "lab1", "LabResultRecorded")
    registry.authorise(lab)
    assert registry.protocol is not None
    roles = registry.protocol.model_dump(mode="json", by_alias=True)
    roles["roles"]["lab"]["may_sign"] = []
    registry.observe(_env(keys, "admin", "ProtocolAmended", stream=STUDY_STREAM, position=99, data={
        "protocol": roles, "protocol_sha256": "0" * 64, "icf_version": registry.icf_version}))
    with pytest.raises(Unauthorised, match="may not sign LabResultRecorded"):
        registry.authorise(lab)


def test_valid_from_and_a_bad_time_are_checked_on_every_event(trial: Trial, keys: Keys) -> None:
    registry = _registry(trial)
    registry.authorise(_env(keys, "inv1", "LabResultRecorded"))
    with pytest.raises(Unauthorised, match="not valid before 2010-01-01"):
        registry.authorise(_env(keys, "inv1", "LabResultRecorded", recorded_at="2009-12-31T23:59:59+00:00"))
    with pytest.raises(Unauthorised, match="recorded_at is not a valid time"):
        registry.authorise(_env(keys, "inv1", "LabResultRecorded", recorded_at="2020-01-01T00:00:00"))
    with pytest.raises(Unauthorised, match="recorded_at is not a valid time"):
        registry.authorise(_env(keys, "inv1", "LabResultRecorded", recorded_at="yesterday"))


def test_a_grant_is_per_author_and_type(trial: Trial, keys: Keys) -> None:
    registry = _registry(trial)
    registry.authorise(_env(keys, "inv1", "LabResultRecorded"))
    with pytest.raises(Unauthorised, match="belongs to inv1, not to lab1"):
        registry.authorise(_env(keys, "inv1", "LabResultRecorded", author="lab1"))
    with pytest.raises(Unauthorised, match="may not sign"):
        registry.authorise(_env(keys, "lab1", "InfusionAdministered"))
