"""team.db keeps times as integer Unix milliseconds, like central (issue 16).

A file made by the old schema (REAL seconds) with real rows is converted by
``002_times_ms`` at the first open: sessions still valid, lockouts still in
force, the audit log's ids kept. And no writer may store seconds any more:
every time column of every table is checked after every writer ran.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.logins import token_hash
from common.migrations import migrate
from common.passwords import hash_password
from node.team import LockedOut, TeamAccounts, Throttled
from node.team.schema import MIGRATIONS

pytestmark = pytest.mark.timeout(60)

NOW_S = 1_800_000_000.25
NOW_MS = 1_800_000_000_250
PASSWORD = "lange zin van woorden"
TOKEN = "a-session-token-from-before-the-upgrade"
#: Every time column of team.db: (table, column).
TIME_COLUMNS = [("members", "created"), ("members", "last_login"), ("sessions", "created"),
                ("sessions", "last_seen"), ("name_failures", "locked_until"),
                ("name_failures", "last_failure"), ("client_failures", "at"), ("audit", "at")]


def old_team_db(path: Path) -> None:
    """A team.db as the node wrote it before 002_times_ms: REAL seconds."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    assert migrate(conn, MIGRATIONS[:1]) == ["001_accounts"]
    pw = hash_password(PASSWORD, n=2**10)
    conn.executemany(
        "INSERT INTO members (key, name, pw_hash, must_change, created, last_login) "
        "VALUES (?, ?, ?, 0, ?, ?)",
        [("fatma", "Fatma", pw, NOW_S - 86400.5, NOW_S - 3600.125),
         ("piet", "Piet", pw, NOW_S - 7200.0, None)])
    conn.executemany(
        "INSERT INTO sessions (token_hash, member_key, created, last_seen) VALUES (?, ?, ?, ?)",
        [(token_hash(TOKEN), "fatma", NOW_S - 3600.125, NOW_S - 1800.5),
         (token_hash("piet's"), "piet", NOW_S - 7000.0, NOW_S - 7000.0)])
    # Piet is locked for ten more minutes; "nobody" failed twice and is not locked.
    conn.executemany(
        "INSERT INTO name_failures (key, failures, lockouts, locked_until, last_failure) "
        "VALUES (?, ?, ?, ?, ?)",
        [("piet", 0, 1, NOW_S + 600.5, NOW_S - 300.0), ("nobody", 2, 0, None, NOW_S - 60.0)])
    # 20 failures from one address within the last 10 minutes: it is throttled.
    conn.executemany("INSERT INTO client_failures (client, at) VALUES (?, ?)",
                     [("10.0.0.66", NOW_S - 500 + i) for i in range(20)])
    conn.executemany("INSERT INTO audit (id, at, member, action, detail) VALUES (?, ?, ?, ?, ?)",
                     [(5, NOW_S - 3600.125, "Fatma", "login", "client 10.0.0.7"),
                      (9, NOW_S - 300.0, "Piet", "login.failed", "client 10.0.0.8")])
    conn.execute("UPDATE sqlite_sequence SET seq = 12 WHERE name = 'audit'")  # 10-12 trimmed
    conn.close()


def test_an_old_team_db_is_converted_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "team.db"
    old_team_db(path)
    with TeamAccounts(path, lambda: NOW_MS, scrypt_n=2**10) as team:
        # The session from before the upgrade is still valid.
        member = team.session(TOKEN, touch=False)
        assert member is not None and member.name == "Fatma"
        assert member.created == NOW_MS - 86_400_500
        assert member.last_login == NOW_MS - 3_600_125
        # Piet's lockout is still in force, until the same moment, in ms.
        piet = team.member("Piet")
        assert piet is not None and piet.locked_until == NOW_MS + 600_500
        with pytest.raises(LockedOut) as locked:
            team.verify("Piet", PASSWORD, "10.0.0.9")
        assert locked.value.until == NOW_MS + 600_500
        # The throttled address still waits (the rest of its 10 minutes, in seconds).
        with pytest.raises(Throttled) as throttled:
            team.verify("Fatma", PASSWORD, "10.0.0.66")
        assert throttled.value.retry_after == pytest.approx(100.0)
        # The audit log keeps its lines and ids; a trimmed id is not given out again.
        assert [(e.id, e.at) for e in team.audit_log(10)][-2:] == [
            (9, NOW_MS - 300_000), (5, NOW_MS - 3_600_125)]
        team.record("Fatma", "hide", "x")
        assert team.audit_log(1)[0].id > 12
        # Sessions still belong to their member: removing Piet ends Piet's session.
        team.remove("Piet")
        assert team.session("piet's") is None
        assert team.session(TOKEN) is not None
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY rowid")] == [
            "001_accounts", "002_times_ms"]
        for table, column in TIME_COLUMNS:
            types = {r[2] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] == column}
            assert types == {"INTEGER"}, (table, column)
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = "
                                              "'index' AND name LIKE 'idx_%'")}
        assert indexes == {"idx_sessions_member", "idx_client_failures"}
        assert not {r[0] for r in conn.execute("SELECT name FROM sqlite_master")
                    if r[0].endswith("_old")}
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_failing_conversion_leaves_the_old_file_as_it_was(tmp_path: Path) -> None:
    """002 is one transaction: a row it cannot convert stops it and nothing changes."""
    path = tmp_path / "team.db"
    old_team_db(path)
    with sqlite3.connect(path, isolation_level=None) as conn:
        # A session whose member is gone (written with foreign_keys off): the
        # conversion's foreign-key check refuses it.
        conn.execute("INSERT INTO sessions VALUES ('orphan', 'ghost', 1.0, 1.0)")
        before = conn.execute("SELECT * FROM sessions ORDER BY token_hash").fetchall()
    with pytest.raises(sqlite3.IntegrityError, match=r"FOREIGN KEY|broken references"):
        TeamAccounts(path, lambda: NOW_MS, scrypt_n=2**10)
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM _migrations")] == ["001_accounts"]
        assert conn.execute("SELECT * FROM sessions ORDER BY token_hash").fetchall() == before
        types = {r[2] for r in conn.execute("PRAGMA table_info(members)") if r[1] == "created"}
        assert types == {"REAL"}


def test_no_writer_stores_seconds(tmp_path: Path) -> None:
    """Run every writer of TeamAccounts, then look at every time column: all
    integers of milliseconds (a time in seconds or a float would fail)."""
    now = [NOW_MS]
    with TeamAccounts(tmp_path / "team.db", lambda: now[0], scrypt_n=2**10) as team:
        otp = team.add("Fatma")                                   # members.created, audit
        team.add("Piet")
        team.verify("Fatma", otp, "10.0.0.1")                     # members.last_login
        team.set_password("Fatma", otp, PASSWORD)
        token = team.create_session("Fatma")                      # sessions.created/last_seen
        now[0] += 120_000
        assert team.session(token) is not None                    # sessions.last_seen (touch)
        for _ in range(5):                                        # name_failures, client_failures
            with pytest.raises(Exception):
                team.verify("Piet", "wrong password!", "10.0.0.2")
        with pytest.raises(Exception):
            team.set_password("Fatma", "not the password", "another long one")
        team.record("Fatma", "hide", "x")
    with sqlite3.connect(tmp_path / "team.db") as conn:
        for table, column in TIME_COLUMNS:
            values = conn.execute(f"SELECT typeof({column}), {column} FROM {table} "
                                  f"WHERE {column} IS NOT NULL").fetchall()
            assert values, f"no writer wrote {table}.{column}"
            for kind, value in values:
                assert kind == "integer", (table, column, value)
                assert NOW_MS <= value <= NOW_MS + 2 * 86_400_000, (table, column, value)
