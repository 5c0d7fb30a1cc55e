"""The node store: SQLite, the node's durable truth (DESIGN.md §4, §9).

One writer thread owns the only writing connection and takes work from a
queue. Work that arrives while a transaction is being written is coalesced
into the next one (group commit): each caller's future is resolved only after
the COMMIT that contains its work, with ``synchronous=FULL`` in WAL mode, so an
answer to a resident always means "on disk". Each piece of work runs inside
its own SAVEPOINT, so one failing piece never takes others down with it.

Two exceptions to the flush, both committed without waiting for the disk
(``synchronous=NORMAL`` for that COMMIT; WAL: the COMMIT is in the WAL and
visible to every reader at once, the database is always consistent, and the
frames reach the disk at the next flushed COMMIT or checkpoint):

- *already durable* work (``already_durable=True``) stores only what an
  earlier, flushed transaction already holds in a form that is recovered at
  start-up (a panic-button alarm armed during its hold, see node/buttons.py):
  a power cut may lose the COMMIT, never the alarm. Such work that writes
  something new after all (an event made afresh: ``tx.wrote_new``) makes the
  transaction flush as usual.
- *not durable* work (``durable=False``) stores only what this node neither
  made nor acknowledged to anyone: a public event relayed live by a peer or
  fetched by catch-up (node/mesh/engine.py). Its origin holds it durably
  (the origin flushed it before showing or answering anything), and so may
  every peer that passed it on. A power cut may lose such COMMITs — only
  those made since the last flushed COMMIT or checkpoint, see below — and
  nothing else: what this node holds is read from the disk at start
  (:func:`load_held`), so its vector never claims a lost event, and the next
  mesh session's catch-up fetches it again from any peer (docs/mesh.md,
  "Relayed events are stored without a flush").

A transaction flushes when any piece of work in it is durable and not
already durable (the default for everything: reports, alarms, acks, receipts,
uplink and carry bookkeeping, ``held_floor``). Why nothing acknowledged can
be lost: the WAL is one file written in commit order, and a flushed COMMIT
fsyncs that file, so it makes every earlier COMMIT durable with it; after a
power cut SQLite recovers a prefix of the committed transactions. What a
cut may lose is therefore a *suffix* of unflushed COMMITs only — relayed
events (and already durable work, recovered from ``armed_alarms``) — and no
durable write can refer to one of them, since any such write came later and
its flush took them along.

Threads, and who owns what (enforced: :meth:`WriteTx` methods check that
they run on the writer thread; tests/integration/test_store.py):

- **The writer thread** (``store-writer-<origin>``) owns the writing
  connection and everything a transaction touches. Only it changes
  ``_heads`` (the highest seq per (origin, stream), including work being
  committed) and ``_held`` (what is committed), each under its lock, and the
  commit counters. Work reaches it only through :meth:`Store.submit` (any
  thread: a ``concurrent.futures.Future``) or :meth:`Store.write` (the event
  loop: an ``asyncio`` future); both are answered in one place after the
  COMMIT (``_answer``: every waiter of one loop in one call_soon_threadsafe).
- **Any thread** may read: each thread has its own read-only connection
  (:meth:`_reader`; WAL lets readers run beside the writer and see the last
  COMMIT), and :meth:`head`, :meth:`known_heads`, :meth:`heads`,
  :meth:`holds` and :meth:`prepare_local` read the in-memory state under its
  lock (copies, never the live dicts).
- **Nothing else writes the database**: every table is written by work
  submitted here, through :class:`WriteTx` and the statements
  node/store_writes.py names; every read goes through the store's methods
  (node/store_queries.py, on the readers above). No other module of the
  running node holds a connection to the file or SQL of its own
  (tests/unit/test_store_owns_sql.py names the few exceptions: the
  migrations, team.db, backup and restore, the clock's start-up read).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from common.files import private_database
from common.heap import malloc_trim
from sync import Event, KeyPair
from sync.bodies import validate_body
from sync.event import make_event
from sync.replication import Held

from .errors import SeqConflict, StoreClosed, StoreError
from .migrations import migrate
from .store_queries import EVENT_COLS, StoreQueries
from .store_writes import TxStatements

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Most pieces of work in one transaction: bounds latency under heavy load.
MAX_GROUP = 256
#: Upper bounds (seconds) of the commit-latency histogram (``/metrics``).
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: A prepared event older than this when its transaction runs is made afresh.
PREPARED_MAX_AGE_MS = 60_000
#: Page cache of each reader connection, KiB (SQLite's default is 2000).
READER_CACHE_KIB = 128


def _make_private(path: Path) -> None:
    """The database holds residents' reports and contact details: 0600 for this
    account alone, whatever the umask (``bart node run`` by hand gets 0644
    otherwise); see :func:`common.files.private_database`."""
    private_database(path)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open ``path`` with the pragmas every connection of the store needs."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=10.0
    )
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"could not switch {path} to WAL (got {mode})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
        # One reader per thread that reads (the executors' threads): each with
        # SQLite's default 2 MiB page cache, they would hold several MiB of pages
        # the OS caches anyway (issue 15, memory). Page queries are bounded: 32
        # pages hold their B-tree paths; /healthz's COUNT(*) walks a whole index
        # and would fill any size (512 KiB each before: 0.6 MB more at 10^5 events).
        conn.execute(f"PRAGMA cache_size = -{READER_CACHE_KIB}")
    return conn


def load_held(conn: sqlite3.Connection) -> dict[tuple[str, str], Held]:
    """The held seqs of every (origin, stream), read once at start-up.

    A stream whose count of events equals its highest seq (and so every
    stream of this node's own) is gapless without reading its seqs; only a
    stream with gaps (events of a peer received out of order) is read seq by
    seq. Pruned seqs count as held (``held_floor``).
    """
    floors = {(o, s): q for o, s, q in conn.execute(
        "SELECT origin, stream, seq FROM held_floor")}
    out: dict[tuple[str, str], Held] = {}
    for origin, stream, top, count in conn.execute(
            "SELECT origin, stream, MAX(seq), COUNT(*) FROM events GROUP BY origin, stream"):
        floor = floors.pop((origin, stream), 0)
        above = count if not floor else conn.execute(
            "SELECT COUNT(*) FROM events WHERE origin = ? AND stream = ? AND seq > ?",
            (origin, stream, floor)).fetchone()[0]
        if above == top - floor:
            out[(origin, stream)] = Held(top)
            continue
        held = Held(floor)
        for (seq,) in conn.execute(
                "SELECT seq FROM events WHERE origin = ? AND stream = ? AND seq > ? "
                "ORDER BY seq", (origin, stream, floor)):
            held.add(seq)
        out[(origin, stream)] = held
    for key, floor in floors.items():  # every event pruned: the floor alone
        if floor:
            out[key] = Held(floor)
    return out


class WriteTx(TxStatements):
    """What a piece of work may do inside the writer's transaction: append and
    insert events, and the named statements of :class:`TxStatements`."""

    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        self._store = store
        self.conn = conn
        self.now_ms = store.clock_ms()
        #: Covered work wrote something no earlier flushed transaction holds
        #: (reset before each piece of work; see the module's docstring).
        self.wrote_new = False
        #: A piece of work in this transaction needs the COMMIT flushed.
        self.flush = False
        #: (origin, stream, seq) of every event written, for the held sets after COMMIT.
        self.added: list[tuple[str, str, int]] = []
        #: A piece of work read far and wide (a prune): after COMMIT, the writer's page
        #: cache is handed back (its pages are not what the next writes touch).
        self.release_cache = False

    def _on_writer(self) -> None:
        self._store._on_writer()

    @property
    def origin(self) -> str:
        """This node's origin (its own events' ``origin``)."""
        return self._store.origin

    def head(self, stream: str) -> int:
        """The seq of this node's last event on ``stream`` (0: none)."""
        return self._store.head(self._store.origin, stream)

    def append_local(self, kind: str, stream: str, body: dict[str, Any], *,
                     prepared: Event | None = None) -> Event:
        """Create, sign and insert an event of this node; seq is allocated here.

        ``prepared`` (from :meth:`Store.prepare_local`) is inserted as it is
        when it still fits: same kind, stream and body (``body`` as cleaned),
        its seq is the next one and its ts is not in the future nor older than
        a minute. Otherwise the event is made here, as without it.
        """
        store = self._store
        store._on_writer()
        key = (store.origin, stream)
        seq = store.head(*key) + 1
        if (prepared is not None and prepared.origin == store.origin
                and prepared.stream == stream and prepared.kind == kind
                and prepared.seq == seq
                and self.now_ms - PREPARED_MAX_AGE_MS <= prepared.ts <= self.now_ms
                and (prepared.body == body or prepared.body == validate_body(kind, body))):
            event = prepared
        else:
            event = make_event(store.keys, origin=store.origin, stream=stream, seq=seq,
                               kind=kind, body=body, ts=self.now_ms)
            self.wrote_new = True
        self._insert(event)
        store._raise_head(key, seq)
        return event

    def insert(self, event: Event) -> bool:
        """Insert an event made elsewhere; False when it is already stored."""
        self._store._on_writer()
        row = self.conn.execute(
            "SELECT id FROM events WHERE origin = ? AND stream = ? AND seq = ?",
            (event.origin, event.stream, event.seq),
        ).fetchone()
        if row is not None:
            if row[0] == event.id:
                return False
            raise SeqConflict(
                f"{event.origin}/{event.stream}/{event.seq} is already held by {row[0]}"
            )
        if self.conn.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone():
            raise SeqConflict(f"event {event.id} is stored under another seq")
        self.wrote_new = True
        self._insert(event)
        self._store._raise_head((event.origin, event.stream), event.seq)
        return True

    def _insert(self, event: Event) -> None:
        self.added.append((event.origin, event.stream, event.seq))
        self.conn.execute(
            f"INSERT INTO events ({EVENT_COLS}, received_at) VALUES (?,?,?,?,?,?,?,?,?)",
            (event.id, event.origin, event.stream, event.seq, event.ts, event.kind,
             event.body_json().decode("utf-8"), event.sig, self.now_ms),
        )


@dataclass
class _Work(Generic[T]):
    fn: Callable[[WriteTx], T]
    future: concurrent.futures.Future[T] | None = None  # from threads and the CLI
    afuture: asyncio.Future[T] | None = None  # from the event loop
    loop: asyncio.AbstractEventLoop | None = None
    already_durable: bool = False  # see the module's docstring
    durable: bool = True  # False: relayed, never acknowledged here (module docstring)

    def run(self, tx: WriteTx) -> T:
        """Run the work in ``tx``; note on ``tx`` whether its COMMIT must flush."""
        tx.wrote_new = False
        value = self.fn(tx)
        if self.durable and (not self.already_durable or tx.wrote_new):
            tx.flush = True
        return value

    @property
    def unflushed(self) -> bool:
        """Whether this work, as submitted, may commit without a flush."""
        return self.already_durable or not self.durable

    def wanted(self) -> bool:
        """False when the caller gave up before the work ran (nothing to answer)."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        return self.afuture is not None and not self.afuture.cancelled()


def _resolve(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    """On the event loop: answer every caller of one transaction at once."""
    for future, ok, value in items:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Store(StoreQueries):
    """The node's event log and receipts, with one writer thread.

    A batch first runs as one plain transaction; only when a piece of work
    raises is it run again with a savepoint per piece, so failures stay
    isolated while the common case pays for no savepoints.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with Store(d / "n.db", origin="n1", keys=KeyPair.generate()) as s:
    ...     e = s.write_sync(lambda tx: tx.append_local("alert", "public",
    ...                      {"source": "team", "title": "Test"}))
    ...     (e.seq, s.count_events())
    (1, 1)
    """

    def __init__(self, path: Path, *, origin: str, keys: KeyPair,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.path = path
        self.origin = origin
        self.keys = keys
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        path.parent.mkdir(parents=True, exist_ok=True)
        _make_private(path)
        self._conn = connect(path)
        migrate(self._conn)
        self._held_lock = threading.Lock()
        self._held = load_held(self._conn)
        # Migrating and reading the held seqs filled the writer's page cache (up to
        # its 2 MiB at 10^5 events) with pages it will not write: handed back (issue
        # 15, memory); so after a prune (WriteTx.release_cache).
        self._conn.execute("PRAGMA shrink_memory")
        #: Guards ``_heads``: the writer changes it, any thread reads it.
        self._heads_lock = threading.Lock()
        self._heads: dict[tuple[str, str], int] = {k: h.top for k, h in self._held.items()}
        self._queue: queue.SimpleQueue[_Work[Any] | None] = queue.SimpleQueue()
        self._closed = False
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self.commits = 0
        #: Commits without a disk flush (already durable or not-durable work only).
        self.unflushed_commits = 0
        #: Transactions by time from BEGIN to the end of COMMIT (flush included):
        #: counts per bucket of COMMIT_BUCKETS (the last: above them), and the sum.
        #: Changed by the writer only; read (copied) by the metrics listener.
        self.commit_counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.commit_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name=f"store-writer-{origin}",
                                        daemon=True)
        self._thread.start()
        assert self._thread.ident is not None
        self._writer_ident: int = self._thread.ident

    # -- writing ---------------------------------------------------------------

    def submit(self, fn: Callable[[WriteTx], T], *, already_durable: bool = False,
               durable: bool = True) -> concurrent.futures.Future[T]:
        """Queue ``fn`` for the writer; the future resolves after its COMMIT.

        ``already_durable=True`` only for work whose result an earlier flushed
        transaction already holds in recoverable form; ``durable=False``
        only for events this node did not make and acknowledged to nobody
        (relayed by a peer, fetched by catch-up). Either lets its COMMIT skip
        the flush when nothing else in the transaction needs it (module
        docstring).
        """
        if self._closed:
            raise StoreClosed("the store is closed")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put(_Work(fn, future=fut, already_durable=already_durable, durable=durable))
        return fut

    def prepare_local(self, kind: str, stream: str, body: dict[str, Any], ts: int) -> Event:
        """Make and sign, outside the writer, the event the next local append
        on ``stream`` would store at ``ts``; nothing is stored.

        For work whose moment is known ahead (a panic button's hold completes
        ``hold_s`` after its press): :meth:`WriteTx.append_local` with
        ``prepared=`` then only inserts it — when no other event of the
        stream came first, else it makes a new one. Safe from any thread.
        """
        seq = self.head(self.origin, stream) + 1
        return make_event(self.keys, origin=self.origin, stream=stream, seq=seq, kind=kind,
                          body=body, ts=ts)

    async def write(self, fn: Callable[[WriteTx], T], *, durable: bool = True) -> T:
        """Run ``fn`` in the writer's next transaction and await its COMMIT.

        ``durable=False``: see :meth:`submit` (relayed events only).

        ``fn`` must act only through its ``tx``: when another piece of the same
        batch fails, the batch is rolled back and ``fn`` runs a second time.

        The callers of one transaction are answered with one hand-over to the
        event loop, not one each: under load a COMMIT holds dozens of reports.
        """
        return await self.write_soon(fn, durable=durable)

    def write_soon(self, fn: Callable[[WriteTx], T], *,
                   durable: bool = True) -> asyncio.Future[T]:
        """:meth:`write`, queued at once (not when a coroutine first runs): the
        writer thread starts on it while the caller goes on (the mesh passes an
        event on while it is being stored). Await the future for the COMMIT."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Work(fn, afuture=fut, loop=loop, durable=durable))
        return fut

    def write_sync(self, fn: Callable[[WriteTx], T], timeout: float = 30.0) -> T:
        """Blocking form of :meth:`write` for threads and the CLI."""
        return self.submit(fn).result(timeout)

    def _run(self) -> None:
        try:
            self._loop_batches()
        except BaseException as exc:  # the writer must never die silently
            log.critical("store writer stopped: %s", exc)
            self._closed = True
            raise
        finally:
            self._fail_queued()

    def _fail_queued(self) -> None:
        """Answer work that can no longer run (after the stop marker, or a crash)."""
        left: list[tuple[_Work[Any], bool, Any]] = []
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None and work.wanted():
                left.append((work, False, StoreClosed("the store is closed")))
        self._answer(left)

    def _loop_batches(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch: list[_Work[Any]] = [first]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit_batch(batch)
            if stop:
                return

    def _commit_batch(self, batch: list[_Work[Any]]) -> None:
        live = [work for work in batch if work.wanted()]
        heads_before = dict(self._heads)
        # SQLite takes the flush setting only between transactions: decided
        # before BEGIN from how the work was submitted, checked after it ran.
        skip_flush = bool(live) and all(work.unflushed for work in live)
        began = time.perf_counter()
        try:
            if skip_flush:
                self._conn.execute("PRAGMA synchronous = NORMAL")
            fast = self._run_fast(live)
            if fast is not None and skip_flush and fast[1].flush:
                # Covered work wrote something no earlier flush holds: again, flushed.
                self._conn.execute("ROLLBACK")
                fast = None
            if fast is None:  # a piece failed: again, each in its own savepoint
                self._set_heads(dict(heads_before))
                if skip_flush:
                    self._conn.execute("PRAGMA synchronous = FULL")
                    skip_flush = False
                results, tx = self._run_isolated(live)
            else:
                results, tx = fast
            self._conn.execute("COMMIT")
            if tx.release_cache:
                self._conn.execute("PRAGMA shrink_memory")
                malloc_trim()  # the freed pages sit in this thread's malloc arena
            self._note_held(tx.added)
            self.commits += 1
            self.unflushed_commits += skip_flush
            took = time.perf_counter() - began
            self.commit_counts[bisect.bisect_left(COMMIT_BUCKETS, took)] += 1
            self.commit_seconds += took
        except BaseException as exc:
            log.error("store transaction failed: %s", exc)
            with suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            self._set_heads(heads_before)
            error = StoreError(f"transaction failed: {exc}")
            results = [(work, False, error) for work in live]
        restore: sqlite3.Error | None = None
        if skip_flush:
            try:
                self._conn.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error as exc:
                restore = exc
        self._answer(results)
        if restore is not None:
            # Never go on without the flush: the writer stops, the store closes.
            raise StoreError(f"could not restore synchronous=FULL: {restore}")

    def _run_fast(self, live: list[_Work[Any]],
                  ) -> tuple[list[tuple[_Work[Any], bool, Any]], WriteTx] | None:
        """Every piece in one transaction without savepoints (the common case).

        Returns None, with the transaction rolled back, when a piece raised.
        """
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        tx = WriteTx(self, conn)
        results: list[tuple[_Work[Any], bool, Any]] = []
        for work in live:
            try:
                results.append((work, True, work.run(tx)))
            except Exception:
                conn.execute("ROLLBACK")
                return None
        return results, tx

    def _run_isolated(self, live: list[_Work[Any]],
                      ) -> tuple[list[tuple[_Work[Any], bool, Any]], WriteTx]:
        """Each piece in its own savepoint: one failing piece never takes others down."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        tx = WriteTx(self, conn)
        results: list[tuple[_Work[Any], bool, Any]] = []
        for work in live:
            conn.execute("SAVEPOINT work")
            heads_work = dict(self._heads)
            added = len(tx.added)
            try:
                value = work.run(tx)
            except Exception as exc:  # the caller gets it; others go on
                conn.execute("ROLLBACK TO work")
                conn.execute("RELEASE work")
                self._set_heads(heads_work)
                del tx.added[added:]
                results.append((work, False, exc))
                continue
            conn.execute("RELEASE work")
            results.append((work, True, value))
        return results, tx

    def _note_held(self, added: list[tuple[str, str, int]]) -> None:
        """After a COMMIT: the seqs it wrote join the held sets."""
        if not added:
            return
        with self._held_lock:
            for origin, stream, seq in added:
                held = self._held.get((origin, stream))
                if held is None:
                    held = self._held[(origin, stream)] = Held()
                held.add(seq)

    @staticmethod
    def _answer(results: list[tuple[_Work[Any], bool, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]]
        by_loop = {}
        for work, ok, value in results:
            if work.future is not None:
                if work.future.done():
                    continue
                if ok:
                    work.future.set_result(value)
                else:
                    work.future.set_exception(value)
            elif work.afuture is not None and work.loop is not None:
                by_loop.setdefault(work.loop, []).append((work.afuture, ok, value))
        for loop, items in by_loop.items():
            with suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve, items)

    # -- reading ---------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreClosed("the store is closed")
            conn = connect(self.path, readonly=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def head(self, origin: str, stream: str) -> int:
        """Highest seq committed or being committed for (origin, stream)."""
        with self._heads_lock:
            return self._heads.get((origin, stream), 0)

    def heads(self, stream: str | None = None) -> dict[tuple[str, str], Held]:
        """What is committed per (origin, stream): the gapless prefix and the
        ranges held beyond it (copies; from memory, no table scan).

        ``stream`` keeps only that stream (the mesh's vector: ``"public"``).
        """
        with self._held_lock:
            return {key: held.copy() for key, held in self._held.items()
                    if stream is None or key[1] == stream}

    def holds(self, origin: str, stream: str, seq: int) -> bool:
        """Whether a committed event sits at (origin, stream, seq) (from memory)."""
        with self._held_lock:
            held = self._held.get((origin, stream))
            return held is not None and seq in held

    def known_heads(self) -> dict[tuple[str, str], int]:
        """Highest seq per (origin, stream), from memory (no table scan).

        Includes work being committed; a reader may not see those rows yet.
        """
        with self._heads_lock:
            return dict(self._heads)

    # -- the writer's own state (module docstring: threads) ---------------------

    def _on_writer(self) -> None:
        """Refuse transaction work outside the writer thread (the threading contract)."""
        if threading.get_ident() != self._writer_ident:
            raise StoreError("store work runs only on the writer thread: use submit() or "
                             "write()")

    def _raise_head(self, key: tuple[str, str], seq: int) -> None:
        with self._heads_lock:
            if seq > self._heads.get(key, 0):
                self._heads[key] = seq

    def _set_heads(self, heads: dict[tuple[str, str], int]) -> None:
        """Put back the heads of before a transaction (or piece) that failed."""
        with self._heads_lock:
            self._heads = heads

    def check(self) -> bool:
        """Cheap liveness check of the database file."""
        try:
            self._reader().execute("SELECT 1 FROM events LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return self._thread.is_alive()

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Finish queued work, stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        if self._thread.is_alive():  # still inside a commit: never close under it
            log.error("store writer still busy after 30 s; leaving its connection open")
        else:
            self._conn.close()
            self._fail_queued()  # work queued after the stop marker
        with self._readers_lock:
            for conn in self._readers:
                with suppress(sqlite3.ProgrammingError):  # its thread is gone
                    conn.close()
            self._readers.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
