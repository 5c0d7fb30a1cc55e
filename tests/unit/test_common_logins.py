"""common/logins.py: one idea of a refused login and of a session token's hash for the
node's team and central's staff (issue 16: the two copies had started to drift)."""

from __future__ import annotations

import doctest
from dataclasses import dataclass

import pytest
from fastapi import HTTPException

import central.staff.accounts as staff
import node.team.accounts as team_accounts
import node.team.errors as team
from central.errors import CentralError
from common import logins
from node.errors import NodeError


def test_doctests() -> None:
    assert doctest.testmod(logins).failed == 0


@pytest.mark.parametrize(("side", "root"), [(team, NodeError), (staff, CentralError)])
def test_both_sides_raise_the_shared_refusals_under_their_own_root(side: object,
                                                                    root: type) -> None:
    locked = side.LockedOut("too many", 123)  # type: ignore[attr-defined]
    throttled = side.Throttled("slow down", 2.5)  # type: ignore[attr-defined]
    assert isinstance(locked, logins.LockedOut) and isinstance(locked, root)
    assert isinstance(throttled, logins.Throttled) and isinstance(throttled, root)
    assert isinstance(locked, logins.LoginFailed) and isinstance(throttled, logins.LoginFailed)
    assert (locked.until, throttled.retry_after, str(locked)) == (123, 2.5, "too many")


def test_one_token_hash() -> None:
    assert team_accounts.token_hash is staff.token_hash is logins.token_hash
    assert len(logins.token_hash("t" * 43)) == 64


@dataclass(frozen=True)
class _Member:
    must_change: bool


def test_the_login_gate() -> None:
    urls = {"login_url": "/staff/login", "choose_url": "/staff/password"}
    with pytest.raises(HTTPException) as caught:
        logins.require_login(None, "/staff/reports", **urls)
    assert (caught.value.status_code, caught.value.headers) == (303, {"Location": "/staff/login"})
    fresh = _Member(must_change=True)
    with pytest.raises(HTTPException) as caught:
        logins.require_login(fresh, "/staff/reports", **urls)
    assert caught.value.headers == {"Location": "/staff/password"}
    assert logins.require_login(fresh, "/staff/password", **urls) is fresh
    done = _Member(must_change=False)
    assert logins.require_login(done, "/staff/reports", **urls) is done
