"""A narrower runtime (issue 16): the button service, the resident pages and API,
the demo pages, the team pages and the metrics receive small interfaces, not the whole
``NodeRuntime``; nothing of them imports node/runtime.py, so the buttons <->
runtime import cycle is gone. mypy checks that ``NodeRuntime`` provides every
interface (``node.runtime.narrow_views``, tests/unit/test_lint.py); this file
checks the imports and that each interface names only what the runtime has.
"""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The modules that see the node through an interface, and that interface.
NARROW = {
    "node/buttons.py": "ButtonRuntime",
    "node/portal/deps.py": "PortalRuntime",
    "node/portal/demo.py": "DemoRuntime",
    "node/portal/api.py": None,
    "node/portal/resident.py": None,
    "node/team/session.py": "TeamRuntime",
    "node/metrics.py": "MetricsRuntime",
}


def _imports_runtime(path: Path) -> list[int]:
    """Lines of ``path`` that import node/runtime.py (also under TYPE_CHECKING)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if module.endswith("runtime") or any(a.name == "runtime" for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Import):
            lines += [node.lineno for a in node.names if a.name == "node.runtime"]
    return lines


def test_no_narrowed_module_imports_the_runtime() -> None:
    bad = {rel: lines for rel in NARROW if (lines := _imports_runtime(ROOT / rel))}
    assert not bad, f"imports of node/runtime.py: {bad}"


def test_importing_the_buttons_and_the_pages_does_not_load_the_runtime() -> None:
    """In a fresh interpreter: the cycle is gone at load time, not only in the source."""
    code = ("import sys\n"
            "import node.buttons, node.portal.deps, node.portal.demo, node.portal.api\n"
            "import node.portal.resident, node.team.session, node.team.routes\n"
            "print('node.runtime' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _protocol_members(proto: type) -> set[str]:
    names = set(getattr(proto, "__annotations__", {}))
    names |= {n for n, v in vars(proto).items() if not n.startswith("_")
              and (inspect.isfunction(v) or isinstance(v, property))}
    return names


def _runtime_members() -> set[str]:
    """Methods of NodeRuntime and the attributes its __init__ sets."""
    from node.runtime import NodeRuntime

    names = {n for n in dir(NodeRuntime) if not n.startswith("_")}
    tree = ast.parse(inspect.getsource(NodeRuntime.__init__).strip())
    names |= {t.attr for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
              for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
              if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
              and t.value.id == "self"}
    return names


def test_each_interface_is_small_and_names_only_what_the_runtime_has() -> None:
    import node.buttons
    import node.metrics
    import node.portal.demo
    import node.portal.deps
    import node.team.session

    modules = {"node/buttons.py": node.buttons, "node/portal/deps.py": node.portal.deps,
               "node/portal/demo.py": node.portal.demo,
               "node/team/session.py": node.team.session, "node/metrics.py": node.metrics}
    have = _runtime_members()
    for rel, name in NARROW.items():
        if name is None:
            continue
        members = _protocol_members(getattr(modules[rel], name))
        assert members, name
        assert members <= have, f"{name} names what NodeRuntime lacks: {members - have}"
        # Small: a fraction of what the runtime offers.
        assert len(members) <= len(have) // 2, f"{name} is as wide as the runtime"


def test_the_runtime_is_checked_against_every_interface() -> None:
    """``narrow_views`` is what makes mypy compare NodeRuntime with each interface."""
    source = (ROOT / "node/runtime.py").read_text()
    tree = ast.parse(source)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
              and n.name == "narrow_views")
    returned = ast.unparse(fn.returns) if fn.returns else ""
    for name in ("ButtonRuntime", "PortalRuntime", "DemoRuntime", "TeamRuntime",
                 "MetricsRuntime"):
        assert name in returned


def test_the_uplink_schedule_is_pure() -> None:
    """UplinkSchedule takes its clock as arguments: no time, no randomness inside."""
    import node.uplink

    for fn in (node.uplink.UplinkSchedule, node.uplink.backoff_s):
        tree = ast.parse(inspect.getsource(fn))
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert not used & {"time", "random", "asyncio", "datetime"}, fn
    assert "uniform" in inspect.signature(node.uplink.backoff_s).parameters
