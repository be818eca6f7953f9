"""What a deviation rule is, and what it tells the book so one participant's fold stays linear.

The book (book.py) judges the record after every appended event. Running
every rule over the whole record each time costs O(n²) in a participant's
events; instead each rule says which facts can change its verdict:

* ``reads``: a new fact of one of these types can change what the rule
  found about earlier facts, so the rule judges the whole record again;
* ``each``: a new fact of any other type adds at most what this finds about
  that fact alone (the rule's verdict on every earlier fact stands);
* ``again``: the exception to ``each``: a new fact for which this is true
  makes the rule judge the whole record again after all.

A rule with neither ``each`` nor ``again`` is unchanged by facts outside
``reads``. Corrections, voids, amendments and anything out of log order
make the book judge every rule afresh, so these declarations only need to
be right for a plain new fact appended at the end. The property test
``tests/test_incremental_book.py`` holds each declaration to account: the
incremental book must equal judging every prefix from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from domain.rules.history import Deviation, Fact, History


@dataclass(frozen=True)
class Rule:
    judge: Callable[[History], Iterable[Deviation]]
    reads: frozenset[str] = frozenset()
    each: Callable[[History, Fact], Iterable[Deviation]] | None = None
    again: Callable[[History, Fact], bool] | None = None


def reads(*types: str | tuple[str, ...]) -> frozenset[str]:
    """The event types a rule reads, from names and tuples of names (PROCEDURES, TERMINAL...)."""
    return frozenset(t for group in types for t in ((group,) if isinstance(group, str) else group))


__all__ = ["Rule", "reads"]
