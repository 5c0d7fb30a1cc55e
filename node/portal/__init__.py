"""The resident portal: FastAPI routes, captive-portal probes and the pages.

The presentation layer lives in :mod:`node.portal.i18n` (the gettext
catalogues in ``locale/``), :mod:`node.portal.pictograms` and
:mod:`node.portal.render` (Jinja2 templates in ``templates/``).

Importing this package first imports FastAPI with its own pydantic models
deferred (:func:`import_fastapi_deferred`).
"""

from __future__ import annotations

import sys


def import_fastapi_deferred() -> bool:
    """Import FastAPI with the pydantic models it defines built on first use, not now.

    FastAPI defines some fifty models of the OpenAPI document
    (``fastapi.openapi.models``) at import; a node uses them only when someone
    asks for ``/api/openapi.json`` or the API docs page. Built at once they hold
    ~1.5 MiB for as long as the node runs (issue 15, memory: 80.0 -> 78.5 MB in
    ``bench/idle.py --enrolled --reports 100000 --streams 100``). pydantic's
    ``defer_build`` is a model setting; it is set on :class:`pydantic.BaseModel`'s
    configuration only while FastAPI is imported, so that the classes FastAPI
    defines inherit it and no others do (the node's own models, and FastAPI's
    per-route models, are built as before). False when FastAPI was imported
    already (nothing is changed then).
    """
    if "fastapi" in sys.modules:
        return False
    from pydantic import BaseModel

    config = BaseModel.model_config
    before = config.get("defer_build")
    config["defer_build"] = True
    try:
        import fastapi  # noqa: F401
    finally:
        if before is None:
            config.pop("defer_build", None)
        else:
            config["defer_build"] = before
    return True


import_fastapi_deferred()
