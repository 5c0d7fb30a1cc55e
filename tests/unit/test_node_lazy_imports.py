"""What a running node imports (issue 15, memory): the libraries only some nodes or
some commands need stay out of ``bart node run`` until they are used.

Each module a node loads costs its code objects for as long as it runs (~0.3 MB
for gpiozero, ~0.7 MB for sqlite-utils with its dependencies; a node's RSS
budget is 80 MB). A fresh Python builds the node's app as ``bart node run``
does (CLI, settings, the app with its runtime, uvicorn's config) on an
initialised data directory, and lists what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Imported only where used: wired buttons (gpiozero), a pending migration
#: (sqlite-utils), ``metrics_port`` (prometheus_client), the one page with a QR
#: code (qrcode), mDNS discovery (zeroconf, off in this node).
LAZY = ("gpiozero", "sqlite_utils", "prometheus_client", "qrcode", "zeroconf")

PROBE = """
import json, sys
from pathlib import Path
from typing import Any
import bart.cli
from node.config import NodeSettings
from node.server import uvicorn_config
settings = NodeSettings.load(Path(sys.argv[1]))
uvicorn_config(settings, nofile=1024)
from fastapi.openapi.models import OpenAPI
deferred = type(OpenAPI.__pydantic_core_schema__).__name__ == "MockCoreSchema"
print(json.dumps({"modules": sorted(sys.modules), "openapi_deferred": deferred}))
"""


def probe(data_dir: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(data_dir)], capture_output=True,
                         text=True, timeout=120, check=True, cwd=data_dir).stdout
    found: dict[str, Any] = json.loads(out.splitlines()[-1])
    return found


def node_modules(data_dir: Path) -> set[str]:
    return set(probe(data_dir)["modules"])


def test_a_running_node_leaves_the_optional_libraries_out(tmp_path: Path) -> None:
    from node.setup import init_node

    data_dir = tmp_path / "node"
    init_node(data_dir, name="lazy-node", area="ESC-01",
              mesh={"port": 0})  # mesh off: discovery would load zeroconf
    loaded = node_modules(data_dir)
    assert "node.runtime" in loaded and "fastapi" in loaded  # the probe built the app
    heavy = sorted({m.split(".")[0] for m in loaded} & set(LAZY))
    assert heavy == [], f"a node without their features imports {heavy}"
    assert "node.portal.demo" not in loaded  # the demo's pages, for a demo node only


def test_fastapis_openapi_models_are_built_only_when_the_document_is_asked_for(
        tmp_path: Path) -> None:
    """node/portal/__init__.py: ~1.5 MB less while nobody reads /api/openapi.json
    (tests/integration/test_resident_apidocs.py reads it)."""
    from node.setup import init_node

    data_dir = tmp_path / "node"
    init_node(data_dir, name="lazy-node", area="ESC-01", mesh={"port": 0})
    assert probe(data_dir)["openapi_deferred"] is True


def test_mdns_discovery_runs_python_zeroconf_from_its_sources() -> None:
    """node/mesh/_purezc.py: ~2.8 MB less than with its compiled modules."""
    code = ("import json, sys, node.mesh.discovery\n"
            "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for name, m in "
            "list(sys.modules.items()) if name.split('.')[0] == 'zeroconf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    files = json.loads(out.splitlines()[-1])
    assert len(files) > 20 and any(f.endswith("_dns.py") for f in files), files
    compiled = [f for f in files if not f.endswith(".py")]
    assert compiled == [], f"zeroconf modules loaded compiled: {compiled}"
