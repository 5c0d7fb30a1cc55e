"""What a test leaves running: non-daemon threads of this process and live
processes below it (children, grandchildren, …; zombies do not count).

``LeakWatch`` takes a snapshot when a test starts and, after its teardown,
names what is new and still there after a grace period. What a fixture of
wider scope (module, session) starts during the test is meant to outlive it:
``allow_current()`` adds everything alive at that moment to the snapshot, and
``tests/conftest.py`` calls it after each such fixture is set up. Processes
below one in the snapshot are its own (Chromium starts helpers as it goes);
threads of an executor that a wider fixture owns are named in
``owned_threads``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: How long what a test started may take to end after its teardown.
GRACE_S = 2.0


@dataclass(frozen=True)
class Proc:
    """A live process, told apart from a later one with the same pid by its start time."""

    pid: int
    start: int

    def describe(self) -> str:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return f"pid {self.pid} (gone)"
        words = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        return f"pid {self.pid}: {words[:200]}"


def descendants(root: int | None = None, *, known: set[Proc] | frozenset[Proc] = frozenset(),
                ) -> set[Proc]:
    """Live (non-zombie) processes below ``root`` (this process by default), leaving out
    the subtree of every ``known`` process (a browser of a module fixture starts
    helper processes whenever it needs them: they are the browser's)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[Proc]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] is the state, [1] the parent pid, [19] the start time (ticks)
        if fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(Proc(int(entry), int(fields[19])))
    found: set[Proc] = set()
    todo = [root]
    while todo:
        for proc in children.get(todo.pop(), ()):
            if proc not in found and proc not in known:
                found.add(proc)
                todo.append(proc.pid)
    return found


#: Name prefixes of threads that belong to something of wider scope than a test
#: while it is open (``owned_threads``).
_OWNED: list[str] = []


@contextlib.contextmanager
def owned_threads(prefix: str) -> Iterator[None]:
    """While the block runs, threads named ``prefix…`` are not a test's leak: a
    module's browser starts its event loop's executor threads when it needs them."""
    _OWNED.append(prefix)
    try:
        yield
    finally:
        _OWNED.remove(prefix)


def live_threads() -> set[threading.Thread]:
    """Non-daemon threads of this process that are alive (the main thread excluded)."""
    main = threading.main_thread()
    return {t for t in threading.enumerate() if t.is_alive() and not t.daemon and t is not main
            and not t.name.startswith(tuple(_OWNED))}


@dataclass
class LeakWatch:
    """The threads and processes alive when a test began, and those allowed since."""

    threads: set[threading.Thread] = field(default_factory=live_threads)
    procs: set[Proc] = field(default_factory=descendants)

    def allow_current(self) -> None:
        """Everything alive now may outlive the test (a wider fixture started it)."""
        self.threads |= live_threads()
        self.procs |= descendants()

    def new(self) -> tuple[set[threading.Thread], set[Proc]]:
        return live_threads() - self.threads, descendants(known=self.procs)

    def leftovers(self, grace: float = GRACE_S) -> list[str]:
        """What is new and still alive after ``grace`` seconds, described; [] if none."""
        deadline = time.monotonic() + grace
        threads, procs = self.new()
        while (threads or procs) and time.monotonic() < deadline:
            time.sleep(0.05)
            threads, procs = self.new()
        return ([f"thread {t.name!r} ({type(t).__module__}.{type(t).__qualname__}, "
                 f"target {getattr(t, '_target', None)!r})" for t in threads]
                + [f"process {p.describe()}" for p in sorted(procs, key=lambda p: p.pid)])
