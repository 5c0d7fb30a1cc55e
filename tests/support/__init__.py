"""What the tests share, importable as ``tests.support`` (conftests hold fixtures only).

``pyproject.toml`` puts the repository root on ``sys.path`` (pytest's
``pythonpath``), so every test module, conftest and bench script imports these
helpers by their package name. The modules, each importing only what it needs:

- ``base``: the real components a test needs (``require``, ``require_binary``),
  ``free_port``, ``wait_until``, ``bart_command``, ``log_tail`` (re-exported here);
- ``processes``: process groups, Mosquitto pids, stopping with a deadline;
- ``leaks``: the threads and child processes a test leaves behind;
- ``postgres``: a real PostgreSQL server in a temporary directory;
- ``node`` / ``central``: ``bart node run`` / ``bart central run`` as real
  subprocesses (``NodeProcess``, ``CentralProcess``);
- ``mqtt``, ``sse``, ``metrics``: probes that talk to a running node or central
  from the outside (MQTT, the SSE streams, ``/metrics``);
- ``html``, ``team``: the server-rendered pages as a browser without JavaScript
  reads them (CSRF tokens, dashboard rows, a logged-in team member);
- ``browser``: headless Debian Chromium through Playwright, team and staff logins;
- ``output``: a subprocess's output read on a thread (``bart demo``);
- ``disk``: a disk that fills (a real tmpfs);
- ``ingest``, ``staff``, ``desk``: central in-process: enrolled nodes, sealed
  batches, logged-in staff clients, the alarm desk under a real uvicorn;
- ``netns``, ``neighbourhood``, ``wallclock``: nodes and central in network
  namespaces for ``tests/system``.
"""

from __future__ import annotations

from tests.support.base import (
    IN_CI,
    bart_command,
    free_port,
    log_tail,
    require,
    require_binary,
    wait_until,
)

__all__ = ["IN_CI", "bart_command", "free_port", "log_tail", "require", "require_binary",
           "wait_until"]
