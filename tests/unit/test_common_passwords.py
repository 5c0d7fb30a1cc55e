"""common.passwords: the one scrypt implementation behind node and central.

Before issue 16 the node and central each had a copy; only central's refused
an over-long password before hashing. These tests run every rule against both
sides' modules, so a copy that drifts again fails here.
"""

from __future__ import annotations

import doctest
import time
from pathlib import Path
from types import ModuleType

import pytest

import central.passwords as central_passwords
import node.team.passwords as node_passwords
from common import passwords
from node.team import LoginFailed, TeamAccounts

SIDES = [pytest.param(node_passwords, id="node"), pytest.param(central_passwords, id="central")]

#: Made by the node's own copy (node/team/passwords.py before issue 16) with
#: n=2**10 and salt bytes(range(16)), for "correct horse battery staple".
OLD_NODE_HASH = ("scrypt$1024$8$1$AAECAwQFBgcICQoLDA0ODw==$"
                 "mp90zEQd5XGhjEv4WArVH4Z0XRSzkGWtJK2S/AXJlRU=")
#: Made by central's own copy with n=2**11, r=4 and the salt reversed, for
#: "Sterk wachtwoord 2024!".
OLD_CENTRAL_HASH = ("scrypt$2048$4$1$Dw4NDAsKCQgHBgUEAwIBAA==$"
                    "Fpygm9/JoI/4IVBCjSZQu7kl9gTr7fjSV4BmMNZ8RuE=")


def test_doctests() -> None:
    for module in (passwords, node_passwords, central_passwords):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_both_sides_use_the_one_implementation() -> None:
    import central.staff.accounts as staff_accounts
    import node.team.accounts as team_accounts

    for name in ("hash_password", "verify_password"):
        assert getattr(node_passwords, name) is getattr(passwords, name)
        assert getattr(central_passwords, name) is getattr(passwords, name)
    # The account stores take the rest from common.passwords itself.
    for name in ("hash_password", "dummy_hash", "new_one_time_password", "verify_login"):
        assert getattr(team_accounts, name) is getattr(passwords, name)
        assert getattr(staff_accounts, name) is getattr(passwords, name)
    assert team_accounts.normalise_one_time_password is passwords.normalise_one_time_password


@pytest.mark.parametrize("side", SIDES)
def test_hashes_made_by_the_old_copies_still_verify(side: ModuleType) -> None:
    assert side.verify_password("correct horse battery staple", OLD_NODE_HASH)
    assert side.verify_password("Sterk wachtwoord 2024!", OLD_CENTRAL_HASH)
    assert not side.verify_password("correct horse battery stapler", OLD_NODE_HASH)
    assert not side.verify_password("Sterk wachtwoord 2024", OLD_CENTRAL_HASH)


def test_the_stored_format_is_unchanged() -> None:
    salt = bytes(range(16))
    assert passwords.hash_password("correct horse battery staple", n=2**10,
                                   salt=salt) == OLD_NODE_HASH
    assert passwords.hash_password("Sterk wachtwoord 2024!", n=2**11, r=4,
                                   salt=salt[::-1]) == OLD_CENTRAL_HASH


@pytest.mark.parametrize("side", SIDES)
def test_an_over_long_password_is_refused_the_same_way_on_both_sides(side: ModuleType) -> None:
    limit = passwords.MAX_PASSWORD
    assert limit == 256
    at_limit, over = "p" * limit, "p" * (limit + 1)
    assert side.verify_password(at_limit, side.hash_password(at_limit, n=2**10))
    # Even the hash of the over-long password itself does not let it in ...
    assert not side.verify_password(over, side.hash_password(over, n=2**10))
    # ... and it is refused before any hashing: a megabyte costs nothing.
    huge = "p" * 1_000_000
    start = time.perf_counter()
    for _ in range(20):
        assert not side.verify_password(huge, passwords.dummy_hash(n=2**1))
    assert time.perf_counter() - start < 1.0
    # It cannot be chosen either, and the error is the side's own.
    with pytest.raises(side.WeakPassword, match="at most 256"):
        side.check_new_password(over)


@pytest.mark.parametrize("side", SIDES)
def test_weak_password_rules_are_the_same_apart_from_the_minimum(side: ModuleType) -> None:
    minimum = side.MIN_PASSWORD
    side.check_new_password("a" * minimum)
    for bad in ("a" * (minimum - 1), " " + "a" * minimum, "a" * minimum + "\n",
                "abc\x00defghijklm"):
        with pytest.raises(side.WeakPassword):
            side.check_new_password(bad)
    with pytest.raises(side.WeakPassword, match="differ"):
        side.check_new_password("b" * minimum, "b" * minimum)
    assert (node_passwords.MIN_PASSWORD, central_passwords.MIN_PASSWORD) == (10, 12)


@pytest.mark.parametrize("encoded", [
    "not a hash", "", "scrypt$99999999$8$1$AAAA$AAAA", "scrypt$1000$8$1$AAAA$AAAA",
    "bcrypt$1024$8$1$AAECAwQFBgcICQoLDA0ODw==$mp90zEQd5XGhjEv4WArVH4Z0XRSzkGWtJK2S/AXJlRU=",
    "scrypt$1024$8$1$AAECAwQFBgcICQoLDA0ODw==$AAAA", "scrypt$1024$99$1$AA==$AA==",
])
def test_malformed_or_out_of_bounds_hashes_never_match_and_never_raise(encoded: str) -> None:
    assert not passwords.verify_password("x", encoded)


def test_names_keep_each_sides_rules() -> None:
    assert central_passwords.normalise_name("A. de Vries") == "A. de Vries"
    with pytest.raises(node_passwords.InvalidName):
        node_passwords.normalise_name("A. de Vries")
    # A staff name's case-folded key must fit as well (ß → ss); a team name's need not.
    name = "ß" * 40
    assert node_passwords.name_key(name) == "ss" * 40
    with pytest.raises(central_passwords.InvalidName):
        central_passwords.normalise_name(name)
    for side in (node_passwords, central_passwords):
        for bad in ("", "   ", "x" * 41, "<script>", "a" * 10_000):
            with pytest.raises(side.InvalidName):
                side.normalise_name(bad)


def test_team_accounts_refuse_an_over_long_password_at_login(tmp_path: Path) -> None:
    with TeamAccounts(tmp_path / "team.db", scrypt_n=2**10) as team:
        otp = team.add("Fatma")
        team.set_password("Fatma", otp, "p" * 256)
        assert team.verify("Fatma", "p" * 256, "10.0.0.2").name == "Fatma"
        with pytest.raises(LoginFailed):
            team.verify("Fatma", "p" * 257, "10.0.0.2")
