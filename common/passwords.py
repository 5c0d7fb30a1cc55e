"""Password hashing, one-time passwords and name rules (pure; no I/O).

The one implementation behind the node's team accounts
(``node/team/passwords.py``) and central's staff accounts
(``central/passwords.py``); each side keeps its own minimum length, name
punctuation and exception classes, and passes them in.

Hashes use scrypt, a memory-hard KDF (RFC 7914), with parameters stored next
to the hash so that they can be raised later without breaking old hashes::

    scrypt$16384$8$1$<salt, base64>$<32-byte hash, base64>

n=2**14, r=8 costs 16 MiB and roughly 50 ms per hash on a Raspberry Pi 4:
cheap for one login, expensive for anyone guessing offline. A password longer
than :data:`MAX_PASSWORD` is never hashed: it cannot be set, and verifying it
is refused before any work.

>>> encoded = hash_password("correct horse battery", n=2**10)
>>> encoded.startswith("scrypt$1024$8$1$")
True
>>> verify_password("correct horse battery", encoded), verify_password("wrong", encoded)
(True, False)
>>> verify_password("x" * (MAX_PASSWORD + 1), hash_password("x" * (MAX_PASSWORD + 1), n=2**10))
False
>>> normalise_name("  Fatma   Yılmaz ")
'Fatma Yılmaz'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import unicodedata
from typing import Final

from .heap import large_allocations_apart

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
HASH_BYTES: Final = 32
SALT_BYTES: Final = 16
#: Upper bounds on stored parameters: a tampered row must not make us allocate gigabytes.
MAX_N: Final = 2**20
MAX_R: Final = 32
MAX_P: Final = 16

#: Long enough for any passphrase; bounds the work one request can cause.
MAX_PASSWORD: Final = 256
MAX_NAME: Final = 40

#: No 0/O, 1/I/L: one-time passwords are read off a terminal and typed by hand.
OTP_ALPHABET: Final = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
OTP_GROUPS: Final = 4
OTP_GROUP_LEN: Final = 4


class InvalidName(ValueError):
    """A name is empty, too long or has characters we do not allow."""


class WeakPassword(ValueError):
    """A new password is too short, too long, or the same as the old one."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    large_allocations_apart()  # its 16 MiB go back after each hash
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=256 * r * n + 1024 * 1024, dklen=HASH_BYTES)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R,
                  p: int = SCRYPT_P, salt: bytes | None = None) -> str:
    """The stored form of ``password``: ``scrypt$n$r$p$salt$hash``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, n, r, p)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; compared in constant time.

    A password longer than :data:`MAX_PASSWORD` (or not a string) and a
    malformed or out-of-bounds stored hash never match, and never raise.
    """
    if not isinstance(password, str) or len(password) > MAX_PASSWORD:
        return False
    try:
        scheme, n_s, r_s, p_s, salt_s, hash_s = encoded.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(hash_s, validate=True)
    except (ValueError, AttributeError):
        return False
    if (scheme != "scrypt" or not 2 <= n <= MAX_N or n & (n - 1) or not 1 <= r <= MAX_R
            or not 1 <= p <= MAX_P or len(expected) != HASH_BYTES):
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


def verify_login(password: str, stored: str | None, *, one_time: bool, dummy: str) -> bool:
    """Check a login with exactly one scrypt run, whoever the name belongs to.

    ``stored`` is the account's hash (None: no such account: ``dummy`` is
    hashed instead, with the same parameters); ``one_time`` says the account
    still has its one-time password, which is compared in its normal form
    (:func:`normalise_one_time_password`) instead of as typed - not both, so
    that such an account takes no longer than any other. A password that is
    too long is hashed as an empty one (and fails), so the answer takes as
    long as any other (issue 17).

    >>> dummy = dummy_hash(n=2**10)
    >>> stored = hash_password("KQ7P-3MFA-X9TD-H2WE", n=2**10)
    >>> verify_login("kq7p 3mfa x9td h2we", stored, one_time=True, dummy=dummy)
    True
    >>> verify_login("kq7p 3mfa x9td h2we", None, one_time=False, dummy=dummy)
    False
    """
    usable = isinstance(password, str) and len(password) <= MAX_PASSWORD
    candidate = password if usable else ""
    if one_time:
        candidate = normalise_one_time_password(candidate)
    target = stored if usable and stored is not None else dummy
    matches = verify_password(candidate, target)
    return matches and usable and stored is not None


def dummy_hash(n: int = SCRYPT_N) -> str:
    """A hash of a random password, verified for unknown names so timing tells nothing."""
    return hash_password(secrets.token_urlsafe(16), n=n)


def new_one_time_password() -> str:
    """Four groups of four unambiguous characters, e.g. ``KQ7P-3MFA-X9TD-H2WE`` (79 bits)."""
    groups = ("".join(secrets.choice(OTP_ALPHABET) for _ in range(OTP_GROUP_LEN))
              for _ in range(OTP_GROUPS))
    return "-".join(groups)


def normalise_one_time_password(text: str) -> str:
    """Accept what people type: lower case, spaces, with or without dashes.

    >>> normalise_one_time_password(" kq7p 3mfa-x9td h2we ")
    'KQ7P-3MFA-X9TD-H2WE'
    """
    chars = "".join(ch for ch in text.upper()[:64] if ch.isascii() and ch.isalnum())
    if len(chars) != OTP_GROUPS * OTP_GROUP_LEN:
        return text
    return "-".join(chars[i:i + OTP_GROUP_LEN] for i in range(0, len(chars), OTP_GROUP_LEN))


def normalise_name(name: str, *, punctuation: str = " -", key_must_fit: bool = False,
                   error: type[Exception] = InvalidName) -> str:
    """A valid name (NFC, single spaces), or ``error``.

    1–40 characters: letters (any script), digits and ``punctuation``. With
    ``key_must_fit`` the case-folded key must fit as well (casefold can
    lengthen a name: ß → ss).

    >>> normalise_name("A. de Vries", punctuation=" -.")
    'A. de Vries'
    >>> normalise_name("A. de Vries")
    Traceback (most recent call last):
    ...
    common.passwords.InvalidName: a name has only letters, digits, spaces and hyphens (not '.')
    """
    if not isinstance(name, str) or len(name) > MAX_NAME * 4:
        raise error(f"a name has at most {MAX_NAME} characters")
    cleaned = " ".join(unicodedata.normalize("NFC", name).split())
    if not cleaned:
        raise error("a name must not be empty")
    if len(cleaned) > MAX_NAME or (key_must_fit and len(cleaned.casefold()) > MAX_NAME):
        raise error(f"a name has at most {MAX_NAME} characters")
    bad = sorted({ch for ch in cleaned
                  if not (ch.isalpha() or ch.isdecimal() or ch in punctuation)})
    if bad:
        allowed = "spaces, hyphens and dots" if "." in punctuation else "spaces and hyphens"
        raise error(f"a name has only letters, digits, {allowed} (not {''.join(bad)!r})")
    return cleaned


def check_new_password(new: str, old: str = "", *, min_length: int,
                       error: type[Exception] = WeakPassword) -> None:
    """Raise ``error`` unless ``new`` is acceptable as a new password.

    At least ``min_length`` and at most :data:`MAX_PASSWORD` characters, no
    leading or trailing space or control character, and not ``old``.
    """
    if not isinstance(new, str) or len(new) < min_length:
        raise error(f"a password has at least {min_length} characters")
    if len(new) > MAX_PASSWORD:
        raise error(f"a password has at most {MAX_PASSWORD} characters")
    if new.strip() != new or not new.isprintable():
        raise error("a password must not start or end with a space or hold control "
                    "characters")
    if old and hmac.compare_digest(new.encode(), old.encode()):
        raise error("the new password must differ from the old one")
