"""CSRF tokens and the same-origin check for form posts (pure; no I/O).

The one copy behind the node's team pages (``node/team/session.py``) and
central's staff pages (``central/staff/web.py``). A form's token is
HMAC-SHA256(session token, "csrf"): bound to the session, never stored, and
compared in constant time after a length cap (a megabyte of "token" is refused
before any work). A post must also come from our own origin, as far as the
browser says so.

>>> token = csrf_token("session-abc")
>>> len(token), csrf_ok("session-abc", token, {"host": "bart.local"})
(64, True)
>>> csrf_ok("session-xyz", token, {"host": "bart.local"})
False
>>> same_origin({"host": "bart.local", "origin": "https://evil.example"})
False
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

#: A token is 64 hex characters; anything much longer is refused before comparing.
MAX_TOKEN: Final = 128


def csrf_token(session_token: str) -> str:
    """The form token of a session: HMAC-SHA256(session token, "csrf"), hex."""
    return hmac.new(session_token.encode(), b"csrf", hashlib.sha256).hexdigest()


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url).netloc
    except ValueError:
        return None


def same_origin(headers: Mapping[str, str]) -> bool:
    """False when the browser says the request comes from another site.

    ``headers`` is looked up by lower-case name (Starlette's headers are
    case-insensitive). ``Origin`` decides when it names a site; pages send
    ``Referrer-Policy: no-referrer``, so browsers send ``Origin: null`` (or
    nothing) with our own forms, and no ``Referer``: then a ``Referer`` that
    names another site refuses, and no header at all says nothing either way
    (the CSRF token decides).
    """
    host = headers.get("host")
    origin = headers.get("origin")
    if origin and origin != "null":
        return _netloc(origin) == host
    referer = headers.get("referer")
    if referer:
        return _netloc(referer) == host
    return True


def token_ok(session_token: str | None, given: str) -> bool:
    """``given`` is the form token of ``session_token`` (capped, constant-time)."""
    if not session_token or not isinstance(given, str) or len(given) > MAX_TOKEN:
        return False
    return hmac.compare_digest(csrf_token(session_token).encode(), given.encode())


def csrf_ok(session_token: str | None, given: str, headers: Mapping[str, str]) -> bool:
    """Same origin, and ``given`` is the form token of the request's session."""
    return same_origin(headers) and token_ok(session_token, given)
