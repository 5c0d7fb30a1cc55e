"""The house rules of logging and errors (issue 16, STYLE rules 11 and 13).

- every module logs to ``logging.getLogger(__name__)``: no hand-written
  ``bart.node.…`` names that drift from the module tree;
- importing a Bart module changes no other library's logger (levels, filters,
  handlers): a node quiets ``httpx`` and ``zeroconf`` when it starts
  (node/logs.py), not whoever happens to import the uplink;
- every exception class that ``node`` or ``central`` defines is under its
  package's root error (``NodeError``, ``CentralError``), so that the CLI and
  the HTTP boundary can tell "ours" from a bug.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from central.errors import CentralError
from node.errors import NodeError

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
BART = ("sync", "common", "broker", "hardware", "point", "node", "central", "bart")

#: Loggers named by a string on purpose: (file, name) → why.
NAMED_LOGGERS = {
    ("node/logs.py", "httpx"): "the node's set-up of other libraries' loggers",
    ("node/logs.py", "zeroconf"): "the node's set-up of other libraries' loggers",
    ("bart/demo.py", "broker.process"): "the demo drops Mosquitto's run-as-root notice",
}


def bart_modules() -> list[str]:
    names = []
    for package in BART:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, f"{package}.")
                  if not info.name.endswith("__main__")]
    return names


def test_modules_log_under_their_own_name() -> None:
    wrong = []
    for package in BART:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None)
                        == "getLogger" and node.args):
                    continue
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and (rel, arg.value) not in NAMED_LOGGERS:
                    wrong.append(f"{rel}:{node.lineno} getLogger({arg.value!r})")
    assert not wrong, "use logging.getLogger(__name__):\n" + "\n".join(wrong)


# Run in a fresh interpreter: first every third-party module a Bart module
# imports, then a snapshot of every logger, then every Bart module, then the
# snapshot again. A change in between was made by a Bart module's import.
CHILD = textwrap.dedent("""
    import importlib, json, logging, sys
    sys.path.insert(0, {root!r})
    BART = {bart!r}
    mode, names = sys.argv[1], json.loads(sys.stdin.read())

    def ours(name):
        return name.split(".")[0] in BART

    def state():
        found = {{"(root)": [logging.root.level, [type(h).__name__ for h in logging.root.handlers],
                            [type(f).__name__ for f in logging.root.filters]]}}
        for name, logger in logging.root.manager.loggerDict.items():
            if isinstance(logger, logging.Logger) and not ours(name):
                found[name] = [logger.level, [type(h).__name__ for h in logger.handlers],
                               [type(f).__name__ for f in logger.filters], logger.propagate,
                               logger.disabled]
        return found

    if mode == "list":
        for name in names:
            importlib.import_module(name)
        print(json.dumps([m for m in list(sys.modules) if not ours(m)]))
    else:
        third, bart = names
        for name in third:
            try:
                importlib.import_module(name)
            except Exception:
                pass
        before = state()
        for name in bart:
            importlib.import_module(name)
        print(json.dumps([before, state()]))
""")


def _child(tmp_path: Path, mode: str, names: object) -> object:
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), bart=BART), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script), mode], input=json.dumps(names),
                          capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_bart_changes_no_other_librarys_logger(tmp_path: Path) -> None:
    ours = bart_modules()
    third = _child(tmp_path, "list", ours)
    snapshots = _child(tmp_path, "check", [third, ours])
    assert isinstance(snapshots, list)
    before: dict[str, list[object]] = snapshots[0]
    after: dict[str, list[object]] = snapshots[1]
    changed = {name: (before.get(name), now) for name, now in after.items()
               if before.get(name, [0, [], [], True, False]) != now}
    assert not changed, f"imported Bart modules changed these loggers: {changed}"


#: Exception classes of node/ and central/ that stay outside the root error, and why.
OUTSIDE_ROOT: dict[str, str] = {}


def _modules(package: str) -> list[ModuleType]:
    path = importlib.import_module(package).__path__
    return [importlib.import_module(info.name)
            for info in pkgutil.walk_packages(path, f"{package}.")]


@pytest.mark.parametrize(("package", "root"), [("node", NodeError), ("central", CentralError)])
def test_every_exception_is_under_its_packages_root_error(package: str,
                                                          root: type[Exception]) -> None:
    outside, seen = [], 0
    for module in _modules(package):
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                continue
            seen += 1
            qualified = f"{module.__name__}.{name}"
            if not issubclass(obj, root) and qualified not in OUTSIDE_ROOT:
                outside.append(qualified)
    assert seen > 10  # the walk found the package's exceptions at all
    assert not outside, f"not under {root.__name__}: {outside}"
