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

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from babel.core import negotiate_locale

from common.i18n import (  # the shared part; re-exported under the portal's names
    DOMAIN as DOMAIN,
)
from common.i18n import (
    RTL as RTL,
)
from common.i18n import (
    CatalogueError as CatalogueError,
)
from common.i18n import (
    Message as Message,
)
from common.i18n import (
    MissingMessage as MissingMessage,
)
from common.i18n import (
    Translator as Translator,
)
from common.i18n import (
    cldr_plural_forms as cldr_plural_forms,
)
from common.i18n import (
    direction as direction,
)
from common.i18n import (
    parse_accept_language as parse_accept_language,
)
from common.i18n import (
    placeholders as placeholders,
)
from common.i18n import (
    plural_rule as plural_rule,
)
from common.i18n import (
    read_locale as read_locale,
)

log = logging.getLogger(__name__)

SUPPORTED: Final = ("nl", "en", "tr", "ar", "pl")
DEFAULT: Final = "nl"
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


def _supported(value: str | None) -> str | None:
    if not value:
        return None
    tag = value.strip().replace("_", "-")[:35]
    found = negotiate_locale([tag], SUPPORTED, sep="-", aliases={})
    return found.lower() if found else None


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
