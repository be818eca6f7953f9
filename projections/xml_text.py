"""XML text exactly as ``xml.etree.ElementTree.tostring(..., encoding="unicode")`` writes it, without the tree.

The ODM export writes ~37 elements per signed event (3.7M at 100k events); building them as
``ET.Element`` objects and serialising them cost about as much as verifying the log (bench/PROFILE.md,
"ODM writer"). These helpers produce the same characters from strings: the escaping is ElementTree's
(``_escape_cdata`` for text: ``& < >``; ``_escape_attrib`` for attribute values: also ``"`` and CR, LF,
TAB as character references, so a value survives attribute-value normalisation), attributes in the
order given, an element with neither text nor children as ``<Tag ... />``, and the default namespace
declared first on a top-level element. Like ElementTree, nothing else is checked or replaced: characters
XML forbids pass through as they are. ``tests/test_odm_writer.py`` holds these to ElementTree's bytes on
hostile text, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def escape_text(text: str) -> str:
    """Character data as ElementTree escapes it (``&``, ``<``, ``>``; quotes and whitespace untouched)."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


def escape_attrib(text: str) -> str:
    """An attribute value as ElementTree escapes it: also ``"``, and CR, LF, TAB as ``&#13;`` ``&#10;`` ``&#09;``
    (a parser would otherwise normalise them to spaces, and the value read back would differ)."""
    text = escape_text(text)
    if '"' in text:
        text = text.replace('"', "&quot;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    if "\n" in text:
        text = text.replace("\n", "&#10;")
    if "\t" in text:
        text = text.replace("\t", "&#09;")
    return text


def attributes(attrs: Mapping[str, str | None]) -> str:
    """`` name="value"`` for each attribute that is not None, in order (names are the caller's constants)."""
    return "".join(f' {name}="{escape_attrib(value)}"' for name, value in attrs.items() if value is not None)


def element(tag: str, attrs: Mapping[str, str | None] | None = None, text: str | None = None,
            children: Iterable[str] = (), xmlns: str | None = None) -> str:
    """One element with its (already written) children; ``xmlns`` on a top-level element, as ElementTree
    declares a registered default namespace there and nowhere below."""
    head = "<" + tag + (f' xmlns="{escape_attrib(xmlns)}"' if xmlns is not None else "") \
        + (attributes(attrs) if attrs else "")
    body = "".join(children)
    if text or body:
        return head + ">" + (escape_text(text) if text else "") + body + "</" + tag + ">"
    return head + " />"
