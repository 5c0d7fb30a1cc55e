"""``bart node backup`` / ``bart node restore``: a node's data directory in one file.

A backup is taken while the node runs: every SQLite database of the data
directory (``node.db``, ``team.db``) is copied with SQLite's online backup API,
which reads one consistent snapshot beside the node's writer (WAL: nobody
waits); every other file — keys, TLS, secrets, ``node.toml``, the enrolment in
``central/``, ``peers.toml`` — is copied as it is. Mosquitto's ``broker/``
directory is left out: the node renders it afresh at each start from the
files above. The snapshot is packed by :mod:`common.archive` (0600, encrypted
when a passphrase is given).

A restore goes only into a new or empty data directory. It checks the archive
(a node's, its databases whole, its keys the ones the manifest names) before
anything lands there, and moves the uplink's batch counter forward so that
batches made after the restore never reuse a number central already has
(docs/backup.md, "Restoring an older backup").
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from common.archive import BackupInfo as ArchiveInfo
from common.archive import (
    check_output,
    check_sqlite,
    move_into,
    pack,
    restoring,
    snapshot_dir,
    write_manifest,
)
from sync import KeyPair, sealed
from sync.errors import SyncError

from .config import CONFIG_FILE, NodeSettings
from .enrol import load_enrolment, package_version
from .errors import NodeError

__all__ = ["BackupError", "BackupInfo", "backup_node", "catch_up_with_central",
           "restore_node"]

KIND: Final = "node"
#: Left out of a backup: rendered again at every start (Mosquitto's state, config).
SKIPPED_DIRS: Final = frozenset({"broker"})
#: How long the restore waits for central's answer.
CENTRAL_TIMEOUT_S: Final = 20.0
#: After a restore, the uplink's next batch number is at least this far beyond the
#: backup's, plus this many per second since the backup was taken: more than a node
#: can have used since (one batch per exchange, a few a second at most).
BATCH_SEQ_MARGIN: Final = 10_000
BATCH_SEQS_PER_S: Final = 10


class BackupError(NodeError):
    """A node backup cannot be made or restored; the message says why and what to do."""


@dataclass(frozen=True)
class BackupInfo(ArchiveInfo):
    """What a node backup holds (its manifest), the figures of making or restoring
    it, and how far a restore caught up with central."""

    #: Own streams whose seqs moved up to what central holds: {stream: (backup, central)}.
    caught_up: dict[str, tuple[int, int]] | None = None


def _own_heads(db: Path, origin: str) -> dict[str, Any]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        heads = {stream: seq for stream, seq in conn.execute(
            "SELECT stream, MAX(seq) FROM events WHERE origin = ? GROUP BY stream", (origin,))}
        for stream, floor in conn.execute(
                "SELECT stream, seq FROM held_floor WHERE origin = ?", (origin,)):
            heads[stream] = max(heads.get(stream, 0), floor)
        row = conn.execute("SELECT value FROM uplink_state WHERE key = 'batch_seq'").fetchone()
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        return {"heads": heads, "batch_seq": row[0] if row else 0, "events": events}
    finally:
        conn.close()


def backup_node(data_dir: Path, out: Path, *, passphrase: str | None = None,
                version: str = "") -> BackupInfo:
    """Write a backup of the node in ``data_dir`` to ``out`` (the node may be running)."""
    started = time.monotonic()
    settings = NodeSettings.load(data_dir)
    keys = KeyPair.load(settings.keys_dir)
    check_output(out, data_dir)
    if not settings.db_path.exists():
        raise BackupError(f"{data_dir} has no store yet (node.db): there is nothing to back "
                          "up but the keys; start the node once, or copy the keys directory")
    staging = Path(tempfile.mkdtemp(prefix=".bart-backup-", dir=out.absolute().parent))
    try:
        tree = staging / "data"
        tree.mkdir(mode=0o700)
        databases = snapshot_dir(data_dir, tree, skip_dirs=SKIPPED_DIRS)
        manifest = {"v": 1, "kind": KIND, "name": settings.name, "area": settings.area,
                    "fingerprint": keys.fingerprint, "created_ms": time.time_ns() // 1_000_000,
                    "bart": version, "databases": databases,
                    **_own_heads(tree / "node.db", settings.name)}
        write_manifest(staging, manifest)
        pack(staging, out, passphrase=passphrase)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupInfo(manifest, out.stat().st_size, time.monotonic() - started)


def restore_node(archive: Path, data_dir: Path, *, passphrase: str | None = None,
                 offline: bool = False) -> BackupInfo:
    """Restore the node backup ``archive`` into the new or empty ``data_dir``.

    An enrolled node first asks central what it holds of the node's own streams
    (:func:`catch_up_with_central`), unless ``offline``: events the node made
    after the backup are at central, and their seqs must not be used again.
    """
    started = time.monotonic()
    with restoring(archive, data_dir, KIND, passphrase=passphrase) as (staging, manifest):
        tree = staging / "data"
        for name in manifest.get("databases", []):
            check_sqlite(tree / name)
        if not (tree / CONFIG_FILE).is_file():
            raise BackupError("the backup has no node.toml: it is not a whole node")
        keys = KeyPair.load(tree / "keys")
        if keys.fingerprint != manifest.get("fingerprint"):
            raise BackupError("the keys in the backup are not the ones its manifest names "
                              "(a damaged or altered backup); it cannot be trusted")
        _advance_batch_seq(tree / "node.db", manifest)
        caught_up = None if offline else catch_up_with_central(tree)
        move_into(tree, data_dir)
    return BackupInfo(manifest, archive.stat().st_size, time.monotonic() - started,
                      caught_up)


def _advance_batch_seq(db: Path, manifest: dict[str, Any]) -> None:
    """Batch numbers central may have seen since the backup are never used again."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'uplink_state'"
                            ).fetchone():
            return
        age_s = max(0, time.time_ns() // 1_000_000 - int(manifest.get("created_ms", 0))) // 1000
        jump = BATCH_SEQ_MARGIN + BATCH_SEQS_PER_S * age_s
        conn.execute("INSERT INTO uplink_state (key, value) VALUES ('batch_seq', ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = value + ?", (jump, jump))


def catch_up_with_central(data_dir: Path, *, timeout: float = CENTRAL_TIMEOUT_S,
                          transport: Any = None) -> dict[str, tuple[int, int]] | None:
    """Ask central what it holds of this (stopped) node's own streams, with one signed
    poll as the uplink makes them; where central holds more than the store, the
    store counts those seqs as held (``held_floor``, as after a prune) and as
    acknowledged, so the next own event takes the seq after central's.

    Returns {stream: (seq in the store, seq at central)} for the streams that moved
    ({} when none did), or None for a node not enrolled with a central.
    """
    import httpx

    from sync.exchange import Ack, BatchMeta, ExchangeError, SyncReply

    settings = NodeSettings.load(data_dir)
    enrolment = load_enrolment(settings)
    if enrolment is None:
        return None
    keys = KeyPair.load(settings.keys_dir)
    url = str(enrolment["url"]).rstrip("/")
    signing = base64.b64decode(str(enrolment["signing_pub"]))
    with contextlib.closing(sqlite3.connect(settings.db_path)) as conn:
        state = dict(conn.execute("SELECT key, value FROM uplink_state").fetchall())
        central_public = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE origin = ? AND stream = 'public'",
            (str(enrolment["origin"]),)).fetchone()[0]
    batch_seq = max(1, int(state.get("batch_seq", 0)))
    meta = BatchMeta(heads={str(enrolment["origin"]): {"public": int(central_public)}},
                     updates_after=int(state.get("updates_after", 0)), roster_serial=0,
                     backlog=0, version=package_version()[:40],
                     display=" ".join(settings.display_name.split())[:80] or None)
    wire = sealed.seal(sealed.Payload.of([], meta.to_doc()), node_id=settings.name,
                       batch_seq=batch_seq, created=time.time_ns() // 1_000_000, keys=keys,
                       central_encryption_public=base64.b64decode(
                           str(enrolment["encryption_pub"])))
    fix = ("restore again once central can be reached; or, if it cannot be for a long "
           "time, restore with --offline (docs/backup.md says what that risks)")
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            resp = client.post(f"{url}/api/v1/batches", content=wire,
                               headers={"Content-Type": "application/vnd.bart.batch"})
    except httpx.HTTPError as exc:
        raise BackupError(f"central at {url} does not answer ({exc or type(exc).__name__}), "
                          f"and the restored node must learn from it which of its seqs are "
                          f"used already: {fix}") from None
    if resp.status_code != 200:
        raise BackupError(f"central at {url} refused the restored node's question (HTTP "
                          f"{resp.status_code}: {resp.text[:120]}): was the node revoked? "
                          f"{fix}")
    try:
        reply = SyncReply.parse(resp.content)
        ack = Ack.verify(reply.ack, signing)
    except (ExchangeError, SyncError) as exc:
        raise BackupError(f"central's answer does not verify ({exc}); {fix}") from None
    if ack.node != settings.name:
        raise BackupError(f"central answered for {ack.node}, not {settings.name}; {fix}")
    moved: dict[str, tuple[int, int]] = {}
    with contextlib.closing(sqlite3.connect(settings.db_path)) as conn, conn:
        for stream, held in sorted(ack.holds.get(settings.name, {}).items()):
            ours = conn.execute(
                "SELECT MAX(COALESCE((SELECT MAX(seq) FROM events WHERE origin = ? AND "
                "stream = ?), 0), COALESCE((SELECT seq FROM held_floor WHERE origin = ? AND "
                "stream = ?), 0))", (settings.name, stream, settings.name, stream)
            ).fetchone()[0]
            if held <= ours:
                continue
            moved[stream] = (int(ours), int(held))
            conn.execute("INSERT INTO held_floor (origin, stream, seq) VALUES (?, ?, ?) "
                         "ON CONFLICT (origin, stream) DO UPDATE SET seq = excluded.seq",
                         (settings.name, stream, held))
            conn.execute("INSERT INTO uplink_state (key, value) VALUES (?, ?) ON CONFLICT "
                         "(key) DO UPDATE SET value = MAX(value, excluded.value)",
                         (f"acked/{settings.name}/{stream}", held))
    return moved
