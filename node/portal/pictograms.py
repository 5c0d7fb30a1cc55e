"""Inline SVG pictograms for the portal: simple bold shapes, one colour.

Pictures carry the meaning for residents who read with difficulty, so every
category has one, and the small marks next to an alert (time, place,
verified or not, 112 called) have one too. They are inline SVG: no file to
fetch, no font, they take the text colour (``currentColor``) and scale with
CSS. Drawn on a 64 x 64 grid; each stays well under 600 bytes.

>>> str(pictogram("check", "Verified"))[:60]
'<svg class="pg pg-check" viewBox="0 0 64 64" width="24" heig'
"""

from __future__ import annotations

from typing import Final

from markupsafe import Markup, escape

#: The drawings: SVG elements inside ``<svg viewBox="0 0 64 64">``; filled
#: shapes take ``fill`` from the ``<svg>``, lines say ``fill="none"``.
_SHAPES: Final[dict[str, Markup]] = {
    # Loudspeaker with two sound waves.
    "nuisance": Markup(
        '<path d="M6 24h12l18-14v44L18 40H6z"/>'
        '<path d="M44 24a11 11 0 0 1 0 16M50 15a22 22 0 0 1 0 34" fill="none" '
        'stroke="currentColor" stroke-width="6"/>'
    ),
    # An eye with its pupil.
    "suspicious": Markup(
        '<path d="M4 32C16 12 48 12 60 32 48 52 16 52 4 32z" fill="none" stroke="currentColor" '
        'stroke-width="6"/>'
        '<circle cx="32" cy="32" r="10"/>'
    ),
    # Two people with a heart between them.
    "social": Markup(
        '<circle cx="15" cy="20" r="8"/><circle cx="49" cy="20" r="8"/>'
        '<path d="M2 58V46a13 13 0 0 1 26 0v12zM36 58V46a13 13 0 0 1 26 0v12z"/>'
        '<path d="M32 42l-7-7a4 4 0 0 1 7-5 4 4 0 0 1 7 5z"/>'
    ),
    # A flashing siren.
    "emergency": Markup(
        '<path d="M18 50V36a14 14 0 0 1 28 0v14z"/><rect x="10" y="52" width="44" height="9" '
        'rx="2"/>'
        '<path d="M32 3v9M9 12l6 6M55 12l-6 6M2 33h7M55 33h7" fill="none" '
        'stroke="currentColor" stroke-width="6" '
        'stroke-linecap="round"/>'
    ),
    # A circled "i" for messages without a category.
    "other": Markup(
        '<circle cx="32" cy="32" r="27" fill="none" stroke="currentColor" stroke-width="6"/>'
        '<circle cx="32" cy="19" r="5"/><rect x="28" y="27" width="8" height="22" rx="2"/>'
    ),
    # A bell.
    "alert": Markup(
        '<path d="M32 5a4 4 0 0 1 4 4v2a17 17 0 0 1 13 17v12l7 9H8l7-9V28a17 17 0 0 1 13-17V9'
        'a4 4 0 0 1 4-4z"/><path d="M25 53h14a7 7 0 0 1-14 0z"/>'
    ),
    # A speech bubble with an exclamation mark: "report something".
    "report": Markup(
        '<path fill-rule="evenodd" d="M8 6h48a5 5 0 0 1 5 5v30a5 5 0 0 1-5 5H30L15 59V46H8a5 5 '
        '0 0 1-5-5V11a5 5 0 0 1 5-5zM28 13v17h8V13zm0 21v7h8v-7z"/>'
    ),
    # A map pin.
    "place": Markup(
        '<path fill-rule="evenodd" d="M32 3a21 21 0 0 0-21 21c0 16 21 37 21 37s21-21 21-37A21 21 '
        '0 0 0 32 3zm0 12a9 9 0 1 1 0 18 9 9 0 0 1 0-18z"/>'
    ),
    # A clock at ten past twelve-ish.
    "clock": Markup(
        '<circle cx="32" cy="32" r="26" fill="none" stroke="currentColor" stroke-width="6"/>'
        '<path d="M32 16v17l11 7" fill="none" stroke="currentColor" stroke-width="6" '
        'stroke-linecap="round" stroke-linejoin="round"/>'
    ),
    # A tick in a circle: verified.
    "check": Markup(
        '<circle cx="32" cy="32" r="27" fill="none" stroke="currentColor" stroke-width="6"/>'
        '<path d="M19 33l9 9 17-19" fill="none" stroke="currentColor" stroke-width="7" '
        'stroke-linecap="round" stroke-linejoin="round"/>'
    ),
    # An exclamation mark in a triangle: not verified, take care.
    "warning": Markup(
        '<path fill-rule="evenodd" d="M32 4c2 0 3 1 4 3l26 46c2 3 0 7-4 7H6c-4 0-6-4-4-7L28 7c1-2 '
        '2-3 4-3zm-4 18v18h8V22zm0 24v7h8v-7z"/>'
    ),
    # A globe: the language switcher, recognisable without reading.
    "language": Markup(
        '<circle cx="32" cy="32" r="27" fill="none" stroke="currentColor" stroke-width="5"/>'
        '<path d="M32 5c-11 9-11 45 0 54M32 5c11 9 11 45 0 54M6 24h52M6 40h52" fill="none" '
        'stroke="currentColor" stroke-width="4"/>'
    ),
    # A telephone handset.
    "phone": Markup(
        '<path d="M19 5l9 13c1 2 1 4-1 5l-5 4c3 7 9 13 16 16l4-5c1-2 3-2 5-1l13 9c2 1 2 3 1 5l-4 7'
        'c-2 3-6 4-10 3C29 56 8 35 3 17c-1-4 0-8 3-10l8-3c2-1 4-1 5 1z"/>'
    ),
}

#: Names that exist; every category name is one of them.
NAMES: Final = frozenset(_SHAPES)

# Big pictures (categories) default to 64 px; small marks to 24 px. CSS may
# resize both; the attributes keep a page sane if CSS is missing.
_BIG: Final = frozenset({"nuisance", "suspicious", "social", "emergency", "other"})


def pictogram(name: str, label: str = "") -> Markup:
    """The pictogram ``name`` as inline SVG.

    With a ``label`` (from the catalogue) it is an image for screen readers
    (``role="img"``, ``aria-label``); without one it is decoration next to
    words that already say the same, and hidden from screen readers.
    Raises :class:`KeyError` for an unknown name.
    """
    shape = _SHAPES[name]
    size = 64 if name in _BIG else 24
    if label:
        a11y = Markup(' role="img" aria-label="{}"').format(label)
    else:
        a11y = Markup(' aria-hidden="true"')
    return Markup(
        '<svg class="pg pg-{name}" viewBox="0 0 64 64" width="{size}" height="{size}" '
        'fill="currentColor"{a11y}>{shape}</svg>'
    ).format(name=escape(name), size=size, a11y=a11y, shape=shape)
