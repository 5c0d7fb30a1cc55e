"""The resident portal: FastAPI routes, captive-portal probes and the pages.

The presentation layer lives in :mod:`node.portal.i18n` (the gettext
catalogues in ``locale/``), :mod:`node.portal.pictograms` and
:mod:`node.portal.render` (Jinja2 templates in ``templates/``).

Importing this package first imports FastAPI with its own pydantic models
deferred (:func:`common.server.import_fastapi_deferred`: ~1.5 MiB of OpenAPI
models built only when someone asks for ``/api/openapi.json``; issue 15,
80.0 -> 78.5 MB in ``bench/idle.py --enrolled --reports 100000 --streams 100``).
"""

from __future__ import annotations

from common.server import import_fastapi_deferred

import_fastapi_deferred()
