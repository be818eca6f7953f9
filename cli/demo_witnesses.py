"""The demo's witnesses (SPEC §9): two C2SP tlog-witnesses on 127.0.0.1, registered, cosigning a checkpoint.

They run in this process on ephemeral ports for the length of the demo and are shut down after it;
their state files stay beside the demo's keys so `witness evidence --state` can be tried afterwards.
Witness keys derive from the seed, like every other demo key.
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.service import Command, Trial
from ledger import cosignature
from ledger.keys import Signer
from ledger.witness.app import running
from ledger.witness.core import Witness
from ledger.witness.state import WitnessState

from cli.proofs import checkpoint_origin, sign_checkpoint

NAMES = ("ethics-committee.example/witness", "cro.example/witness")


def _key(seed: int, name: str) -> Signer:
    return Signer(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"demo-witness/{seed}/{name}".encode())
                                                       .digest()))


def run_witnesses(trial: Trial, admin: Signer, seed: int, state_dir: Path) -> list[str]:
    """Start both witnesses, register them with quorum 2, checkpoint, stop them; return the lines to print."""
    origin = checkpoint_origin(trial.store)
    assert origin is not None
    lines = []
    with ExitStack() as stack:
        for name in NAMES:
            state_path = state_dir / f"{name.split('.')[0]}-witness.db"
            state_path.unlink(missing_ok=True)
            state = WitnessState(state_path)
            stack.callback(state.close)
            signer = _key(seed, name)
            witness = Witness(name, signer, state, {origin: [admin.public_raw]})
            url = stack.enter_context(running(witness))
            vkey = str(cosignature.vkey_for(name, signer))
            trial.append(Command("WitnessAdded", None, {"name": name, "url": url, "vkey": vkey}), admin)
            lines.append(f"witness {name} at {url} (state {state_path})\n  vkey {vkey}")
        trial.append(Command("WitnessPolicySet", None, {"quorum": 2}), admin)
        _size, _root, note, collection = sign_checkpoint(trial.store, admin)
    # The witnesses live only as long as the demo: later checkpoints of this ledger must not need them.
    trial.append(Command("WitnessPolicySet", None, {"quorum": 0}), admin)
    assert collection is not None
    for o in collection.outcomes:
        lines.append(f"  {o.name}: " + ("cosigned" if o.signature else f"REFUSED ({o.refusal})"))
    verdict = "quorum met" if collection.met else "QUORUM NOT MET"
    lines.append(f"cosigned checkpoint ({collection.cosigned} of 2, {verdict}); witnesses now shut down and the "
                 f"quorum set back to 0, so later checkpoints work without them:\n{note}")
    return lines
