"""Rendering of central's staff pages: Jinja2 templates and the word catalogue.

Templates are in ``central/templates/`` with HTML autoescaping on (report
text is residents' text and is never marked safe) and ``StrictUndefined``.
Words come from the gettext catalogues in ``central/locale/``:
``nl/LC_MESSAGES/messages.po`` (complete, the default) and
``en/LC_MESSAGES/messages.po`` with the same keys (a test checks it), read
with Babel at start-up (docs/translating.md). The msgid is the key, the
msgstr the text; ``t("nodes.alarm", count=n)`` takes the plural form for ``n``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2
from babel.core import negotiate_locale

# The .po reading, plural rules and Accept-Language parsing are shared (common/).
from common.i18n import (
    Message,
    Translator,
    parse_accept_language,
    plural_rule,
    read_locale,
)

TEMPLATES: Final = Path(__file__).with_name("templates")
#: The folder of the catalogues: ``<lang>/LC_MESSAGES/messages.po`` and ``messages.pot``.
MESSAGES: Final = Path(__file__).with_name("locale")
LANGUAGES: Final = ("nl", "en")
DEFAULT: Final = "nl"
#: Central serves Dutch police and municipalities: times are shown in Dutch time.
TIMEZONE: Final = "Europe/Amsterdam"

__all__ = ["DEFAULT", "LANGUAGES", "MESSAGES", "Renderer", "Translator", "duration",
           "load_catalogue", "load_messages", "local", "negotiate"]


def load_catalogue(path: Path = MESSAGES,
                   ) -> tuple[dict[str, dict[str, Message]], dict[str, str]]:
    """``({lang: {key: text or plural forms}}, {lang: Plural-Forms expression})``."""
    messages, plural_forms = read_locale(path, LANGUAGES)
    return {lang: messages.get(lang, {}) for lang in LANGUAGES}, plural_forms


def load_messages(path: Path = MESSAGES) -> dict[str, dict[str, str]]:
    """``{lang: {key: text}}`` from the catalogue (a plural message: its last form)."""
    messages, _forms = load_catalogue(path)
    return {lang: {key: value if isinstance(value, str) else value[-1]
                   for key, value in table.items()}
            for lang, table in messages.items()}


def negotiate(query: str | None, cookie: str | None, accept: str | None) -> str:
    """``?lang=`` beats the cookie beats Accept-Language (with q-values) beats Dutch.

    >>> negotiate(None, None, "en-GB,en;q=0.9"), negotiate("nl", "en", None)
    ('en', 'nl')
    >>> negotiate(None, None, "en;q=0.5,nl;q=0.8")
    'nl'
    """
    for value in (query, cookie):
        if value in LANGUAGES:
            return value
    found = negotiate_locale(parse_accept_language(accept or ""), LANGUAGES, sep="-",
                             aliases={})
    return found.lower() if found else DEFAULT


def local(ts_ms: int | None, fmt: str = "%d-%m-%Y %H:%M") -> str:
    """A time in Dutch local time; "" for None.

    >>> local(1_764_412_200_000, "%H:%M")
    '11:30'
    """
    if ts_ms is None:
        return ""
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(ZoneInfo(TIMEZONE))
    return when.strftime(fmt)


def duration(seconds: int, lang: str) -> str:
    """A short duration: ``12 min``, ``3 h 05 min``, ``2 d 4 h`` (``dagen`` in Dutch)."""
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86_400:
        return f"{seconds // 3600} {'uur' if lang == 'nl' else 'h'} {seconds % 3600 // 60:02d} min"
    days = seconds // 86_400
    return f"{days} {'d' if lang == 'en' else 'dg'} {seconds % 86_400 // 3600} " \
           f"{'uur' if lang == 'nl' else 'h'}"


class Renderer:
    """Renders the staff pages in Dutch or English."""

    def __init__(self, templates: Path = TEMPLATES, messages: Path = MESSAGES) -> None:
        self.messages, plural_forms = load_catalogue(messages)
        self._rules: dict[str, Callable[[int], int]] = {
            lang: plural_rule(plural_forms[lang]) for lang in LANGUAGES if lang in plural_forms}
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates),
            autoescape=jinja2.select_autoescape(("html",), default_for_string=True),
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            auto_reload=False)
        self.env.globals["local"] = local
        self.env.globals["duration"] = duration

    def translator(self, lang: str) -> Translator:
        """The translator of ``lang`` (Dutch for anything else)."""
        if lang not in LANGUAGES:
            lang = DEFAULT
        return Translator(lang, self.messages[lang], self.messages[DEFAULT], strict=False,
                          rule=self._rules.get(lang), fallback_rule=self._rules.get(DEFAULT))

    def render(self, template: str, /, *, lang: str, **context: Any) -> str:
        """Render ``template``; ``t`` and ``lang`` are added."""
        return self.env.get_template(template).render(t=self.translator(lang), lang=lang,
                                                      **context)
