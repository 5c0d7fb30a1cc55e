"""Translations for the resident portal: one catalogue, five languages.

All words the portal shows come from ``messages.toml`` next to this module:
one TOML table per language (``[nl]`` first and the default; ``[en]``,
``[tr]``, ``[ar]``, ``[pl]`` each with exactly the same keys, which
tests/unit/test_i18n_complete.py checks). Keys are flat and dotted
(``home.title``, ``category.nuisance``); TOML reads dotted keys as nested
tables, so the loader flattens them again. A key missing in a language would
fall back to Dutch.

Messages are plain text formatted with :meth:`str.format` named arguments;
the templates escape them on output, like any other text.

>>> cat = Catalogue.load(strict=True)
>>> t = cat.translator("en")
>>> t("nav.report")
'Report'
>>> negotiate("tr-TR,tr;q=0.9,en;q=0.5", None, None)
'tr'
"""

from __future__ import annotations

import logging
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

SUPPORTED: Final = ("nl", "en", "tr", "ar", "pl")
DEFAULT: Final = "nl"
RTL: Final = frozenset({"ar"})
#: Each language's name in that language, for the language switcher.
LANGUAGE_NAMES: Final[Mapping[str, str]] = {
    "nl": "Nederlands",
    "en": "English",
    "tr": "Türkçe",
    "ar": "العربية",
    "pl": "Polski",
}
DEFAULT_PATH: Final = Path(__file__).with_name("messages.toml")

# An Accept-Language header is short in practice; a huge one is hostile.
_MAX_HEADER = 1000
_MAX_RANGES = 20


class MissingMessage(KeyError):
    """A message key is not in the catalogue (raised only in strict mode)."""


class CatalogueError(ValueError):
    """``messages.toml`` is malformed: wrong layout, non-text value, bad placeholder."""


def direction(lang: str) -> str:
    """Writing direction of ``lang``: ``"rtl"`` for Arabic, else ``"ltr"``."""
    return "rtl" if lang in RTL else "ltr"


def _flatten(table: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", out)
        elif isinstance(value, str):
            out[name] = value
        else:
            raise CatalogueError(f"{name}: a message must be text, not {type(value).__name__}")


def placeholders(message: str) -> frozenset[str]:
    """Names of the ``{named}`` fields in ``message``."""
    names = set()
    for _literal, field, _spec, _conv in string.Formatter().parse(message):
        if field is not None:
            if not field.isidentifier():
                raise CatalogueError(f"{message!r}: placeholders must be {{name}}")
            names.add(field)
    return frozenset(names)


class Translator:
    """Looks up and formats messages for one language: ``t(key, **kwargs)``.

    Lookup order is the language itself, then Dutch. An unknown key raises
    :class:`MissingMessage` in strict mode (tests) and returns the key itself
    otherwise (production: a page with a raw key beats no page).
    """

    __slots__ = ("_fallback", "_messages", "_strict", "dir", "lang")

    def __init__(self, lang: str, messages: Mapping[str, str], fallback: Mapping[str, str],
                 *, strict: bool) -> None:
        self.lang = lang
        self.dir = direction(lang)
        self._messages = messages
        self._fallback = fallback
        self._strict = strict

    def __call__(self, key: str, /, **kwargs: object) -> str:
        message = self._messages.get(key)
        if message is None:
            message = self._fallback.get(key)
        if message is None:
            if self._strict:
                raise MissingMessage(key)
            log.warning("missing message %r (%s)", key, self.lang)
            return key
        if not kwargs and "{" not in message:
            return message
        try:
            return message.format(**kwargs)
        except (KeyError, IndexError, ValueError):
            if self._strict:
                raise
            log.warning("cannot format message %r (%s) with %s", key, self.lang, sorted(kwargs))
            return message

    def __repr__(self) -> str:
        return f"Translator({self.lang!r})"


class Catalogue:
    """All messages of all supported languages, read once at start-up."""

    def __init__(self, messages: Mapping[str, Mapping[str, str]], *, strict: bool = False) -> None:
        if DEFAULT not in messages:
            raise CatalogueError(f"the catalogue has no [{DEFAULT}] table")
        unknown = set(messages) - set(SUPPORTED)
        if unknown:
            raise CatalogueError(f"unsupported language table(s): {', '.join(sorted(unknown))}")
        self._messages = {lang: dict(messages.get(lang, {})) for lang in SUPPORTED}
        self.strict = strict

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH, *, strict: bool = False) -> Catalogue:
        """Read ``messages.toml`` (or another catalogue file).

        ``strict=True`` makes unknown keys raise; use it in tests.
        """
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        tables: dict[str, dict[str, str]] = {}
        for lang, table in data.items():
            if not isinstance(table, Mapping):
                raise CatalogueError(f"{lang}: expected a [{lang}] table of messages")
            flat: dict[str, str] = {}
            _flatten(table, "", flat)
            tables[lang] = flat
        return cls(tables, strict=strict)

    def languages(self) -> tuple[str, ...]:
        """The supported languages, default first."""
        return SUPPORTED

    def messages(self, lang: str) -> Mapping[str, str]:
        """The messages written for ``lang`` itself (without the Dutch fallback)."""
        return self._messages[lang]

    def translator(self, lang: str) -> Translator:
        """A :class:`Translator` for ``lang``; an unsupported language gets Dutch."""
        if lang not in self._messages:
            lang = DEFAULT
        return Translator(lang, self._messages[lang], self._messages[DEFAULT],
                          strict=self.strict)


def _supported(value: str | None) -> str | None:
    if not value:
        return None
    code = value.strip().lower().replace("_", "-").split("-", 1)[0]
    return code if code in SUPPORTED else None


def _from_header(header: str) -> str | None:
    best: tuple[float, int, str] | None = None
    for index, part in enumerate(header[:_MAX_HEADER].split(",")[:_MAX_RANGES]):
        tag, _, params = part.strip().partition(";")
        code = _supported(tag)
        if code is None:
            continue
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                continue
        if not 0.0 < quality <= 1.0:
            continue
        # Highest quality wins; on a tie, the earlier range in the header.
        if best is None or (quality, -index) > (best[0], best[1]):
            best = (quality, -index, code)
    return best[2] if best else None


def negotiate(accept_language: str | None, cookie_value: str | None,
              query_value: str | None) -> str:
    """Pick the page language: query (``?lang=``) > cookie > Accept-Language > Dutch.

    Unsupported or malformed values are skipped, never an error.

    >>> negotiate("en-GB,en;q=0.8", "pl", None)
    'pl'
    >>> negotiate("de-DE,fr;q=0.5", None, "xx")
    'nl'
    """
    for value in (query_value, cookie_value):
        code = _supported(value)
        if code:
            return code
    if accept_language:
        code = _from_header(accept_language)
        if code:
            return code
    return DEFAULT
