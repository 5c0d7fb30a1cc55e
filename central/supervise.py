"""The children of ``bart central run``: HTTP workers and the projector, kept running.

With ``--workers N`` (N ≥ 2) ``bart central run`` does its checks (settings,
keys, migrations, triage rules, the database's identity, free ports), binds
the HTTP port and then replaces itself (``exec``: the same pid, its data
directory lock kept) with this module's :func:`main`, a small process that
imports nothing but the standard library. It starts N workers and one
projector (``python -m central.worker``, central/worker.py), each worker
serving the one listening socket it inherits, and:

- starts a worker again when it dies (at once, then with back-off if it keeps
  dying); a worker that exits before it ever served (uvicorn's start-up
  failure: the app does not load, the port's socket is unusable) stops
  central with exit 3, as one that fails at the first start would;
- starts the projector again when it fails (back-off from 1 s to 60 s, from
  1 s again once it ran a minute), but not after a clean exit (0: stopped by
  a signal, e.g. Ctrl-C reaching the whole process group);
- on SIGINT/SIGTERM sends SIGTERM to every child, waits for their graceful
  shutdown (uvicorn's 5 s, then SIGKILL) and exits 0;
- on SIGHUP replaces the workers one by one, each new one serving before the
  old one stops (uvicorn's rolling restart; the projector stays);
- serves ``--metrics-port`` itself (central/metrics.py), when asked.

Why not uvicorn's ``--workers`` and ``multiprocessing`` as before: the
supervising process kept everything the checks had imported (SQLAlchemy,
FastAPI, pydantic, cryptography: ~80 MB) for as long as central ran, and
multiprocessing's spawn added its resource tracker (12 MB): 343 MB summed RSS
with two workers, against the ≤ 250 MB of issue 15 (bench/central_memory.py).

With ``--workers 1`` ``bart central run`` serves in its own process and
watches the projector with a :class:`Supervisor` on a thread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

from .errors import CentralError

# Standard library only, and not logging, dataclasses or argparse either (together
# 2.6 MB of a 14 MB process): this process lives as long as central.

#: The name the projector's log lines and metrics go by (central/metrics.py).
PROJECTOR = "projector"
#: uvicorn's graceful shutdown (central/server.py) and a margin, before SIGKILL.
STOP_TIMEOUT_S = 8.0
#: How often the supervisor looks at its children.
TICK_S = 0.2
#: The environment variable that carries the database URL central resolved from
#: ``bart central run`` to this process (its metrics listener) and to the projector
#: (not in their command lines: it may hold a password).
RUN_DATABASE_URL_ENV = "BART_CENTRAL_RUN_DATABASE_URL"
#: Exit code of a central that stopped while starting (bart.errors.EXIT_UNAVAILABLE).
EXIT_UNAVAILABLE = 3


def say(level: str, message: str) -> None:
    """One log line on stderr, in the projector's format (``time LEVEL name: message``)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {level} central.supervise: {message}", file=sys.stderr, flush=True)


class Backoff:
    """Delays before a restart: ``first`` doubling to ``most``, from ``first`` again
    after a child that ran ``fresh_after_s``.

    >>> b = Backoff(first=1.0, most=4.0)
    >>> [b.next(ran_s=0.1) for _ in range(4)], b.next(ran_s=120.0)
    ([1.0, 2.0, 4.0, 4.0], 1.0)
    """

    def __init__(self, first: float = 1.0, most: float = 60.0,
                 fresh_after_s: float = 60.0) -> None:
        self.first, self.most, self.fresh_after_s = first, most, fresh_after_s
        self.delay = 0.0

    def next(self, ran_s: float) -> float:
        """The delay before the next start, for a child that ran ``ran_s`` seconds."""
        if ran_s >= self.fresh_after_s or self.delay == 0.0:
            self.delay = self.first
        else:
            self.delay = min(self.most, self.delay * 2)
        return self.delay


class Child:
    """One child process and how to start it again.

    ``wants_ready``: the child is given ``--ready-fd N`` and writes a byte there
    once it serves (workers); one that exits before that failed to start.
    ``restart_clean``: whether an exit with code 0 is restarted too (workers)
    or taken as meant (the projector).
    """

    def __init__(self, name: str, argv: Sequence[str], *, pass_fds: Sequence[int] = (),
                 env: dict[str, str] | None = None, restart_clean: bool = True,
                 wants_ready: bool = False, backoff: Backoff | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env or {}
        self.pass_fds = tuple(pass_fds)
        self.restart_clean = restart_clean
        self.wants_ready = wants_ready
        self.backoff = backoff or Backoff()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready = False
        self.restart_at: float | None = None
        self._ready_r: int | None = None

    @property
    def pid(self) -> int | None:
        """The running process's id (None while it waits to be started again)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        fds = list(self.pass_fds)
        argv = list(self.argv)
        ready_w = None
        if self.wants_ready:
            self._close_ready()
            self._ready_r, ready_w = os.pipe()
            os.set_blocking(self._ready_r, False)
            fds.append(ready_w)
            argv += ["--ready-fd", str(ready_w)]
        try:
            self.proc = subprocess.Popen(argv, pass_fds=fds,
                                         env={**os.environ, **self.env} if self.env else None)
        finally:
            if ready_w is not None:
                os.close(ready_w)
        self.started_at = time.monotonic()
        self.ready = not self.wants_ready
        self.restart_at = None

    def poll_ready(self) -> bool:
        """Whether the child said it serves (reads its pipe without waiting)."""
        if not self.ready and self._ready_r is not None:
            with contextlib.suppress(BlockingIOError):
                if os.read(self._ready_r, 1):
                    self.ready = True
                    self._close_ready()
        return self.ready

    def _close_ready(self) -> None:
        fd, self._ready_r = self._ready_r, None
        if fd is not None:
            os.close(fd)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def reap(self) -> None:
        self._close_ready()

    def fresh(self) -> Child:
        """Another child started the same way (not started yet)."""
        return Child(self.name, self.argv, pass_fds=self.pass_fds, env=self.env,
                     restart_clean=self.restart_clean, wants_ready=self.wants_ready,
                     backoff=self.backoff)


class StartFailed(CentralError):
    """A worker exited before it ever served: central cannot start."""


class Supervisor:
    """Keeps its children running until :meth:`stop`; see the module docstring."""

    def __init__(self, children: Sequence[Child], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.children = list(children)
        self.clock = clock
        self.stopping = threading.Event()

    def start(self) -> None:
        for child in self.children:
            child.start()

    def pids(self, name: str) -> set[int]:
        """Pids of the live children called ``name``."""
        return {c.pid for c in self.children if c.name == name and c.pid is not None}

    def tick(self) -> None:
        """Start again what died and is due; raise :class:`StartFailed` for a worker
        that never served."""
        now = self.clock()
        for child in self.children:
            if self.stopping.is_set():
                return
            proc = child.proc
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.start()
                continue
            if proc is None:
                continue
            child.poll_ready()
            code = proc.poll()
            if code is None:
                continue
            child.poll_ready()  # it may have served and then died
            child.reap()
            if child.wants_ready and not child.ready and code > 0:
                raise StartFailed(f"{child.name} (pid {proc.pid}) exited with {code} "
                                  "before it served")
            if code == 0 and not child.restart_clean:
                say("WARNING", f"{child.name} stopped; not restarted")
                child.proc = None
                continue
            delay = child.backoff.next(now - child.started_at)
            say("ERROR", f"{child.name} exited with {code} (pid {proc.pid}); restarting in "
                         f"{delay:g} s")
            child.restart_at = now + delay

    def run(self, wait: Callable[[float], bool],
            reload: threading.Event | None = None) -> None:
        """Tick until ``wait(TICK_S)`` says to stop (True) or :meth:`stop` is called;
        replace the workers one by one whenever ``reload`` is set (SIGHUP)."""
        while not self.stopping.is_set() and not wait(TICK_S):
            if reload is not None and reload.is_set():
                reload.clear()
                self.replace_workers()
            self.tick()

    def replace_workers(self, ready_timeout: float = 60.0) -> None:
        """A rolling restart, as uvicorn's SIGHUP: for each worker in turn a new one
        is started and, once it serves, the old one stopped gracefully. A new one
        that does not serve in time is stopped and the old one kept."""
        say("INFO", "replacing the workers one by one (SIGHUP)")
        for i, old in enumerate(self.children):
            if not old.wants_ready or self.stopping.is_set():
                continue
            new = old.fresh()
            new.start()
            deadline = self.clock() + ready_timeout
            while not new.poll_ready():
                if (self.stopping.is_set() or self.clock() > deadline
                        or (new.proc is not None and new.proc.poll() is not None)):
                    say("ERROR", f"the new {new.name} did not serve; keeping the old one")
                    stop_children([new], clock=self.clock)
                    return
                time.sleep(0.05)
            self.children[i] = new
            stop_children([old], clock=self.clock)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every child, wait up to ``timeout``, SIGKILL what is left (idempotent)."""
        self.stopping.set()
        for child in self.children:
            child.restart_at = None
        stop_children(self.children, timeout, self.clock)


def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT_S,
                  clock: Callable[[], float] = time.monotonic) -> None:
    """SIGTERM ``children``, wait up to ``timeout`` for them all, SIGKILL what is left."""
    for child in children:
        child.signal(signal.SIGTERM)
    deadline = clock() + timeout
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.0, deadline - clock()))
        except subprocess.TimeoutExpired:
            say("ERROR", f"{child.name} (pid {child.proc.pid}) did not stop in "
                         f"{timeout:.0f} s: killed")
            child.signal(signal.SIGKILL)
            child.proc.wait()
        child.reap()


def projector_child(parent: int, origin: str, database_url: str) -> Child:
    """The projector (central/worker.py), restarted with back-off, not after exit 0.

    It is given central's origin and database, so that it loads no settings.
    """
    return Child(PROJECTOR, [sys.executable, "-m", "central.worker", "projector",
                             "--parent", str(parent), "--origin", origin],
                 env={RUN_DATABASE_URL_ENV: database_url}, restart_clean=False)


def worker_child(number: int, listen_fd: int, parent: int, host: str, port: int,
                 trusted_proxies: Sequence[str]) -> Child:
    """HTTP worker ``number`` serving the socket ``listen_fd`` (central/worker.py)."""
    argv = [sys.executable, "-m", "central.worker", "http", "--fd", str(listen_fd),
            "--parent", str(parent), "--host", host, "--port", str(port)]
    for proxy in trusted_proxies:
        argv += ["--trusted-proxy", proxy]
    return Child(f"worker {number}", argv, pass_fds=(listen_fd,), wants_ready=True,
                 backoff=Backoff(first=0.5, most=30.0))


class ProjectorWatch:
    """``--workers 1``: the projector beside the serving process, watched on a thread."""

    def __init__(self, origin: str, database_url: str) -> None:
        self.supervisor = Supervisor([projector_child(os.getpid(), origin, database_url)])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.supervisor.start()
        self._thread = threading.Thread(
            target=self.supervisor.run, args=(self.supervisor.stopping.wait,),
            name="bart-projector-watch", daemon=True)
        self._thread.start()

    def pids(self) -> set[int]:
        return self.supervisor.pids(PROJECTOR)

    def stop(self) -> None:
        self.supervisor.stopping.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.supervisor.stop()


def _options(argv: Sequence[str]) -> dict[str, list[str]]:
    """``--name value`` pairs (repeatable) as a dict of lists: all this process is given,
    by :func:`exec_supervisor`."""
    if len(argv) % 2 or not all(a.startswith("--") for a in argv[::2]):
        raise SystemExit(f"python -m central.supervise: started by bart central run only "
                         f"(arguments: {' '.join(argv)})")
    out: dict[str, list[str]] = {}
    for name, value in zip(argv[::2], argv[1::2], strict=True):
        out.setdefault(name[2:], []).append(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The supervising process of ``bart central run --workers N``; see the module docstring."""
    opts = _options(sys.argv[1:] if argv is None else argv)

    def one(name: str, default: str | None = None) -> str:
        return opts.get(name, [default] if default is not None else [])[-1]

    lock_fd = int(one("lock-fd"))
    listen_fd = int(one("listen-fd"))
    host, port, origin = one("host"), int(one("port")), one("origin")
    metrics_host, metrics_port = one("metrics-host", "127.0.0.1"), int(one("metrics-port", "0"))
    database_url = os.environ.pop(RUN_DATABASE_URL_ENV, "")
    me = os.getpid()
    projector = projector_child(me, origin, database_url)
    workers = [worker_child(i + 1, listen_fd, me, host, port, opts.get("trusted-proxy", []))
               for i in range(int(one("workers")))]
    supervisor = Supervisor([*workers, projector])
    reload = threading.Event()

    def on_signal(_sig: int, _frame: object) -> None:
        supervisor.stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGHUP, lambda _sig, _frame: reload.set())
    metrics = None
    if metrics_port:  # served here, apart from the workers (central/metrics.py)
        import site

        site.main()  # started with -S: SQLAlchemy and prometheus_client are in site-packages
        from .metrics import CentralMetrics

        try:
            metrics = CentralMetrics(database_url, metrics_host, metrics_port,
                                     projectors=lambda: supervisor.pids(PROJECTOR))
        except OSError as exc:  # its port, checked free by bart central run, taken since
            print(f"bart: central's metrics listener cannot listen on {metrics_host}:"
                  f"{metrics_port}: {exc.strerror or exc}\n  fix: choose another port: "
                  "--metrics-port N", file=sys.stderr, flush=True)
            return EXIT_UNAVAILABLE
        print(f"Metrics on http://{metrics_host}:{metrics_port}/metrics", flush=True)
    failed: StartFailed | None = None
    try:
        supervisor.start()
        try:
            supervisor.run(supervisor.stopping.wait, reload)
        except StartFailed as exc:
            failed = exc
    finally:
        supervisor.stop()
        if metrics is not None:
            metrics.close()
        os.close(lock_fd)
    if failed is not None:
        print(f"bart: central stopped while starting: {failed}; the log lines above say why "
              "(e.g. its port taken meanwhile)\n  fix: correct that, then start it again",
              file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    return 0


def exec_supervisor(*, workers: int, listen_fd: int, lock_fd: int, host: str, port: int,
                    trusted_proxies: Sequence[str], metrics_host: str, metrics_port: int,
                    origin: str, database_url: str) -> None:
    """Replace this process (``bart central run``, its checks done) with :func:`main`.

    The listening socket and the data directory's lock are handed over as
    inherited file descriptors; nothing else survives the ``exec``.
    """
    # -S: no site-packages (the standard library is all this needs; 1.5 MB less);
    # main() adds them (site.main()) for the metrics listener only.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from central.supervise import main; sys.exit(main())")
    argv = [sys.executable, "-S", "-c", code, "--workers", str(workers),
            "--listen-fd", str(listen_fd), "--lock-fd", str(lock_fd), "--host", host,
            "--port", str(port), "--origin", origin]
    for proxy in trusted_proxies:
        argv += ["--trusted-proxy", proxy]
    if metrics_port:
        argv += ["--metrics-host", metrics_host, "--metrics-port", str(metrics_port)]
    env = dict(os.environ)
    env[RUN_DATABASE_URL_ENV] = database_url
    os.set_inheritable(listen_fd, True)
    os.set_inheritable(lock_fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - our own interpreter, our argv


if __name__ == "__main__":
    sys.exit(main())
