"""Rendering of central's staff pages: Jinja2 templates and the word catalogue.

Templates are in ``central/templates/`` with HTML autoescaping on (report
text is residents' text and is never marked safe) and ``StrictUndefined``.
Words come from ``central/messages.toml``: ``[nl]`` first and complete (the
default), ``[en]`` with the same keys (a test checks it).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

import jinja2

TEMPLATES: Final = Path(__file__).with_name("templates")
MESSAGES: Final = Path(__file__).with_name("messages.toml")
LANGUAGES: Final = ("nl", "en")
DEFAULT: Final = "nl"
#: Central serves Dutch police and municipalities: times are shown in Dutch time.
TIMEZONE: Final = "Europe/Amsterdam"


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", out)
        else:
            out[name] = str(value)


def load_messages(path: Path = MESSAGES) -> dict[str, dict[str, str]]:
    """``{lang: {key: text}}`` from the catalogue file."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        flat: dict[str, str] = {}
        _flatten(data.get(lang, {}), "", flat)
        out[lang] = flat
    return out


class Translator:
    """``t("key", name=...)``: the word in one language, Dutch when it lacks one."""

    def __init__(self, lang: str, messages: Mapping[str, str], fallback: Mapping[str, str]):
        self.lang = lang
        self._messages = messages
        self._fallback = fallback

    def __call__(self, key: str, /, **kwargs: object) -> str:
        text = self._messages.get(key) or self._fallback.get(key)
        if text is None:
            return key
        return text.format(**kwargs) if kwargs else text


def negotiate(query: str | None, cookie: str | None, accept: str | None) -> str:
    """``?lang=`` beats the cookie beats Accept-Language beats Dutch.

    >>> negotiate(None, None, "en-GB,en;q=0.9"), negotiate("nl", "en", None)
    ('en', 'nl')
    """
    for value in (query, cookie):
        if value in LANGUAGES:
            return value
    for part in (accept or "")[:200].split(",")[:10]:
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


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
        self.messages = load_messages(messages)
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
        return Translator(lang, self.messages[lang], self.messages[DEFAULT])

    def render(self, template: str, /, *, lang: str, **context: Any) -> str:
        """Render ``template``; ``t`` and ``lang`` are added."""
        return self.env.get_template(template).render(t=self.translator(lang), lang=lang,
                                                      **context)
