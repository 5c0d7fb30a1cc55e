"""What the children of ``bart central run`` run (central/supervise.py starts them).

``python -m central.worker http --fd N …`` serves ``central.asgi:create`` on the
listening socket it inherited as file descriptor N (uvicorn, one process, the
options of central/server.py) and writes a byte to ``--ready-fd`` once it
serves. ``python -m central.worker projector --origin NAME`` runs the projector
(central/projector.py) over the database ``$BART_CENTRAL_RUN_DATABASE_URL``. Both
read the data directory from ``$BART_CENTRAL_DIR`` (workers load central from it,
with ``$BART_CENTRAL_DATABASE_URL`` when ``--database-url`` was given:
central/asgi.py), and stop by themselves when their parent (``--parent``) is gone.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path


def _watch_parent(parent: int, stop: Callable[[], None], interval: float = 1.0) -> None:
    """Call ``stop`` once the parent process ``parent`` is gone (we were orphaned)."""
    def watch() -> None:
        while True:
            threading.Event().wait(interval)
            if os.getppid() != parent:
                stop()
                return

    threading.Thread(target=watch, name="bart-worker-parent", daemon=True).start()


def serve_http(fd: int, host: str, port: int, trusted_proxies: Sequence[str], parent: int,
               ready_fd: int | None) -> int:
    """Serve central on the inherited socket ``fd`` until SIGINT/SIGTERM (exit 0)."""
    from common.server import import_fastapi_deferred

    # FastAPI imports pydantic.v1 (1.6 MB) only to ask whether a parameter's type is a
    # pydantic v1 model; central has none (pydantic 2 throughout), and without the
    # module FastAPI takes the answer as no.
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
    import_fastapi_deferred()  # its OpenAPI models built when /api/openapi.json is asked
    import uvicorn

    from .server import APP, ServingProcess, options

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)

    sock = socket.socket(fileno=fd)
    server = ServingProcess(uvicorn.Config(APP, **options(host, port, trusted_proxies)), ready)

    def orphaned() -> None:
        server.should_exit = True

    _watch_parent(parent, orphaned)
    server.run(sockets=[sock])
    return 0


def _psycopg_without_ssl() -> None:
    """Import psycopg without Python's ssl module (~1.3 MB of the projector) when it can.

    Only asyncio asks for ssl here (psycopg and SQLAlchemy import asyncio, which
    takes ssl as optional); psycopg's C implementation leaves TLS to its libpq. Its
    pure-Python one (``PSYCOPG_IMPL=python``, or no psycopg-binary) loads libssl
    through ssl: then ssl is imported after all.
    """
    if "ssl" in sys.modules or "psycopg" in sys.modules:
        return
    sys.modules["ssl"] = None  # type: ignore[assignment]
    try:
        import psycopg
    except ImportError:
        del sys.modules["ssl"]
        for name in [m for m in sys.modules if m == "psycopg" or m.startswith("psycopg.")]:
            del sys.modules[name]
        import psycopg  # noqa: F401
    finally:
        if sys.modules.get("ssl", 0) is None:
            del sys.modules["ssl"]  # later imports of ssl work (asyncio has done without)


def run_projector(parent: int, origin: str) -> int:
    """The projector until SIGINT/SIGTERM (exit 0), as ``bart central run``'s child:
    central's origin and database URL are given (no settings loaded, no pydantic)."""
    from .supervise import RUN_DATABASE_URL_ENV

    database_url = os.environ.pop(RUN_DATABASE_URL_ENV, "")
    if not database_url:
        raise SystemExit(f"${RUN_DATABASE_URL_ENV} is not set (bart central run sets it)")
    if database_url.startswith("postgresql"):
        _psycopg_without_ssl()  # before anything imports asyncio
    from .projector import project_until_stopped
    project_until_stopped(Path(os.environ["BART_CENTRAL_DIR"]), database_url, origin, parent)
    return 0


USAGE = ("usage: python -m central.worker http --fd N --host H --port P --parent PID "
         "[--trusted-proxy A]... [--ready-fd N] | projector --parent PID --origin NAME "
         "(started by bart central run)")


def _options(argv: Sequence[str]) -> dict[str, list[str]]:
    """``--name value`` pairs (repeatable); no argparse (0.5 MB of each child)."""
    if len(argv) % 2 or not all(a.startswith("--") for a in argv[::2]):
        raise SystemExit(USAGE)
    out: dict[str, list[str]] = {}
    for name, value in zip(argv[::2], argv[1::2], strict=True):
        out.setdefault(name[2:], []).append(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    what, opts = (args[0], _options(args[1:])) if args else ("", {})
    if not Path(os.environ.get("BART_CENTRAL_DIR", "")).is_dir():
        raise SystemExit("$BART_CENTRAL_DIR names no central data directory "
                         "(bart central run sets it)")
    try:
        parent = int(opts["parent"][-1])
        if what == "http":
            ready = opts.get("ready-fd")
            fd, host, port = int(opts["fd"][-1]), opts["host"][-1], int(opts["port"][-1])
            ready_fd = int(ready[-1]) if ready else None
        elif what == "projector":
            origin = opts["origin"][-1]
        else:
            raise SystemExit(USAGE)
    except (KeyError, ValueError):
        raise SystemExit(USAGE) from None
    try:
        if what == "http":
            return serve_http(fd, host, port, opts.get("trusted-proxy", []), parent, ready_fd)
        return run_projector(parent, origin)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return 0


if __name__ == "__main__":
    sys.exit(main())
