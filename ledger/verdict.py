"""The one verdict: is a verify report OK? Used by `verify`, the HTML report and the demo.

A report alone is not enough: an empty ledger verifies vacuously, and a ledger
signed by a root key other than the one the inspector expects verifies under
the wrong authority. Checkpoint results arrive as findings in the report
(:func:`ledger.verify_log.verify_log` adds them), so they count here too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.verify import Report


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    reason: str | None
    """The first failure as one line (None when ok)."""
    more: int = 0
    """How many further findings there are beyond the first."""

    @property
    def headline(self) -> str:
        return "VERIFIED" if self.ok else "FAILED"


def judge(report: Report, *, expect_root: str | None = None, since_checkpoint: bool = False) -> Verdict:
    """OK only if nothing was found, the root key is the expected one, and there was something to check.

    ``since_checkpoint``: only the events after a checkpoint were checked, so
    none is not a failure (the checkpoint vouches for the rest).
    """
    if expect_root is not None and report.root_fingerprint != expect_root.lower():
        return Verdict(False, f"root key {report.root_fingerprint} is not the expected {expect_root}")
    findings = report.sorted()
    if findings:
        return Verdict(False, findings[0].line(), max(0, report.finding_count - 1))
    if report.finding_count:
        return Verdict(False, f"{report.finding_count} findings", report.finding_count - 1)
    if report.events == 0 and not since_checkpoint:
        return Verdict(False, "the ledger is empty")
    return Verdict(True, None)
