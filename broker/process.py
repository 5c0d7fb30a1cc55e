"""Start, supervise and stop one node's Mosquitto.

The broker is a child of the node in its own session (process group), so that
:meth:`BrokerProcess.stop` can take down everything it started and nothing is
left behind. Its stderr (``log_dest stderr``) is relayed to :mod:`logging` and
the last lines are kept in a small ring buffer for error messages.

A corrupt persistence snapshot must never keep the node's broker down
(DESIGN.md §9): a ``mosquitto.db`` that does not start with Mosquitto's magic
header is moved aside before start, and if Mosquitto still exits during
start-up while a snapshot exists, that snapshot is moved aside and the start is
retried once.

The broker dies with its node, however the node ends. Mosquitto leads its own
session, so a SIGKILL of the node (OOM killer, a supervisor other than
systemd) used to leave it running with the old configuration, answering the
next run's readiness probe. Three things stop that:

- *parent-death signal*: the child sets ``PR_SET_PDEATHSIG`` (SIGTERM) before
  exec. Linux sends it when the *thread* that forked the child ends, not the
  process; so every broker is spawned by one thread that lives as long as the
  process (:data:`_SPAWNER`), never by a passing worker thread. The setting
  survives exec, and is lost only when Mosquitto changes its user: it runs as
  the node's own account (``user`` in its config), so it never does;
- *pid file*: ``mosquitto.pid`` in the state directory names the running
  broker; at start a live process under that pid whose command line is
  Mosquitto with *this* config file is a broker of an earlier run and is
  ended (SIGTERM, then SIGKILL) before the new one starts;
- *readiness*: a CONNACK counts only when the listening socket on the port
  belongs to the child we started (:func:`~broker.probe.holds_port`); anyone
  else answering there is an error that names the port, not "answers".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import logging
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Self, TypeVar

from .config import CONF_NAME, BrokerSettings, write_files
from .errors import BrokerStartError, ConfigError
from .probe import CONNACK_ACCEPTED, holds_port, listening_inodes, probe

logger = logging.getLogger(__name__)

#: First bytes of every Mosquitto persistence file (src/persist.h, 1.x to 2.0).
DB_MAGIC: Final = b"\x00\xb5\x00mosquitto db"
#: Corrupt snapshots kept for inspection; older ones are deleted (SD-card space).
KEEP_CORRUPT: Final = 3
STDERR_LINES: Final = 50
#: The running broker's pid, in its state directory.
PID_NAME: Final = "mosquitto.pid"
#: prctl(2) option: the signal the child gets when its parent thread ends.
PR_SET_PDEATHSIG: Final = 1
#: How long a broker of an earlier run gets to go after SIGTERM before SIGKILL.
STALE_STOP_S: Final = 3.0

T = TypeVar("T")


class _Spawner:
    """Runs ``subprocess.Popen`` calls on one daemon thread that lives as long as
    the process: the parent-death signal fires when the thread that forked a
    child ends, and a worker thread of an executor may end any time."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any],
                                             concurrent.futures.Future[Any]]] = \
            queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the spawner thread; its result or its exception."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._loop, name="bart-spawner",
                                                daemon=True)
                self._thread.start()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queue.put((fn, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            fn, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who raises it
                future.set_exception(exc)


_SPAWNER: Final = _Spawner()
_LIBC: Any = None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when its parent (thread) ends.

    If the parent ended between fork and prctl, the signal will never come:
    then the child ends itself at once.
    """
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    prctl = _LIBC.prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part] or None


def _gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def is_our_broker(pid: int, conf_path: Path) -> bool:
    """Whether ``pid`` runs Mosquitto with the config file ``conf_path``."""
    argv = _cmdline(pid)
    return (argv is not None and len(argv) == 3 and Path(argv[0]).name.startswith("mosquitto")
            and argv[1:] == ["-c", str(conf_path.absolute())])


def db_is_valid(path: Path) -> bool:
    """True if ``path`` starts with Mosquitto's persistence magic header."""
    with path.open("rb") as handle:
        return handle.read(len(DB_MAGIC)) == DB_MAGIC


def move_aside(path: Path, reason: str) -> Path:
    """Rename a bad snapshot to ``<name>.corrupt-<UTC time>`` and log a warning."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, target)
    logger.warning("moved Mosquitto snapshot %s aside to %s: %s", path, target.name, reason)
    old = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
    for stale in old[:-KEEP_CORRUPT]:
        with contextlib.suppress(OSError):
            stale.unlink()
    return target


def _probe_host(bind_address: str) -> str:
    if bind_address in ("0.0.0.0", ""):  # noqa: S104 - a listener address, not a bind
        return "127.0.0.1"
    if bind_address == "::":
        return "::1"
    return bind_address


def _listeners(s: BrokerSettings) -> tuple[object, ...]:
    """What only a restart of Mosquitto changes."""
    return (s.port, s.bind_address, s.state_dir, s.tls_port, s.tls_bind_address, s.tls_cert,
            s.tls_key, s.mesh_port, s.mesh_bind_address, s.mesh_cafile, s.mesh_cert, s.mesh_key)


def end_stale_broker(state_dir: Path) -> int | None:
    """End the broker an earlier run left serving ``state_dir`` (module docstring);
    its pid, or None when there was none.

    Only a live process under the pid file's pid whose command line is
    Mosquitto with this directory's config file is ended: a pid reused by
    another program is left alone. Raises :class:`BrokerStartError` when it
    outlives SIGKILL.
    """
    conf = state_dir / CONF_NAME
    try:
        pid = int((state_dir / PID_NAME).read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 1 or pid == os.getpid() or not is_our_broker(pid, conf):
        return None  # gone, or the pid is someone else's now
    logger.warning("mosquitto[%d] of an earlier run still serves %s: ending it", pid, conf)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + STALE_STOP_S
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if _gone(pid):
            return pid
    raise BrokerStartError(f"mosquitto[{pid}] of an earlier run does not end")


class LineLimiter:
    """At most ``burst`` log lines of one kind per ``window_s`` (a kind: the line
    without its numbers). Anyone on the network can make Mosquitto write a line
    (a refused TLS handshake on the mesh listener: "OpenSSL Error …"); logs must
    not grow with what a stranger sends (STYLE rule 12).

    >>> lim = LineLimiter(burst=2, window_s=60)
    >>> [lim.admit("OpenSSL Error[0]: x", t) for t in (0, 1, 2, 3, 61)]
    [0, 0, None, None, 2]
    """

    def __init__(self, burst: int = 5, window_s: float = 60.0, kinds: int = 256) -> None:
        self.burst = burst
        self.window_s = window_s
        self.kinds = kinds
        self._seen: dict[str, tuple[float, int, int]] = {}  # kind -> (since, logged, held)

    def admit(self, line: str, now: float) -> int | None:
        """None: do not log ``line``; else log it, after saying how many were held back."""
        kind = re.sub(r"[0-9]+", "#", line)[:60]
        since, logged, held = self._seen.get(kind, (now, 0, 0))
        if now - since >= self.window_s:
            since, logged, held_before = now, 0, held
        else:
            held_before = 0
        if logged >= self.burst:
            self._seen[kind] = (since, logged, held + 1)
            return None
        if len(self._seen) >= self.kinds and kind not in self._seen:
            self._seen.clear()  # bounded memory
        self._seen[kind] = (since, logged + 1, 0 if held_before else held)
        return held_before


class BrokerProcess:
    """One supervised Mosquitto for ``settings``; a context manager.

    >>> # with BrokerProcess(settings) as broker:   # starts and waits for CONNACK
    >>> #     ...                                   # restarted if it dies
    """

    def __init__(self, settings: BrokerSettings, binary: str = "mosquitto", *,
                 restart_min: float = 0.5, restart_max: float = 30.0,
                 stable_after: float = 60.0, stop_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.binary = binary
        self._restart_min = restart_min
        self._restart_max = restart_max
        self._stable_after = stable_after
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._restarts = 0
        self._start_timeout = 10.0

    # -- properties -----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def restarts(self) -> int:
        """How many times the supervisor restarted a broker that died."""
        return self._restarts

    @property
    def port(self) -> int:
        """The local listener's TCP port."""
        return self.settings.port

    @property
    def _pid_path(self) -> Path:
        return self.settings.state_dir / PID_NAME

    def stderr_tail(self) -> list[str]:
        """The last lines Mosquitto wrote to stderr (bounded)."""
        return list(self._tail)

    # -- life cycle ---------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the files, start Mosquitto, wait for a CONNACK, start the supervisor.

        Raises :class:`BrokerStartError` (with Mosquitto's last stderr lines) if
        the broker does not answer within ``timeout`` seconds. A no-op if running.
        """
        with self._lock:
            supervisor = self._supervisor
            if self.running or (supervisor is not None and supervisor.is_alive()):
                return  # running, or the supervisor is bringing it back
            self._stop.clear()
            self._start_timeout = timeout
            self._proc = self._start_checked(timeout)
            self._supervisor = threading.Thread(
                target=self._supervise, name=f"mosquitto-supervisor-{self.port}", daemon=True)
            self._supervisor.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the supervisor and the broker: SIGTERM, then SIGKILL. Idempotent."""
        self._stop.set()
        supervisor = self._supervisor
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        with self._lock:
            self._supervisor = None
            proc, self._proc = self._proc, None
            if proc is not None:
                self._terminate(proc, self._stop_timeout if timeout is None else timeout)
                with contextlib.suppress(OSError):
                    self._pid_path.unlink()

    def close(self) -> None:
        """Same as :meth:`stop`."""
        self.stop()

    def reload(self, settings: BrokerSettings | None = None) -> None:
        """Adopt new users/ACLs: rewrite the files and send SIGHUP (Mosquitto re-reads them).

        ``settings`` may change users only; listeners and the state directory
        need a restart, so a change of those raises :class:`ConfigError`. So does
        new content in ``mesh_cafile``: Mosquitto 2.0.11 does not re-read the CA
        file on SIGHUP (verified), so a newly trusted CA needs stop() and start().
        """
        if settings is not None:
            if _listeners(settings) != _listeners(self.settings):
                raise ConfigError("listeners, their TLS files and state_dir need stop() "
                                  "and start()")
            self.settings = settings
        write_files(self.settings)
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGHUP)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- starting -----------------------------------------------------------------

    def _check_snapshot(self) -> None:
        db = self.settings.db_path
        if not self.settings.persistence or not db.exists():
            return
        try:
            valid = db_is_valid(db)
        except OSError as exc:
            move_aside(db, f"unreadable ({exc})")
            return
        if not valid:
            move_aside(db, "no Mosquitto header (zero-filled or truncated, e.g. after a power cut)")

    def _check_tls_files(self) -> None:
        """Raise :class:`BrokerStartError` if a certificate or key the config names is unreadable.

        Mosquitto would exit during start-up, which :meth:`_start_checked` cannot
        tell from a bad snapshot: a good snapshot would be moved aside for a
        missing mesh key.
        """
        s = self.settings
        named: list[tuple[str, Path | None]] = []
        if s.tls_port is not None:
            named += [("tls_cert", s.tls_cert), ("tls_key", s.tls_key)]
        if s.mesh_port is not None:
            named += [("mesh_cafile", s.mesh_cafile), ("mesh_cert", s.mesh_cert),
                      ("mesh_key", s.mesh_key)]
        for label, path in named:
            if path is None:
                continue
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                raise BrokerStartError(
                    f"{label} {path} cannot be read ({exc.strerror}); Mosquitto not started"
                ) from exc

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._tail.clear()
        # preexec_fn only calls prctl and getppid in the child: no lock is taken there.
        preexec = _die_with_parent(os.getpid())
        try:
            proc = _SPAWNER.run(lambda: subprocess.Popen(
                [self.binary, "-c", str(self.settings.conf_path.absolute())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                cwd=self.settings.state_dir, start_new_session=True, close_fds=True,
                preexec_fn=preexec))
        except (OSError, subprocess.SubprocessError) as exc:
            raise BrokerStartError(f"cannot run {self.binary}: {exc}") from exc
        with contextlib.suppress(OSError):
            # 0600 like every file of the broker's state directory.
            fd = os.open(self._pid_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a file of an earlier version may have another mode
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{proc.pid}\n")
        assert proc.stderr is not None
        self._reader = threading.Thread(
            target=self._read_stderr, args=(proc.stderr, proc.pid),
            name=f"mosquitto-stderr-{proc.pid}", daemon=True)
        self._reader.start()
        return proc

    def _read_stderr(self, stream: IO[bytes], pid: int) -> None:
        limiter = LineLimiter()
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                # Lines before the config is read carry a Unix-time prefix.
                head, sep, rest = line.partition(": ")
                if sep and head.isdigit():
                    line = rest
                if not line:
                    continue
                self._tail.append(line)
                level = (logging.ERROR if line.startswith("Error")
                         else logging.WARNING if line.startswith("Warning") else logging.INFO)
                verdict = limiter.admit(line, time.monotonic())
                if verdict is None:
                    continue
                if verdict:
                    logger.log(level, "mosquitto[%d]: (%d more like the next one in the last "
                               "minute were not logged)", pid, verdict)
                logger.log(level, "mosquitto[%d]: %s", pid, line)

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """True once a CONNACK came back; False if the process exited first."""
        host = _probe_host(self.settings.bind_address)
        user = self.settings.service_user()
        while True:
            if proc.poll() is not None:
                return False
            try:
                code = probe(host, self.port, user.name if user else None,
                             user.password if user else None, timeout=0.5)
            except OSError:
                code = None
            if code is not None and holds_port(proc.pid, self.port) is False:
                if proc.poll() is not None:
                    return False
                raise self._port_taken(proc.pid)
            if code is not None:
                if user is None or code == CONNACK_ACCEPTED:
                    return True
                raise BrokerStartError(
                    f"Mosquitto on port {self.port} refused service user {user.name!r} "
                    f"(CONNACK {code}): password file not what was rendered?")
            if self._clock() >= deadline:
                raise BrokerStartError(
                    f"Mosquitto did not answer MQTT on {host}:{self.port} in time; "
                    f"last output: {self._tail_text()}")
            if self._stop.wait(0.05):
                raise BrokerStartError("stopped while starting")

    def _start_checked(self, timeout: float) -> subprocess.Popen[bytes]:
        self._check_tls_files()
        end_stale_broker(self.settings.state_dir)
        write_files(self.settings)
        self._check_snapshot()
        deadline = self._clock() + timeout
        for attempt in (1, 2):
            proc = self._spawn()
            try:
                ready = self._wait_ready(proc, deadline)
            except BaseException:
                self._terminate(proc, self._stop_timeout)
                raise
            if ready:
                logger.info("mosquitto[%d] answers on port %d", proc.pid, self.port)
                return proc
            self._terminate(proc, self._stop_timeout)
            if listening_inodes(self.port):  # not a bad snapshot: someone has the port
                raise self._port_taken(proc.pid)
            db = self.settings.db_path
            if attempt == 1 and self.settings.persistence and db.exists():
                move_aside(db, f"Mosquitto exited during start-up: {self._tail_text()}")
                continue
            break
        raise BrokerStartError(
            f"Mosquitto exited during start-up (code {proc.returncode}): {self._tail_text()}")

    def _port_taken(self, pid: int) -> BrokerStartError:
        return BrokerStartError(
            f"another program holds port {self.port}, not mosquitto[{pid}] started here "
            f"(a broker of an earlier run?); find it with: ss -ltnp 'sport = :{self.port}' "
            f"(mosquitto's last output: {self._tail_text()})")

    def _tail_text(self) -> str:
        return " | ".join(list(self._tail)[-5:]) or "(no output)"

    def _terminate(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        if proc.poll() is None:
            # Only signal a group whose leader is not reaped yet: its id cannot be reused.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("mosquitto[%d] ignored SIGTERM for %.1fs; killing", proc.pid,
                               timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=2.0)

    # -- supervision --------------------------------------------------------------

    def _supervise(self) -> None:
        delay = self._restart_min
        started = self._clock()
        while not self._stop.is_set():
            proc = self._proc
            if proc is None:
                return
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            if self._stop.is_set():
                return
            self._terminate(proc, 0.0)  # reaped already; collects the stderr reader
            if self._clock() - started >= self._stable_after:
                delay = self._restart_min
            logger.warning("mosquitto[%d] exited with code %s; restarting in %.1fs (last: %s)",
                           proc.pid, proc.returncode, delay, self._tail_text())
            failures = 0
            while not self._stop.wait(delay):
                with self._lock:
                    if self._stop.is_set():
                        return
                    try:
                        self._proc = self._start_checked(self._start_timeout)
                    except Exception as exc:  # the supervisor must live on
                        # Not only BrokerStartError: a full disk or a vanished state
                        # directory raises OSError from write_files. Ending this thread
                        # would leave the node without a broker until it restarts.
                        failures += 1
                        delay = min(delay * 2, self._restart_max)
                        # Loudly once, then quietly: a broken broker must not fill the SD card.
                        logger.log(logging.WARNING if failures == 1 else logging.DEBUG,
                                   "restarting Mosquitto failed (%s); next try in %.1fs",
                                   exc if isinstance(exc, BrokerStartError)
                                   else f"{type(exc).__name__}: {exc}", delay)
                        continue
                    self._restarts += 1
                    started = self._clock()
                    delay = min(delay * 2, self._restart_max)
                    break
