"""Deviations that staff or monitors recorded explicitly."""

from __future__ import annotations

from collections.abc import Iterator

from domain.rules.history import Deviation, History
from domain.rules.rule import Rule, reads


def recorded_deviations(h: History) -> Iterator[Deviation]:
    for f in h.of("ProtocolDeviationRecorded"):
        yield h.deviation("recorded_deviation", f.data.get("important") is True, [f],
                          f"{f.data.get('category')}: {f.data.get('description')}")


RECORDED_DEVIATIONS = Rule(recorded_deviations, reads("ProtocolDeviationRecorded"))
