"""Cleaning of human-written text before it becomes part of a signed event.

Residents type on old phones in five languages, and some input is hostile
(see ``shared/data/reports.jsonl``). Cleaning is deterministic and idempotent,
so a node and central that clean the same text get the same bytes:

- Unicode NFC;
- control characters removed (tab becomes a space; line and paragraph
  separators become a newline; newlines kept only where ``multiline``);
- invisible format characters removed (zero-width spaces, byte-order marks,
  bidirectional overrides and isolates, which can disguise text), except the
  zero-width joiner between two emoji, which builds one emoji from several;
- at most two combining marks on one base character ("Zalgo" text);
- runs of spaces collapsed, more than one empty line collapsed, ends trimmed.

HTML is *not* touched here: text is data, and the pages escape it on output.
"""

from __future__ import annotations

import re
import unicodedata

_ZWJ = "\u200d"
_MAX_MARKS = 2
_SPACES = re.compile(r"[ \u00a0\u3000]{2,}")
_EMPTY_LINES = re.compile(r"\n[ ]*(\n[ ]*){2,}")


def _is_emoji(ch: str) -> bool:
    return unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF


def _already_clean(text: str, multiline: bool) -> bool:
    """True for plain ASCII text that cleaning would leave as it is (most text)."""
    if not text.isascii() or text != text.strip() or "  " in text:
        return False
    if text.isprintable():
        return True
    if not multiline:
        return False
    return (text.replace("\n", "").isprintable() and "\n\n\n" not in text
            and " \n" not in text and "\n " not in text)


def clean_text(text: str, *, multiline: bool = True) -> str:
    """Return ``text`` cleaned as described in the module docstring.

    >>> clean_text("hang\\u200bjongeren\\x00  bij\\u202e de speeltuin\\n\\n\\n\\nnu ")
    'hangjongeren bij de speeltuin\\n\\nnu'
    """
    if _already_clean(text, multiline):
        return text
    return _clean_slow(text, multiline=multiline)


def _clean_slow(text: str, *, multiline: bool = True) -> str:
    text = unicodedata.normalize("NFC", text)
    out: list[str] = []
    marks = 0
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch in "\n\u2028\u2029\r":
            if ch == "\r" and text[i + 1 : i + 2] == "\n":
                continue
            out.append("\n" if multiline else " ")
            marks = 0
            continue
        if ch == "\t":
            out.append(" ")
            continue
        if cat == "Cc" or cat in ("Cs", "Co", "Cn"):
            continue
        if cat == "Cf":
            prev = out[-1] if out else ""
            nxt = text[i + 1 : i + 2]
            if ch == _ZWJ and prev and nxt and _is_emoji(prev) and _is_emoji(nxt):
                out.append(ch)
            continue
        if cat in ("Mn", "Me"):
            marks += 1
            if marks > _MAX_MARKS:
                continue
        else:
            marks = 0
        out.append(ch)
    cleaned = "".join(out)
    cleaned = "\n".join(line.strip() for line in cleaned.split("\n"))
    cleaned = _SPACES.sub(" ", cleaned)
    cleaned = _EMPTY_LINES.sub("\n\n", cleaned)
    return unicodedata.normalize("NFC", cleaned.strip())
