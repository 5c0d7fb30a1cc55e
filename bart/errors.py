"""What went wrong, in words: the one place where a ``bart`` command's exception
becomes one or two lines on stderr and an exit code.

Commands raise :class:`CommandError` (or :class:`Unavailable`) for mistakes they
can name themselves; everything else that reaches :func:`explain` is turned into
the command's own terms here: a pydantic error names the flag or the setting and
its rule (never a library URL), a database that does not answer says how to
start it, a port in use says how to find who holds it. Anything unforeseen is a
bug: one line, and ``--debug`` for the traceback.

Exit codes (docs/cli.md):

>>> EXIT_ERROR, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_BUG, EXIT_INTERRUPTED
(1, 2, 3, 70, 130)
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import re
import socket
from dataclasses import dataclass
from typing import Any, Final

#: The command did its work.
EXIT_OK: Final = 0
#: A mistake, said on stderr with how to fix it (a wrong value, no node here, refused).
EXIT_ERROR: Final = 1
#: Wrong usage: an unknown command or flag, a missing argument (argparse).
EXIT_USAGE: Final = 2
#: Something the command needs is not there: a port in use, the database or the
#: node or demo not running or not answering. Trying again later may work.
EXIT_UNAVAILABLE: Final = 3
#: An unexpected error: a bug in bart (EX_SOFTWARE). ``--debug`` shows the traceback.
EXIT_BUG: Final = 70
#: Stopped with Ctrl-C.
EXIT_INTERRUPTED: Final = 130

DEBUG_FLAG: Final = "--debug"


class CommandError(Exception):
    """A mistake a command names itself: what is wrong, and how to fix it."""

    code: int = EXIT_ERROR

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix


class Unavailable(CommandError):
    """Something the command needs is not there (a port, the database, a running node)."""

    code = EXIT_UNAVAILABLE


@dataclass(frozen=True)
class Explained:
    """An error in words: what is wrong, how to fix it, and the exit code."""

    what: str
    fix: str = ""
    code: int = EXIT_ERROR

    def text(self, prog: str = "bart") -> str:
        """One or two lines for stderr."""
        line = f"{prog}: {self.what}"
        return f"{line}\n  fix: {self.fix}" if self.fix else line


def explain(exc: BaseException, args: argparse.Namespace | None = None) -> Explained:
    """``exc`` in the terms of the command that ``args`` ran."""
    if isinstance(exc, CommandError):
        return Explained(exc.what, exc.fix, exc.code)
    for link in _chain(exc):
        if _is_validation_error(link):
            return _validation(link, _source(exc, link), args)
    database = _database(exc, args)
    if database is not None:
        return database
    if isinstance(exc, OSError) and not _is_known(exc):
        return _os_error(exc)
    network = _network(exc)
    if network is not None:
        return network
    if _is_known(exc) or isinstance(exc, ValueError):
        return Explained(_scrub(str(exc)) or type(exc).__name__)
    return Explained(f"unexpected error: {type(exc).__name__}: {_scrub(str(exc))[:300]} "
                     "(a bug in bart)",
                     f"run the same command again with {DEBUG_FLAG} and report what it prints",
                     EXIT_BUG)


def split_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (accepted anywhere before ``--``), and whether it was
    there."""
    end = argv.index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != DEBUG_FLAG]
    return head + argv[end:], len(head) != end


# -- ports ------------------------------------------------------------------------------


def require_free_port(host: str, port: int, what: str, flag: str, setting: str) -> None:
    """Unavailable unless ``host:port`` can be listened on now (as uvicorn and Mosquitto
    bind: SO_REUSEADDR), so that a server is not started only to fail half-way.
    ``setting`` names where else the port is set, e.g. "http_port in node.toml"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise port_problem(exc, host, port, what, flag, setting) from exc


def port_problem(exc: OSError, host: str, port: int, what: str, flag: str,
                 setting: str) -> CommandError:
    """Why ``host:port`` cannot be listened on, and what to do."""
    if exc.errno == errno.EADDRINUSE:
        return Unavailable(
            f"port {port} is in use by another program, so {what} cannot listen on it",
            f"stop that program (find it: sudo ss -ltnp 'sport = :{port}'), or choose "
            f"another port: {flag} N (or {setting})")
    if exc.errno == errno.EACCES:
        return CommandError(f"not allowed to listen on port {port} for {what} (ports below "
                            "1024 need root)", f"choose a port from 1024 up: {flag} N")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc,
                                                                          socket.gaierror):
        return CommandError(f"{host} is not an address of this machine, so {what} cannot "
                            "listen there",
                            "use 127.0.0.1 (this machine only) or 0.0.0.0 (every network)")
    return CommandError(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}")


# -- the kinds of exception -------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in seen and len(seen) < 10:
        seen.append(link)
        link = link.__cause__ or link.__context__
    return seen


def _is_known(exc: BaseException) -> bool:
    """One of bart's own packages' errors: their messages are written for people."""
    from central.errors import CentralError
    from hardware import HardwareError
    from node.errors import NodeError
    from sync import SyncError

    return isinstance(exc, NodeError | SyncError | HardwareError | CentralError)


def _is_validation_error(exc: BaseException) -> bool:
    from pydantic import ValidationError

    return isinstance(exc, ValidationError)


def _source(outer: BaseException, inner: BaseException) -> str:
    """The file a validation error came from (``ConfigError("PATH: …")``), or ""."""
    if outer is inner:
        return ""
    head = str(outer).split(": ", 1)[0]
    return head if head.endswith((".toml", ".json")) else ""


_AREA_RULE: Final = ("an area code: capital letters, digits and '-', at most 16, "
                     "e.g. ESCAMP or ESC-01")
#: sync.bodies.SLUG in words (node, central, point and button names).
_SLUG_PATTERN: Final = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
_SLUG_RULE: Final = ("a name of lower-case letters, digits and '-' (not first or last), "
                     "at most 63, e.g. escamp-west")


def _rule(field: str, error: dict[str, Any]) -> str:
    """A field's rule, said plainly."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    msg = str(error.get("msg", ""))
    if kind == "value_error":
        return msg.removeprefix("Value error, ").removeprefix(f"{field}: ")
    plain = {"int_parsing": "must be a whole number", "float_parsing": "must be a number",
             "bool_parsing": "must be true or false", "string_type": "must be text",
             "extra_forbidden": "is not a setting bart knows (misspelt?)"}
    if kind in plain:
        return plain[kind]
    if kind == "string_pattern_mismatch":
        if field == "area":
            return f"must be {_AREA_RULE}"
        if ctx.get("pattern") == _SLUG_PATTERN:
            return f"must be {_SLUG_RULE}"
        return "has characters that are not allowed there"
    if kind == "missing":
        return "is required"
    if field.endswith("port") and kind in ("greater_than_equal", "less_than_equal",
                                           "greater_than", "less_than"):
        if "ge" in ctx:
            return f"must be a port number from {ctx['ge']} to 65535"
        return "must be a port number up to 65535"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        words = {"greater_than_equal": "at least", "less_than_equal": "at most",
                 "greater_than": "more than", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {words} {limit}"
    return re.sub(r"^(Input|String|Value) should( be)?", lambda m: "must" + (m.group(2) or ""),
                  msg)


def _validation(exc: Any, path: str, args: argparse.Namespace | None) -> Explained:
    problems = []
    for error in exc.errors(include_url=False)[:3]:
        loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int)]
        field = loc[-1] if loc else "value"
        top = loc[0] if loc else ""
        given = error.get("input")
        # The flag that gave the value (--area, --mesh-port for mesh.port), if one did.
        keys = ["_".join(loc)] + ([top] if len(loc) == 1 else [])
        flag = next((k for k in keys if args is not None and given is not None
                     and getattr(args, k, None) == given), None)
        if flag is not None:
            label = "--" + flag.replace("_", "-")  # the flag that gave it
        elif path:
            label = f"{'.'.join(loc)} in {path}"
        else:
            label = ".".join(loc) or "a value"
        rule = _rule(field, error)
        shown = (f" (not {given!r})" if error.get("type") != "extra_forbidden"
                 and isinstance(given, str | int | float)
                 and not isinstance(given, bool) and len(repr(given)) <= 80
                 and repr(given) not in rule else "")
        joint = " " if rule.startswith(("must", "is ", "has ", "'")) else ": "
        problems.append(f"{label}{joint}{rule}{shown}")
    what = "; ".join(problems)
    fix = (f"correct it in {path} (docs/configuration.md lists every setting)" if path
           and not (args is not None and any(p.startswith("--") for p in problems)) else "")
    return Explained(what, fix)


def _redact(url: str) -> str:
    return re.sub(r"://[^@/]*@", "://…@", url)


def _database(exc: BaseException, args: argparse.Namespace | None) -> Explained | None:
    """A database that cannot be reached or used (SQLAlchemy), or None."""
    try:
        from sqlalchemy import exc as sa_exc
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    url = getattr(args, "database_url", None) if args is not None else None
    flag = "--database-url"
    if isinstance(exc, sa_exc.ArgumentError | sa_exc.NoSuchModuleError):
        return Explained(f"{flag} {_redact(url) if url else ''} is not a database URL bart "
                         f"can use: {_scrub(str(exc))}".replace("  ", " "),
                         f"give {flag} postgresql://USER@HOST/DATABASE, or leave it out for "
                         "the SQLite file in the data directory")
    if not isinstance(exc, sa_exc.DBAPIError | sa_exc.OperationalError):
        return None
    orig = str(getattr(exc, "orig", None) or exc).strip()
    first = orig.splitlines()[0] if orig else ""
    where = _redact(url) if url else "central's database"
    m = re.search(r'server at "([^"]+)"(?: \([^)]*\))?, port (\d+) failed: (.+)', first)
    if m is not None:  # psycopg: connection to server at "HOST", port N failed: REASON
        host, port, reason = m.groups()
        reason = reason.removeprefix("FATAL:").strip()
        at = f"PostgreSQL at {host} port {port}"
        if "refused" in reason.lower() or "timeout" in reason.lower():
            return Explained(f"{at} does not answer ({reason.lower().rstrip('.')})",
                             "start it (sudo systemctl start postgresql) or give the right "
                             f"{flag}", EXIT_UNAVAILABLE)
        if "does not exist" in reason:
            return Explained(f"{at} answers, but {reason}",
                             "create it: sudo -u postgres createuser bart && sudo -u postgres "
                             "createdb -O bart bart (or give the right " + flag + ")")
        if "authentication failed" in reason or "password" in reason:
            return Explained(f"{at} refuses the login: {reason}",
                             f"check the user and password in {flag}")
        return Explained(f"{at} cannot be used: {reason}",
                         f"check that PostgreSQL runs and that {flag} is right",
                         EXIT_UNAVAILABLE)
    return Explained(f"the database {where} cannot be used: {first}",
                     "check the data directory's permissions (run as the user that owns it) "
                     "and its free disk space", EXIT_ERROR)


def _os_error(exc: OSError) -> Explained:
    name = exc.filename
    if isinstance(exc, PermissionError) and name:
        return Explained(f"not allowed to use {name}",
                         "run the command as the user that owns it (e.g. sudo -u bart bart …) "
                         "or as root")
    if isinstance(exc, FileNotFoundError) and name:
        return Explained(f"{name} does not exist", "check the path (and --data-dir)")
    if exc.errno == errno.ENOSPC:
        return Explained("the disk is full", "free some space, then try again")
    return Explained(f"{exc.strerror or exc}" + (f": {name}" if name else ""))


def _network(exc: BaseException) -> Explained | None:
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        return None
    if isinstance(exc, httpx.HTTPError):
        where = ""
        with contextlib.suppress(RuntimeError):  # no request attached
            where = f" {exc.request.url}"
        return Explained(f"no answer from{where}: {exc or type(exc).__name__}",
                         "check the address and that it runs", EXIT_UNAVAILABLE)
    return None


def _scrub(text: str) -> str:
    """No library URLs, pydantic's "For further information" lines or errno numbers in
    what we say."""
    lines = [line for line in text.splitlines()
             if "errors.pydantic.dev" not in line and "sqlalche.me" not in line]
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", "\n".join(lines))
    return re.sub(r"\[Errno -?\d+\] ", "", text).strip()  # "[Errno 111] Connection refused"
