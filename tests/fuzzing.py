"""How hard the fuzz tests push: a small sample in `make test`, the full volume in `make fuzz`.

`make fuzz` sets TRIAL_LEDGER_FUZZ=1; each fuzz test then runs its full count and
records how many cases it actually tried, which the session summary prints (and
docs/reliability.md quotes). The same test code runs in both modes, so the sample
in `make test` exercises exactly what the long run does.
"""

from __future__ import annotations

import os
from collections import Counter

FULL = os.environ.get("TRIAL_LEDGER_FUZZ", "").lower() in ("1", "true", "yes")
TRIED: Counter[str] = Counter()


def scaled(sample: int, full: int) -> int:
    """``full`` cases under `make fuzz`, ``sample`` otherwise."""
    return full if FULL else sample


def tried(name: str) -> None:
    TRIED[name] += 1
