"""Translations, shared by node and central: gettext catalogues read with Babel.

The message id is a dotted key (``home.title``), the msgstr its text; a
message with a count has plural forms chosen by its file's ``Plural-Forms``
header. ``.po`` files are read at start-up (:func:`read_locale`), nothing is
compiled. :class:`Translator` looks a key up in one language, then Dutch.
Accept-Language headers are parsed with limits (:func:`parse_accept_language`);
each side negotiates among its own languages with Babel. node/portal/i18n.py
(five languages) and central/pages.py (two) build on this module
(DESIGN.md §2: node and central never import each other).
"""

from __future__ import annotations

import gettext
import logging
import os
import string
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from babel.messages.plurals import get_plural
from babel.messages.pofile import PoFileError, read_po

log = logging.getLogger(__name__)

RTL: Final = frozenset({"ar"})
DOMAIN: Final = "messages"
#: The fallback language of every catalogue: Dutch.
DEFAULT: Final = "nl"

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
        # BART_I18N_STRICT=1 (the test suite sets it for every process it starts):
        # a missing or unformattable message raises instead of being logged.
        self._strict = strict or os.environ.get("BART_I18N_STRICT") == "1"
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

    def has(self, key: str, /) -> bool:
        """Whether ``key`` is in the catalogue (this language or Dutch)."""
        return key in self._messages or key in self._fallback

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
