"""Team accounts (node/team): hashing, one-time passwords, lockout, sessions, audit.

Pure and fast: a real SQLite file in a temporary directory, a fake clock,
and a cheaper scrypt cost (``scrypt_n=2**10``) except where the stored
format itself is checked.
"""

from __future__ import annotations

import base64
import doctest
import hashlib
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import common.passwords as common_passwords
from node.errors import NodeError
from node.team import (
    InvalidName,
    LockedOut,
    LoginFailed,
    NameTaken,
    TeamAccounts,
    TeamError,
    Throttled,
    UnknownMember,
    WeakPassword,
    lockout,
    passwords,
)
from node.team import accounts as accounts_module
from node.team.accounts import SESSION_IDLE_MS, SESSION_MAX_MS, token_hash
from node.team.passwords import hash_password, normalise_name, verify_password

pytestmark = pytest.mark.timeout(60)

OTP = re.compile(r"^[A-HJKMNP-Z2-9]{4}(?:-[A-HJKMNP-Z2-9]{4}){3}$")
NEW = "lange zin van woorden"
MIN = 60_000  # the team's times are Unix milliseconds
HOUR = 60 * MIN
START = 1_800_000_000_000


class Clock:
    """A clock the test moves by hand (milliseconds)."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def team(tmp_path: Path, clock: Clock) -> Iterator[TeamAccounts]:
    with TeamAccounts(tmp_path / "team.db", clock, scrypt_n=2**10) as t:
        yield t


def member_with_password(team: TeamAccounts, name: str = "Fatma") -> str:
    otp = team.add(name)
    team.set_password(name, otp, NEW)
    return NEW


# --- hashing ---------------------------------------------------------------------------


def test_hash_format_is_scrypt_with_its_parameters() -> None:
    encoded = hash_password("correct horse battery")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt, validate=True)) == 16
    raw = base64.b64decode(digest, validate=True)
    assert len(raw) == 32
    assert raw == hashlib.scrypt(b"correct horse battery", salt=base64.b64decode(salt),
                                 n=16384, r=8, p=1, dklen=32, maxmem=64 * 1024 * 1024)
    assert verify_password("correct horse battery", encoded)
    assert not verify_password("correct horse batterY", encoded)


def test_each_hash_has_its_own_salt() -> None:
    a, b = hash_password("same password", n=2**10), hash_password("same password", n=2**10)
    assert a != b and verify_password("same password", a) and verify_password("same password", b)


@pytest.mark.parametrize("stored", [
    "", "scrypt", "bcrypt$1024$8$1$AAAA$AAAA",
    "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
    "scrypt$1024$8$1$not base64$AAAA", "scrypt$1024$8$1$AAAA$AAAA",
    "scrypt$2097152$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=",
    "scrypt$1024$999$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "=",
])
def test_a_malformed_or_hostile_stored_hash_never_matches(stored: str) -> None:
    assert verify_password("anything at all", stored) is False


def test_the_database_holds_hashes_only(team: TeamAccounts, tmp_path: Path) -> None:
    otp = team.add("Fatma")
    team.set_password("Fatma", otp, NEW)
    token = team.create_session("Fatma")
    raw = (tmp_path / "team.db").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("team.db-*"))
    for secret in (otp, NEW, token):
        assert secret.encode() not in raw
    with sqlite3.connect(tmp_path / "team.db") as conn:
        (pw_hash,) = conn.execute("SELECT pw_hash FROM members").fetchone()
        (stored,) = conn.execute("SELECT token_hash FROM sessions").fetchone()
    assert pw_hash.startswith("scrypt$1024$8$1$")
    assert stored == hashlib.sha256(token.encode()).hexdigest() == token_hash(token)


# --- accounts ----------------------------------------------------------------------------


def test_one_time_password_is_four_groups_of_unambiguous_characters(
        team: TeamAccounts) -> None:
    codes = [team.add(f"Lid {i}") for i in range(20)]
    assert all(OTP.fullmatch(c) for c in codes), codes
    assert not set("".join(codes)) & set("01OIL")
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("name, clean", [
    ("Fatma", "Fatma"), ("  Jan   de  Vries ", "Jan de Vries"), ("Anne-Marie 2", "Anne-Marie 2"),
    ("Yılmaz", "Yılmaz"), ("محمد", "محمد"), ("x" * 40, "x" * 40), ("tab\tname", "tab name"),
])
def test_valid_names(name: str, clean: str) -> None:
    assert normalise_name(name) == clean


@pytest.mark.parametrize("name", ["", "   ", "x" * 41, "jan_de_vries", "<script>", "a@b",
                                  "nul\x00name", "emoji 🙂"])
def test_invalid_names(team: TeamAccounts, name: str) -> None:
    with pytest.raises(InvalidName):
        team.add(name)


def test_names_are_unique_ignoring_case(team: TeamAccounts) -> None:
    team.add("Fatma")
    with pytest.raises(NameTaken):
        team.add("FATMA")
    assert [m.name for m in team.list()] == ["Fatma"]


def test_list_and_remove(team: TeamAccounts, clock: Clock) -> None:
    team.add("Piet")
    clock.advance(5)
    team.add("Anna")
    members = team.list()
    assert [m.name for m in members] == ["Anna", "Piet"]
    assert all(m.must_change and m.last_login is None and m.locked_until is None
               for m in members)
    assert members[0].created == clock.now
    team.remove("piet")
    assert [m.name for m in team.list()] == ["Anna"]
    with pytest.raises(UnknownMember):
        team.remove("Piet")
    with pytest.raises(UnknownMember):
        team.remove("not_a name!")


def test_errors_share_one_root_under_node_error() -> None:
    for cls in (InvalidName, NameTaken, UnknownMember, WeakPassword, LoginFailed, LockedOut,
                Throttled):
        assert issubclass(cls, TeamError) and issubclass(cls, NodeError)
        assert cls.__doc__


# --- one-time password and password change -------------------------------------------------


def test_one_time_password_logs_in_but_forces_a_new_password(team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    member = team.verify("Fatma", otp, "10.0.0.2")
    assert member.must_change and member.last_login is not None
    with pytest.raises(WeakPassword):
        team.set_password("Fatma", otp, "short")
    with pytest.raises(WeakPassword):
        team.set_password("Fatma", otp, otp)
    with pytest.raises(WeakPassword):
        team.set_password("Fatma", otp, " spaces around ")
    with pytest.raises(LoginFailed):
        team.set_password("Fatma", "not the otp at all", NEW)
    team.set_password("Fatma", otp, NEW)
    assert team.verify("fatma", NEW, "10.0.0.2").must_change is False
    with pytest.raises(LoginFailed):
        team.verify("Fatma", otp, "10.0.0.2")


def test_one_time_password_may_be_typed_loosely(team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    typed = otp.lower().replace("-", " ")
    assert team.verify("Fatma", typed, "10.0.0.2").must_change
    team.set_password("Fatma", typed, NEW)
    # A chosen password is exact: case matters.
    with pytest.raises(LoginFailed):
        team.verify("Fatma", NEW.upper(), "10.0.0.2")


def test_a_new_password_ends_every_session(team: TeamAccounts) -> None:
    otp = team.add("Fatma")
    token = team.create_session("Fatma")
    team.set_password("Fatma", otp, NEW)
    assert team.session(token) is None


def test_unknown_name_costs_a_hash_like_a_known_one(team: TeamAccounts,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    member_with_password(team)
    calls: list[str] = []
    real = common_passwords.verify_password  # verify_login's one scrypt run (issue 17)

    def counting(password: str, stored: str) -> bool:
        calls.append(stored)
        return real(password, stored)

    monkeypatch.setattr(common_passwords, "verify_password", counting)
    team.add("Otp Only")
    for name in ("Fatma", "Nobody", "bad_name!", "Otp Only"):
        with pytest.raises(LoginFailed):
            team.verify(name, "wrong password here", "10.0.0.3")
    assert len(calls) == 4
    assert all(c.startswith("scrypt$1024$8$1$") for c in calls)


# --- lockout and throttling -----------------------------------------------------------------


def test_five_wrong_passwords_lock_the_name_for_15_minutes(team: TeamAccounts,
                                                            clock: Clock) -> None:
    member_with_password(team)
    for _ in range(4):
        with pytest.raises(LoginFailed) as info:
            team.verify("Fatma", "wrong password!", "10.0.0.4")
        assert not isinstance(info.value, LockedOut)
    with pytest.raises(LockedOut) as locked:
        team.verify("Fatma", "wrong password!", "10.0.0.4")
    assert locked.value.until == clock.now + 15 * MIN
    # Locked means locked: the right password does not help, from any address.
    with pytest.raises(LockedOut):
        team.verify("Fatma", NEW, "10.0.0.5")
    assert team.list()[0].locked_until == clock.now + 15 * MIN
    clock.advance(15 * MIN + 1)
    assert team.verify("Fatma", NEW, "10.0.0.4").locked_until is None


def test_lockouts_grow_exponentially_and_a_good_login_resets_them(team: TeamAccounts,
                                                                  clock: Clock) -> None:
    member_with_password(team)
    for expected in (15, 30, 60, 120):
        for _ in range(5):
            with pytest.raises(LoginFailed):
                team.verify("Fatma", "wrong password!", f"10.0.1.{expected}")
        member = team.member("Fatma")
        assert member is not None and member.locked_until == clock.now + expected * MIN
        clock.advance(expected * MIN + 1)
    team.verify("Fatma", NEW, "10.0.0.9")
    for _ in range(5):
        with pytest.raises(LoginFailed):
            team.verify("Fatma", "wrong password!", "10.0.0.9")
    member = team.member("Fatma")
    assert member is not None and member.locked_until == clock.now + 15 * MIN


def test_lockout_is_capped_at_a_day() -> None:
    assert lockout.lockout_ms(1) == 15 * MIN
    assert lockout.lockout_ms(50) == 24 * HOUR


def test_unknown_names_lock_the_same_way(team: TeamAccounts) -> None:
    for _ in range(4):
        with pytest.raises(LoginFailed):
            team.verify("Nobody", "wrong password!", "10.0.0.6")
    with pytest.raises(LockedOut):
        team.verify("Nobody", "wrong password!", "10.0.0.6")


def test_twenty_failures_from_one_address_throttle_it(team: TeamAccounts,
                                                      clock: Clock) -> None:
    member_with_password(team)
    for i in range(20):
        with pytest.raises(LoginFailed):
            team.verify(f"Guess {i}", "wrong password!", "10.0.0.66")
        clock.advance(1000)
    with pytest.raises(Throttled) as info:
        team.verify("Fatma", NEW, "10.0.0.66")
    assert 0 < info.value.retry_after <= 10 * 60  # seconds: a Retry-After
    # Another device is not affected.
    assert team.verify("Fatma", NEW, "10.0.0.67").name == "Fatma"
    clock.advance(10 * MIN)
    assert team.verify("Fatma", NEW, "10.0.0.66").name == "Fatma"


# --- sessions --------------------------------------------------------------------------------


def test_session_token_is_random_and_finds_its_member(team: TeamAccounts) -> None:
    member_with_password(team)
    a, b = team.create_session("Fatma"), team.create_session("fatma")
    assert a != b and len(a) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", a)
    member = team.session(a)
    assert member is not None and member.name == "Fatma"
    assert team.session("") is None and team.session(None) is None
    assert team.session("x" * 1000) is None and team.session(a + "x") is None
    with pytest.raises(UnknownMember):
        team.create_session("Nobody")


def test_session_expiry_slides_for_12_hours(team: TeamAccounts, clock: Clock) -> None:
    member_with_password(team)
    token = team.create_session("Fatma")
    clock.advance(SESSION_IDLE_MS - 1)
    assert team.session(token) is not None
    clock.advance(SESSION_IDLE_MS - 1)  # 12 h after the last use, not after login
    assert team.session(token) is not None
    clock.advance(SESSION_IDLE_MS)
    assert team.session(token) is None


def test_a_check_without_touch_does_not_extend_the_session(team: TeamAccounts,
                                                           clock: Clock) -> None:
    member_with_password(team)
    token = team.create_session("Fatma")
    clock.advance(SESSION_IDLE_MS - 1)
    assert team.session(token, touch=False) is not None
    clock.advance(2)
    assert team.session(token) is None


def test_session_ends_after_7_days_however_busy(team: TeamAccounts, clock: Clock) -> None:
    member_with_password(team)
    token = team.create_session("Fatma")
    while clock.now + 11 * HOUR < START + SESSION_MAX_MS:
        clock.advance(11 * HOUR)
        assert team.session(token) is not None
    clock.advance(11 * HOUR)
    assert team.session(token) is None


def test_logout_and_removal_end_sessions(team: TeamAccounts) -> None:
    member_with_password(team)
    member_with_password(team, "Piet")
    a, b = team.create_session("Fatma"), team.create_session("Piet")
    team.end_session(a)
    team.end_session(a)
    team.end_session(None)
    assert team.session(a) is None
    team.remove("Piet")
    assert team.session(b) is None


# --- audit ------------------------------------------------------------------------------------


def test_audit_records_who_what_when(team: TeamAccounts, clock: Clock) -> None:
    otp = team.add("Fatma")
    member = team.verify("Fatma", otp, "10.0.0.8")
    clock.advance(3)
    team.record(member, "ack.on_my_way", "0193… speeltuin")
    team.record("Piet", "hide", "0193…")
    with pytest.raises(LoginFailed):
        team.verify("Fatma", "wrong password!", "10.0.0.9")
    log = team.audit_log(10)
    assert [(e.member, e.action) for e in log] == [
        ("Fatma", "login.failed"), ("Piet", "hide"), ("Fatma", "ack.on_my_way"),
        ("Fatma", "login"), ("(cli)", "account.add")]
    assert log[2].at == clock.now and log[2].detail == "0193… speeltuin"
    assert "10.0.0.9" in log[0].detail
    assert len(team.audit_log(2)) == 2


# --- the file ---------------------------------------------------------------------------------


def test_file_is_private_wal_and_migrated_once(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "data" / "team.db"
    with TeamAccounts(path, clock, scrypt_n=2**10) as team:
        team.add("Fatma")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with TeamAccounts(path, clock, scrypt_n=2**10) as again:
        assert [m.name for m in again.list()] == ["Fatma"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        names = [r[0] for r in conn.execute("SELECT name FROM _migrations")]
        assert names == ["001_accounts", "002_times_ms"]


def test_close_is_idempotent(tmp_path: Path) -> None:
    team = TeamAccounts(tmp_path / "team.db", scrypt_n=2**10)
    team.close()
    team.close()
    with pytest.raises(sqlite3.ProgrammingError):
        team.list()


def test_a_second_process_may_write_while_the_node_holds_the_file(tmp_path: Path) -> None:
    """The CLI adds a member while the node has the file open (and briefly locked)."""
    path = tmp_path / "team.db"
    with TeamAccounts(path, scrypt_n=2**10) as node:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        done: list[str] = []

        def cli() -> None:
            with TeamAccounts(path, scrypt_n=2**10) as other:
                done.append(other.add("Piet"))

        thread = threading.Thread(target=cli)
        thread.start()
        time.sleep(0.3)
        assert not done  # waiting for the lock (busy_timeout), not failing
        blocker.execute("COMMIT")
        blocker.close()
        thread.join(10)
        assert done and node.member("piet") is not None


def test_module_examples() -> None:
    for module in (accounts_module, passwords, lockout):
        assert doctest.testmod(module).failed == 0

