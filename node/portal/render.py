"""Server-side rendering of the resident portal's pages.

One Jinja2 environment for the whole portal: templates from ``templates/``
next to this module, HTML autoescaping on (resident text is data and is
never marked safe), and ``StrictUndefined`` so that a missing context value
fails loudly instead of rendering an empty gap.

Every page gets ``t`` (the translator), ``lang`` and ``dir`` from
:meth:`Renderer.render`; the route passes the rest (see each template's
header comment for its context). A single alert ``<li>`` is rendered by one
macro, ``alert_item`` in ``_alert.html``: the home page uses it for its list,
and :meth:`Renderer.render_alert_item` uses it for the live (SSE) updates,
so both paths produce the same markup.

>>> from node.portal.i18n import Catalogue
>>> r = Renderer(Catalogue.load(strict=True))
>>> html = r.render_alert_item({"id": "a1", "source": "team", "category": "nuisance",
...     "severity": "minor", "title": "<b>Lawaai</b>", "text": "", "place": "",
...     "time": "22:31", "date": "28 nov", "verified": True, "called_112": False}, "nl")
>>> html.startswith('<li id="alert-a1"'), "&lt;b&gt;Lawaai&lt;/b&gt;" in html
(True, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import jinja2

from .i18n import DEFAULT, SUPPORTED, Catalogue, direction
from .pictograms import pictogram

TEMPLATES: Final = Path(__file__).with_name("templates")
#: Names the renderer sets itself; a route must not pass them.
RESERVED: Final = frozenset({"t", "lang", "dir"})


class Renderer:
    """Renders the portal's templates in one of the supported languages."""

    def __init__(self, catalogue: Catalogue, *, templates: Path = TEMPLATES) -> None:
        self.catalogue = catalogue
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates),
            autoescape=jinja2.select_autoescape(("html",), default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates ship with the package and never change while running.
            auto_reload=False,
        )
        self.env.globals["pictogram"] = pictogram
        # The live updates call the very macro the home page's list calls.
        self._alert_item = self.env.from_string(
            '{% from "_alert.html" import alert_item with context %}{{ alert_item(alert) }}')

    def warm(self) -> int:
        """Compile every template now (call it off the event loop at start-up):
        the first request for a page then does not hold the loop ~50 ms
        compiling it. Returns how many templates there are."""
        names = self.env.list_templates(extensions=("html",))
        for name in names:
            self.env.get_template(name)
        return len(names)

    def _base(self, lang: str) -> dict[str, Any]:
        if lang not in SUPPORTED:
            lang = DEFAULT
        return {"t": self.catalogue.translator(lang), "lang": lang, "dir": direction(lang)}

    def render(self, template_name: str, *, lang: str, **context: Any) -> str:
        """Render a page; ``t``, ``lang`` and ``dir`` are added for ``lang``.

        An unsupported ``lang`` renders in Dutch.
        """
        clash = RESERVED & context.keys()
        if clash:
            raise TypeError(f"context may not set {', '.join(sorted(clash))}")
        return self.env.get_template(template_name).render(self._base(lang), **context)

    def render_alert_item(self, alert_view: Mapping[str, Any], lang: str) -> str:
        """The ``<li>`` of one alert, exactly as the home page's list shows it."""
        return self._alert_item.render(self._base(lang), alert=alert_view)
