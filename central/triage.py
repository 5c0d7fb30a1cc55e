"""Triage: which desk, police or municipality, gets a report.

Rules are data, not code: a TOML file that staff with the admin role can edit
(``central/triage_rules.toml`` is the default shipped with Bart). Rules are
tried in order and the first rule whose conditions all hold decides; every
decision names its rule, so the staff page can show *why* a report landed on
a desk. Pure: text in, :class:`RuleSet` out; report in, :class:`Decision` out.

Rule file, version 1::

    version = 1

    [[rule]]
    name = "emergency"                    # unique; shown to staff
    description = "Emergencies go to the police control room."
    categories = ["emergency"]            # optional: report category
    audiences = ["authorities", "both"]   # optional: who the resident addressed
    called_112 = true                     # optional: resident says 112 was called
    keywords = ["mes", "wapen*"]          # optional: any word/phrase in the text
    route = "police"                      # police | municipality

A condition left out matches every report. Keywords match whole words of the
report text after folding case, accents and punctuation (``"Mes!"`` matches
``mes``; ``"Ça"`` matches ``ca``); a keyword ending in ``*`` matches any word
that starts with it. Loading refuses a file with an unknown key, category,
audience or route, a duplicate name, no rules, a rule that can never match,
or a category that some report could reach without any rule matching, and
says which rule is wrong.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from sync.bodies import AUDIENCES, CATEGORIES, ESCALATE_TO

from .errors import CentralError

RULES_VERSION: Final = 1
#: The desks a report can be routed to (the same words as an escalation ack).
ROUTES: Final = ESCALATE_TO
DEFAULT_RULES_FILE: Final = "triage_rules.toml"
MAX_RULES: Final = 500
MAX_KEYWORDS: Final = 1000

_RULE_KEYS: Final = frozenset(
    {"name", "description", "description_nl", "route", "categories", "audiences", "called_112",
     "keywords"})
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
# Letters that have no decomposition but that residents type for a plain letter.
_FOLD: Final = str.maketrans({"ı": "i", "ł": "l", "ø": "o", "đ": "d", "ħ": "h", "æ": "ae",
                              "œ": "oe", "þ": "th"})
_WORD = re.compile(r"\w+")
# ASCII text, lowered: every character but a-z and 0-9 separates words (as \w+ would,
# with "_" a separator too); bytes.translate (a 256-byte table, lowering too) and split
# do it without the regex engine — str.translate with a mapping took twice as long
# (~2.8 against ~1.5 µs for a report of 90 characters).
_ASCII_FOLD: Final = bytes(ord(chr(c).lower()) if c < 128 and chr(c).isalnum() else 32
                           for c in range(256))


class TriageError(CentralError, ValueError):
    """Root of the errors of triage: a report or a rule set cannot be used."""


class RulesError(TriageError):
    """A rules file is invalid; ``problems`` lists every problem found, one line each."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


def fold(text: str) -> str:
    """Text reduced for matching: lower case, no accents, words separated by one space.

    >>> fold("Hang-JONGEREN bij de  speeltuin!  Café ŁÓDŹ")
    'hang jongeren bij de speeltuin cafe lodz'
    """
    if text.isascii():  # the common case; the same result as the general path below
        return " ".join(text.encode("ascii").translate(_ASCII_FOLD).decode("ascii").split())
    text = unicodedata.normalize("NFKD", text.casefold()).translate(_FOLD)
    kept = text.translate(_DROP)
    return " ".join(_WORD.findall(kept.replace("_", " ")))


class _DropMarks(dict[int, str | None]):
    """``str.translate`` table deleting combining marks and format characters.

    Filled on first sight of each character, so translation runs at C speed.
    """

    def __missing__(self, code: int) -> str | None:
        ch = chr(code)
        drop = unicodedata.combining(ch) or unicodedata.category(ch) == "Cf"
        keep = None if drop else ch
        if len(self) < 8192:  # bounded: hostile text cannot grow the table without end
            self[code] = keep
        return keep


_DROP: Final = _DropMarks()


@dataclass(frozen=True, slots=True)
class Rule:
    """One routing rule. Empty ``categories``/``audiences``/``keywords`` and a
    ``called_112`` of None match every report."""

    name: str
    route: str
    description: str = ""
    categories: frozenset[str] = frozenset()
    #: The description in Dutch (staff pages show the page's language).
    description_nl: str = ""
    audiences: frozenset[str] = frozenset()
    called_112: bool | None = None
    keywords: tuple[str, ...] = ()
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        if self.keywords:
            object.__setattr__(self, "_pattern", _keyword_pattern(self.keywords))

    @property
    def is_fallback(self) -> bool:
        """True when only the category decides (no keyword, audience or 112 condition)."""
        return not self.keywords and not self.audiences and self.called_112 is None

    def applies(self, category: str, audience: str, called_112: bool) -> bool:
        """True when category, audience and 112 allow this rule (keywords aside)."""
        return not ((self.categories and category not in self.categories)
                    or (self.audiences and audience not in self.audiences)
                    or (self.called_112 is not None and called_112 != self.called_112))

    def match(self, category: str, folded_text: str, audience: str,
              called_112: bool) -> str | None:
        """The matched words (``""`` when the rule has no keywords), or None."""
        if not self.applies(category, audience, called_112):
            return None
        if self._pattern is None:
            return ""
        found = self._pattern.search(" " + folded_text)
        return found.group(1) if found else None


def _keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    r"""One regex for a rule's keywords, searched in ``" " + fold(text)``; group 1
    is the matched words. Keywords match whole words, ``*`` a prefix.

    The alternatives are tried longest first, so that the explanation shows
    "huiselijk geweld", not "geweld". Folded text is words of ``\w`` joined by
    single spaces, so with a space in front every word starts right after a
    space: the pattern starts with that space, which the regex engine finds
    with a fast scan instead of trying every character; and the alternatives
    are grouped by their first letter, so that at each word only the keywords
    that begin with its letter are tried. The same matches as
    ``(?<!\w)(?:kw1|kw2|…)(?!\w)`` on the folded text (two keywords with
    different first letters never match at one place; each group keeps the
    longest-first order), 3–5 times faster on the shipped rules.
    """
    parts = []
    for keyword in keywords:
        prefix = keyword.endswith("*")
        words = fold(keyword.rstrip("*"))
        parts.append(re.escape(words) + (r"\w*" if prefix else ""))
    parts.sort(key=len, reverse=True)
    # A folded keyword starts and ends with a word character, which re.escape
    # leaves as it is: part[0] is the first letter, and \b after a part means
    # the word ends there.
    groups: dict[str, list[str]] = {}
    for part in parts:
        groups.setdefault(part[0], []).append(part[1:])
    return re.compile(" (" + "|".join(
        first + "(?:" + "|".join(rests) + ")" for first, rests in groups.items()) + r")\b")


@dataclass(frozen=True, slots=True)
class Decision:
    """The route of one report and the rule that chose it."""

    route: str
    rule: Rule
    #: The words of the report that matched the rule's keywords (folded), or "".
    matched: str = ""

    def explain(self) -> str:
        """One line for the staff page: which rule, and why.

        >>> d = Decision("police", Rule("emergency", "police", "Emergencies go to the police."))
        >>> d.explain()
        'police, by rule "emergency": Emergencies go to the police.'
        """
        why = f'{self.route}, by rule "{self.rule.name}"'
        if self.rule.description:
            why += f": {self.rule.description}"
        if self.matched:
            why += f' (text mentions "{self.matched}")'
        return why


@dataclass(frozen=True, slots=True)
class RuleSet:
    """An ordered, validated list of rules. Build with :func:`parse_rules`."""

    rules: tuple[Rule, ...]
    source: str = "<rules>"
    _cache: dict[tuple[str, str, bool], tuple[Rule, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def decide(self, report: Mapping[str, Any]) -> Decision:
        """Route a report body (as :func:`sync.bodies.validate_report` returns it)."""
        rule, matched = self.rule_for(report)
        return Decision(rule.route, rule, matched)

    def rule_for(self, report: Mapping[str, Any]) -> tuple[Rule, str]:
        """The rule that routes ``report`` and the words it matched: :meth:`decide`
        without building a :class:`Decision` (the projector routes every report)."""
        category = report.get("category")
        if category not in CATEGORIES:
            raise TriageError(f"report category {category!r} is not one of {', '.join(CATEGORIES)}")
        text = report.get("text") or ""
        audience = report.get("audience") or ""
        called = report.get("called_112") is True
        folded: str | None = None  # folded only when a keyword rule gets that far
        for rule in self._applicable(category, audience, called):
            if rule._pattern is None:
                return rule, ""
            if folded is None:
                folded = " " + (fold(text) if isinstance(text, str) else "")
            found = rule._pattern.search(folded)
            if found:
                return rule, found.group(1)
        # parse_rules() checked that every category has a fallback rule.
        raise TriageError(f"no rule in {self.source} matches a {category} report")

    def _applicable(self, category: str, audience: str, called: bool) -> tuple[Rule, ...]:
        """The rules that category, audience and 112 allow, in order (cached)."""
        key = (category, audience, called)
        cache = self._cache
        found = cache.get(key)
        if found is None:
            found = tuple(r for r in self.rules if r.applies(category, audience, called))
            if len(cache) < 256:
                cache[key] = found
        return found

    def by_name(self, name: str) -> Rule:
        """The rule called ``name`` (KeyError when there is none)."""
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)


def triage(report: Mapping[str, Any], rules: RuleSet | None = None) -> Decision:
    """Route ``report`` with ``rules`` (the shipped default rules when None)."""
    return (rules or default_rules()).decide(report)


#: File name of the edited rules in central's data directory (see :func:`router_for`).
RULES_FILE: Final = "triage_rules.toml"


def router_for(data_dir: Path) -> Callable[[Mapping[str, Any]], tuple[str, str]]:
    """The ingest router: ``body -> (route, rule name)``.

    Uses ``data_dir/triage_rules.toml`` when an admin has put edited rules
    there, else the shipped defaults. Invalid edited rules raise
    :class:`RulesError` here, at start-up, rather than misroute reports later.
    """
    path = Path(data_dir) / RULES_FILE
    ruleset = load_rules(path) if path.exists() else default_rules()

    rule_for = ruleset.rule_for

    def route(body: Mapping[str, Any]) -> tuple[str, str]:
        rule = rule_for(body)[0]
        return rule.route, rule.name

    return route


# --- loading -----------------------------------------------------------------


def parse_rules(text: str, *, source: str = "<rules>") -> RuleSet:
    """Parse and validate a rules file's text; raise :class:`RulesError` listing all problems."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(source, [f"not valid TOML: {exc}"]) from None
    problems: list[str] = []
    extra = set(data) - {"version", "rule"}
    if extra:
        problems.append(f"unknown top-level key(s): {', '.join(sorted(extra))}"
                        " (expected version and [[rule]] tables)")
    version = data.get("version")
    if version != RULES_VERSION:
        problems.append(f"version must be {RULES_VERSION} (found {version!r})")
    raw_rules = data.get("rule")
    if raw_rules is None or raw_rules == []:
        problems.append("there are no rules: add at least one [[rule]] table")
        raise RulesError(source, problems)
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        problems.append("rules must be written as [[rule]] tables")
        raise RulesError(source, problems)
    if len(raw_rules) > MAX_RULES:
        problems.append(f"at most {MAX_RULES} rules")
        raise RulesError(source, problems)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_rules, start=1):
        rule = _parse_rule(index, raw, problems)
        if rule is None:
            continue
        if rule.name in seen:
            problems.append(f'rule {index} ("{rule.name}"): the name is already used by '
                            f"rule {seen[rule.name]}")
        seen.setdefault(rule.name, index)
        rules.append(rule)
    if not problems:
        problems.extend(_coverage_problems(rules))
    if problems:
        raise RulesError(source, problems)
    return RuleSet(tuple(rules), source)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(str(path), [f"cannot read the file: {exc}"]) from None
    return parse_rules(text, source=str(path))


def default_rules_text() -> str:
    """The text of the rules shipped with Bart (a starting point for an edited copy)."""
    return resources.files("central").joinpath(DEFAULT_RULES_FILE).read_text(encoding="utf-8")


@functools.cache
def default_rules() -> RuleSet:
    """The rules shipped with Bart (``central/triage_rules.toml``), parsed once."""
    return parse_rules(default_rules_text(), source=f"central/{DEFAULT_RULES_FILE}")


def _parse_rule(index: int, raw: Mapping[str, Any], problems: list[str]) -> Rule | None:
    name = raw.get("name")
    where = f'rule {index} ("{name}")' if isinstance(name, str) and name else f"rule {index}"
    start = len(problems)

    def bad(message: str) -> None:
        problems.append(f"{where}: {message}")

    extra = set(raw) - _RULE_KEYS
    if extra:
        bad(f"unknown key(s) {', '.join(sorted(extra))} (known: {', '.join(sorted(_RULE_KEYS))})")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        bad("name is required: lower-case letters, digits, - and _ (at most 64)")
    route = raw.get("route")
    if route not in ROUTES:
        bad(f"route must be one of {', '.join(ROUTES)} (found {route!r})")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        bad("description must be text of at most 500 characters")
    description_nl = raw.get("description_nl", "")
    if not isinstance(description_nl, str) or len(description_nl) > 500:
        bad("description_nl must be text of at most 500 characters")
    categories = _choices(raw, "categories", CATEGORIES, bad)
    audiences = _choices(raw, "audiences", AUDIENCES, bad)
    called_112 = raw.get("called_112")
    if called_112 is not None and not isinstance(called_112, bool):
        bad("called_112 must be true or false")
    keywords = raw.get("keywords", [])
    if not isinstance(keywords, list) or ("keywords" in raw and not keywords):
        bad("keywords must be a non-empty list of words or phrases")
        keywords = []
    elif len(keywords) > MAX_KEYWORDS:
        bad(f"at most {MAX_KEYWORDS} keywords")
        keywords = []
    for keyword in keywords:
        if (not isinstance(keyword, str) or "*" in keyword.rstrip("*")
                or keyword.endswith("**") or not fold(keyword.rstrip("*"))):
            bad(f"keyword {keyword!r} must be a word or phrase, with at most one * at its end")
    if len(problems) > start:
        return None
    assert isinstance(name, str) and isinstance(route, str)
    assert isinstance(description_nl, str)
    return Rule(name=name, route=route, description=description, categories=categories,
                audiences=audiences, called_112=called_112, keywords=tuple(keywords),
                description_nl=description_nl)


def _choices(raw: Mapping[str, Any], key: str, options: Sequence[str],
             bad: Callable[[str], None]) -> frozenset[str]:
    if key not in raw:
        return frozenset()
    values = raw[key]
    if not isinstance(values, list) or not values:
        bad(f"{key} must be a non-empty list (leave it out to match every report)")
        return frozenset()
    unknown = [v for v in values if v not in options]
    if unknown:
        bad(f"unknown {key[:-1] if key != 'categories' else 'category'} "
            f"{', '.join(map(repr, unknown))} (known: {', '.join(options)})")
    return frozenset(v for v in values if v in options)


def _coverage_problems(rules: Sequence[Rule]) -> list[str]:
    problems: list[str] = []
    covered: set[str] = set()  # categories that an earlier fallback rule takes entirely
    for index, rule in enumerate(rules, start=1):
        scope = rule.categories or frozenset(CATEGORIES)
        if scope <= covered:
            problems.append(f'rule {index} ("{rule.name}") can never match: the rules above '
                            f"already route every {'/'.join(sorted(scope))} report")
        if rule.is_fallback:
            covered |= scope
    missing = [c for c in CATEGORIES if c not in covered]
    if missing:
        problems.append(f"no rule routes every {'/'.join(missing)} report: end with a rule for "
                        f"{'/'.join(missing)} without keywords, audiences or called_112")
    return problems


__all__ = [
    "ROUTES",
    "RULES_FILE",
    "RULES_VERSION",
    "Decision",
    "Rule",
    "RuleSet",
    "RulesError",
    "TriageError",
    "default_rules",
    "default_rules_text",
    "fold",
    "load_rules",
    "parse_rules",
    "router_for",
    "triage",
]
