"""Canonical encoding: the exact bytes that are signed.

A strict subset of JSON with one encoding for every value (in the spirit of
RFC 8785): object keys sorted by code point, no insignificant whitespace,
UTF-8 without escaping of non-ASCII characters, integers only (no floats, so
there is no question of how a number is printed), ``true``/``false``/``null``.
Strings are NFC-normalised by the validators *before* encoding; the encoder
itself never changes a value, it refuses what it cannot encode uniquely.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidField

#: JSON's integer range that every implementation reads exactly (IEEE-754 safe).
MAX_SAFE_INT = 2**53 - 1

JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]

#: Digits of the longest integer :func:`parse_json` reads (a 64-bit integer has 20);
#: longer ones are refused before Python spends time converting them.
MAX_INT_DIGITS = 20
#: A ``\uD800``–``\uDFFF`` escape: JSON text may name a lone surrogate, which no
#: UTF-8 can carry; only text containing one is checked for it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check(value: Any, path: str, depth: int) -> None:
    if depth > 8:
        raise InvalidField(path, "nested too deeply")
    if value is None or isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
            raise InvalidField(path, "integer out of range")
        return
    if isinstance(value, float):
        raise InvalidField(path, "floats are not allowed in canonical encoding")
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidField(path, "object keys must be strings")
            _check(item, f"{path}.{key}", depth + 1)
        return
    raise InvalidField(path, f"type {type(value).__name__} cannot be encoded")


def canonical_bytes(value: Any) -> bytes:
    """Return the canonical encoding of ``value``.

    >>> canonical_bytes({"b": 1, "a": [True, None, "é"]})
    b'{"a":[true,null,"\\xc3\\xa9"],"b":1}'
    """
    _check(value, "$", 0)
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidField("$", "text holds a lone surrogate (not valid Unicode)") from exc


def parse_json(data: bytes, limit: int) -> Any:
    """Parse JSON ``data`` of at most ``limit`` bytes, refusing floats and duplicates.

    Every refusal is an :class:`~sync.errors.EventError` (:class:`EventTooLarge`
    or :class:`InvalidField` with field ``$``): invalid UTF-8, lone surrogate
    escapes (``"\\ud800"``), NaN and Infinity, floats, integers of more than
    :data:`MAX_INT_DIGITS` digits, duplicate keys and nesting deeper than
    Python's recursion limit. Nothing else is raised, whatever the bytes.
    """
    if len(data) > limit:
        from .errors import EventTooLarge

        raise EventTooLarge(f"{len(data)} bytes exceeds the limit of {limit}")

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in pairs:
            if key in out:
                # The key is hostile text: named by its repr, never as a field.
                raise InvalidField("$", f"duplicate key {key[:40]!r}")
            out[key] = val
        return out

    def no_float(text: str) -> Any:
        raise InvalidField("$", f"floats are not allowed ({text})")

    def no_const(text: str) -> Any:
        raise InvalidField("$", f"{text} is not allowed")

    def small_int(text: str) -> int:
        if len(text) > MAX_INT_DIGITS and len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise InvalidField("$", f"integer of more than {MAX_INT_DIGITS} digits")
        return int(text)

    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=no_dupes,
            parse_float=no_float,
            parse_int=small_int,
            parse_constant=no_const,
        )
    except UnicodeDecodeError as exc:
        raise InvalidField("$", "not valid UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise InvalidField("$", f"not valid JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:
        raise InvalidField("$", "nested too deeply") from exc
    if _SURROGATE_ESCAPE.search(data):
        try:  # the escape may start a valid pair, or be an escaped backslash and "ud800"
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidField("$", "text holds a lone surrogate (not valid Unicode)") from exc
    return value
