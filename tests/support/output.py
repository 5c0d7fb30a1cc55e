"""A subprocess's output read on a thread (a full pipe must never block the process)."""

from __future__ import annotations

import subprocess
import threading
import time


class OutputReader:
    """Collects the text lines of ``proc.stdout`` on a daemon thread until it closes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, marker: str, timeout: float, what: str = "") -> str:
        """All the output so far, once ``marker`` is in it; fail when the process
        ended or ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while marker not in self.text:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.thread.join(2)
                raise AssertionError(f"{what or f'no {marker!r} in the output'}:\n{self.text}")
            time.sleep(0.05)
        return self.text
