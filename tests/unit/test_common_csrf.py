"""common.csrf: the one CSRF token and same-origin check of node and central.

Before issue 16 each side had a copy and only central capped a token's length
before comparing. tests/integration/test_common_csrf_pages.py runs the same checks
through both sides' real pages.
"""

from __future__ import annotations

import doctest

import pytest

from common import csrf

HOST = {"host": "bart.local"}


def test_doctests() -> None:
    assert doctest.testmod(csrf).failed == 0


def test_the_token_is_bound_to_the_session_and_stable() -> None:
    token = csrf.csrf_token("s1")
    assert token == csrf.csrf_token("s1") != csrf.csrf_token("s2")
    assert len(token) == 64 <= csrf.MAX_TOKEN
    assert csrf.token_ok("s1", token)
    assert not csrf.token_ok("s2", token)
    assert not csrf.token_ok(None, token) and not csrf.token_ok("", token)
    assert not csrf.token_ok("s1", "")


@pytest.mark.parametrize("extra", [1, csrf.MAX_TOKEN, 10_000_000])
def test_an_over_long_token_is_refused(extra: int) -> None:
    token = csrf.csrf_token("s1")
    assert not csrf.token_ok("s1", token + " " * extra)
    assert not csrf.token_ok("s1", token + "0" * extra)


@pytest.mark.parametrize(("headers", "ok"), [
    ({}, True),                                                        # says nothing
    ({"origin": "null"}, True),                                        # our forms (no-referrer)
    ({"origin": "http://bart.local"}, True),
    ({"origin": "https://bart.local"}, True),
    ({"origin": "https://evil.example"}, False),
    ({"origin": "http://bart.local.evil.example"}, False),
    ({"origin": "null", "referer": "https://evil.example/form"}, False),
    ({"referer": "https://evil.example/form"}, False),
    ({"referer": "http://bart.local/team"}, True),
    ({"origin": "http://[::1"}, False),                                # unparsable
    ({"origin": "http://bart.local", "referer": "https://evil.example/"}, True),  # Origin wins
])
def test_same_origin(headers: dict[str, str], ok: bool) -> None:
    assert csrf.same_origin({**HOST, **headers}) is ok
    token = csrf.csrf_token("s1")
    assert csrf.csrf_ok("s1", token, {**HOST, **headers}) is ok


def test_no_host_header_and_a_named_origin_is_refused() -> None:
    assert not csrf.same_origin({"origin": "http://bart.local"})


def test_both_sides_use_the_one_implementation() -> None:
    """The drift of issue 16 (only central capped the token) cannot come back:
    neither side has a token or a comparison of its own."""
    import inspect

    from central.staff import web as staff_web
    from node.team import session

    for module in (session, staff_web):
        assert module.csrf_token is csrf.csrf_token
        for name in ("csrf_ok", "same_origin"):
            source = inspect.getsource(getattr(module, name))
            assert f"csrf.{name}(" in source and "compare_digest" not in source, name
