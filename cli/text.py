"""What a user typed, shown on one line: errors and logs quote input, and input may hold anything."""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\n``, ``\\x1e``, ``\\u2028``...).

    An error names the field or line that was refused, and that name came from the user: a newline,
    a record separator or a line separator in it must never split the one-line error (SPEC §6), nor
    forge a second entry in the security log.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
