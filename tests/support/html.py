"""Reading the server-rendered pages the way a browser without JavaScript does."""

from __future__ import annotations

import re


def csrf_of(html: str) -> str:
    """The CSRF token of the page's first form."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def row_of(html: str, row_id: str) -> str:
    """The ``<li id="row-…">`` of a team dashboard's row."""
    start = html.index(f'<li id="row-{row_id}"')
    return html[start:html.index("</li>", start)]
