"""Translations for the resident portal: gettext catalogues, five languages.

All words the portal shows come from the gettext catalogues in ``locale/``
next to this module: ``locale/<lang>/LC_MESSAGES/messages.po`` for ``nl``
(the source and the default), ``en``, ``tr``, ``ar`` and ``pl``, and the
template ``locale/messages.pot`` (docs/translating.md). The msgid is the
message's key (``home.title``, ``category.nuisance``), the msgstr its text;
every language has exactly the keys of Dutch (tests/unit/test_i18n_complete.py
checks). A key missing or untranslated (empty, fuzzy) in a language falls
back to Dutch.

The ``.po`` files are read with Babel at start-up; nothing is compiled. A
message with a count has plural forms (``msgid_plural``, ``msgstr[0..n]``)
chosen by the file's ``Plural-Forms`` header: ``t("team.watching", count=3)``
or ``t.n("team.watching", 3)``.

Messages are plain text formatted with :meth:`str.format` named arguments;
the templates escape them on output, like any other text.

>>> cat = Catalogue.load(strict=True)
>>> t = cat.translator("en")
>>> t("nav.report")
'Report'
>>> t.n("team.watching", 1), t.n("team.watching", 2)
('1 team member is watching now', '2 team members are watching now')
>>> negotiate("tr-TR,tr;q=0.9,en;q=0.5", None, None)
'tr'
"""

from __future__ import annotations

import gettext
import logging
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from babel.core import negotiate_locale
from babel.messages.plurals import get_plural
from babel.messages.pofile import PoFileError, read_po

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
#: The folder of the catalogues: ``<lang>/LC_MESSAGES/messages.po`` and ``messages.pot``.
DEFAULT_PATH: Final = Path(__file__).with_name("locale")
DOMAIN: Final = "messages"

#: A message: its text, or its plural forms in the order of the language's Plural-Forms.
Message = str | tuple[str, ...]

# An Accept-Language header is short in practice; a huge one is hostile.
_MAX_HEADER = 1000
_MAX_RANGES = 20


class MissingMessage(KeyError):
    """A message key is not in the catalogue (raised only in strict mode)."""


class CatalogueError(ValueError):
    """A catalogue is malformed: unknown language, bad plural forms, bad placeholder."""


def direction(lang: str) -> str:
    """Writing direction of ``lang``: ``"rtl"`` for Arabic, else ``"ltr"``."""
    return "rtl" if lang in RTL else "ltr"


def placeholders(message: str) -> frozenset[str]:
    """Names of the ``{named}`` fields in ``message``."""
    names = set()
    for _literal, field, _spec, _conv in string.Formatter().parse(message):
        if field is not None:
            if not field.isidentifier():
                raise CatalogueError(f"{message!r}: placeholders must be {{name}}")
            names.add(field)
    return frozenset(names)


def plural_rule(expr: str) -> Callable[[int], int]:
    """The C expression of a ``Plural-Forms`` header as a function: count -> form index.

    >>> plural_rule("(n != 1)")(1), plural_rule("(n != 1)")(5)
    (0, 1)
    """
    try:
        return gettext.c2py(expr)
    except (ValueError, SyntaxError, RecursionError) as exc:
        raise CatalogueError(f"bad plural expression {expr!r}: {exc}") from None


def cldr_plural_forms(lang: str) -> tuple[int, str]:
    """``(nplurals, plural)`` of ``lang`` from Babel's CLDR data."""
    plural = get_plural(lang)
    return plural.num_plurals, plural.plural_expr


class Translator:
    """Looks up and formats messages for one language: ``t(key, **kwargs)``.

    Lookup order is the language itself, then Dutch. An unknown key raises
    :class:`MissingMessage` in strict mode (tests) and returns the key itself
    otherwise (production: a page with a raw key beats no page). A message
    with plural forms takes the form for ``count`` (an int); ``t.n(key, n)``
    is ``t(key, count=n)``.
    """

    __slots__ = ("_fallback", "_fallback_rule", "_messages", "_rule", "_strict", "dir",
                 "lang")

    def __init__(self, lang: str, messages: Mapping[str, Message],
                 fallback: Mapping[str, Message], *, strict: bool,
                 rule: Callable[[int], int] | None = None,
                 fallback_rule: Callable[[int], int] | None = None) -> None:
        self.lang = lang
        self.dir = direction(lang)
        self._messages = messages
        self._fallback = fallback
        self._strict = strict
        self._rule = rule or plural_rule(cldr_plural_forms(lang)[1])
        self._fallback_rule = fallback_rule or plural_rule(cldr_plural_forms(DEFAULT)[1])

    def __call__(self, key: str, /, **kwargs: object) -> str:
        message, rule = self._messages.get(key), self._rule
        if message is None:
            message, rule = self._fallback.get(key), self._fallback_rule
        if message is None:
            if self._strict:
                raise MissingMessage(key)
            log.warning("missing message %r (%s)", key, self.lang)
            return key
        if isinstance(message, tuple):
            message = self._form(key, message, rule, kwargs.get("count"))
        if not kwargs and "{" not in message:
            return message
        try:
            return message.format(**kwargs)
        except (KeyError, IndexError, ValueError):
            if self._strict:
                raise
            log.warning("cannot format message %r (%s) with %s", key, self.lang, sorted(kwargs))
            return message

    def n(self, key: str, count: int, /, **kwargs: object) -> str:
        """The form of a plural message for ``count`` (``ngettext``); ``{count}`` is set."""
        return self(key, count=count, **kwargs)

    def _form(self, key: str, forms: tuple[str, ...], rule: Callable[[int], int],
              count: object) -> str:
        if isinstance(count, int) and not isinstance(count, bool):
            return forms[min(max(rule(count), 0), len(forms) - 1)]
        if self._strict:
            raise TypeError(f"{key} has plural forms: give count=<int>, not {count!r}")
        return forms[-1]

    def __repr__(self) -> str:
        return f"Translator({self.lang!r})"


class Catalogue:
    """All messages of all supported languages, read once at start-up.

    ``messages`` is ``{lang: {key: text or plural forms}}``; ``plural_forms``
    is ``{lang: C expression}`` from each file's ``Plural-Forms`` header
    (Babel's CLDR rule for a language without one).
    """

    def __init__(self, messages: Mapping[str, Mapping[str, Message | Sequence[str]]], *,
                 strict: bool = False,
                 plural_forms: Mapping[str, str] | None = None) -> None:
        if DEFAULT not in messages:
            raise CatalogueError(f"the catalogue has no {DEFAULT} messages")
        unknown = set(messages) - set(SUPPORTED)
        if unknown:
            raise CatalogueError(f"unsupported language(s): {', '.join(sorted(unknown))}")
        self._messages: dict[str, dict[str, Message]] = {}
        for lang in SUPPORTED:
            table: dict[str, Message] = {}
            for key, value in messages.get(lang, {}).items():
                if isinstance(value, str):
                    table[key] = value
                elif isinstance(value, Sequence) and value \
                        and all(isinstance(v, str) for v in value):
                    table[key] = tuple(value)
                else:
                    raise CatalogueError(f"{lang} {key}: a message must be text or its "
                                         f"plural forms, not {value!r}")
            self._messages[lang] = table
        forms = dict(plural_forms or {})
        self._rules = {lang: plural_rule(forms.get(lang) or cldr_plural_forms(lang)[1])
                       for lang in SUPPORTED}
        self.strict = strict

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH, *, strict: bool = False) -> Catalogue:
        """Read the ``.po`` files of a locale folder (``locale/`` by default).

        ``strict=True`` makes unknown keys raise; use it in tests.
        """
        messages, plural_forms = read_locale(path, SUPPORTED)
        return cls(messages, strict=strict, plural_forms=plural_forms)

    def languages(self) -> tuple[str, ...]:
        """The supported languages, default first."""
        return SUPPORTED

    def messages(self, lang: str) -> Mapping[str, str]:
        """The messages written for ``lang`` itself (without the Dutch fallback).

        A message with plural forms is given by its last form (the general plural).
        """
        return {key: value if isinstance(value, str) else value[-1]
                for key, value in self._messages[lang].items()}

    def plurals(self, lang: str) -> Mapping[str, tuple[str, ...]]:
        """The messages of ``lang`` that have plural forms: key -> all its forms."""
        return {key: value for key, value in self._messages[lang].items()
                if isinstance(value, tuple)}

    def translator(self, lang: str) -> Translator:
        """A :class:`Translator` for ``lang``; an unsupported language gets Dutch."""
        if lang not in self._messages:
            lang = DEFAULT
        return Translator(lang, self._messages[lang], self._messages[DEFAULT],
                          strict=self.strict, rule=self._rules[lang],
                          fallback_rule=self._rules[DEFAULT])


def read_locale(folder: Path, languages: Sequence[str], domain: str = DOMAIN,
                ) -> tuple[dict[str, dict[str, Message]], dict[str, str]]:
    """``({lang: {key: message}}, {lang: plural expression})`` from ``folder/<lang>/LC_MESSAGES``.

    Untranslated (empty) and fuzzy entries are left out, as gettext does: the
    Dutch text shows instead. Every language folder must be one of ``languages``.
    """
    if not folder.is_dir():
        raise CatalogueError(f"{folder}: no such locale folder")
    found = sorted(p.parent.parent.name for p in folder.glob(f"*/LC_MESSAGES/{domain}.po"))
    unknown = [lang for lang in found if lang not in languages]
    if unknown:
        raise CatalogueError(f"{folder}: unsupported language(s): {', '.join(unknown)}")
    messages: dict[str, dict[str, Message]] = {}
    plural_forms: dict[str, str] = {}
    for lang in found:
        path = folder / lang / "LC_MESSAGES" / f"{domain}.po"
        try:
            with path.open("rb") as fh:
                catalog = read_po(fh, locale=lang, abort_invalid=True)
        except (PoFileError, ValueError) as exc:
            raise CatalogueError(f"{path}: {exc}") from None
        plural_forms[lang] = catalog.plural_expr
        table: dict[str, Message] = {}
        for message in catalog:
            if not message.id or message.fuzzy:
                continue
            key = message.id if isinstance(message.id, str) else message.id[0]
            if isinstance(message.string, (tuple, list)):
                forms = tuple(message.string)
                if len(forms) != catalog.num_plurals:
                    raise CatalogueError(f"{path}: {key} has {len(forms)} plural forms, "
                                         f"the header says {catalog.num_plurals}")
                if all(forms):
                    table[key] = forms
            elif isinstance(message.string, str) and message.string:
                table[key] = message.string
        messages[lang] = table
    return messages, plural_forms


def _supported(value: str | None) -> str | None:
    if not value:
        return None
    tag = value.strip().replace("_", "-")[:35]
    found = negotiate_locale([tag], SUPPORTED, sep="-", aliases={})
    return found.lower() if found else None


def parse_accept_language(header: str, *, max_length: int = _MAX_HEADER,
                    max_ranges: int = _MAX_RANGES) -> list[str]:
    """The language tags of an Accept-Language header, most wanted first.

    Ranges with ``q=0`` or a malformed q-value are left out; on a tie the
    earlier range comes first. Only the first ``max_ranges`` ranges of the
    first ``max_length`` characters count.

    >>> parse_accept_language("de-DE,de;q=0.9,tr;q=0.95,en;q=0")
    ['de-DE', 'tr', 'de']
    """
    ranges: list[tuple[float, int, str]] = []
    for index, part in enumerate(header[:max_length].split(",")[:max_ranges]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
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
        ranges.append((-quality, index, tag))
    return [tag for _q, _i, tag in sorted(ranges)]


def negotiate(accept_language: str | None, cookie_value: str | None,
              query_value: str | None) -> str:
    """Pick the page language: query (``?lang=``) > cookie > Accept-Language > Dutch.

    Unsupported or malformed values are skipped, never an error. The header's
    ranges go, most wanted first, through Babel's ``negotiate_locale``.

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
        found = negotiate_locale(parse_accept_language(accept_language), SUPPORTED,
                                 sep="-", aliases={})
        if found:
            return found.lower()
    return DEFAULT
