"""Typed errors that carry a one-line, user-facing message.

The CLI maps each class to an exit code (SPEC §6), so the library never
decides how a failure is shown, and the CLI never prints a traceback.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user."""

    exit_code = 3


class UsageProblem(LedgerError):
    """A bad option value found after parsing, e.g. a --db with no ledger (exit 2)."""

    exit_code = 2


class InputRefused(LedgerError):
    """Bad input, a failed authorisation or a refusal rule: nothing was written (exit 3)."""

    exit_code = 3


class KeyFileError(InputRefused):
    """A key file that cannot be read, or a wrong passphrase."""


class StoreBusy(LedgerError):
    """The write lock or optimistic retries ran out; nothing was written.

    Exit 4 is outside SPEC §6's input codes on purpose: the input was fine,
    the store was not available, and the user may simply try again.
    """

    exit_code = 4


class StoreError(LedgerError):
    """The database cannot be opened or is not a ledger (exit 4)."""

    exit_code = 4


class IntegrityFailure(LedgerError):
    """The log does not verify, so nothing read from it is shown (exit 1, SPEC §5.4, §6)."""

    exit_code = 1


class StoreConflict(StoreBusy):
    """The database refused a write for a uniqueness or integrity rule; nothing was written.

    The storage port raises it (never the database library's own exception
    classes), e.g. when another process recorded a projection position first.
    """


class PositionTaken(StoreConflict):
    """Another writer took the stream position (or the event id) first; nothing was written.

    The domain re-reads and retries; if it escapes, the user may simply try again.
    """
