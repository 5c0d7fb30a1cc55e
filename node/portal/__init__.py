"""The resident portal: FastAPI routes, captive-portal probes and the pages.

The presentation layer lives in :mod:`node.portal.i18n` (the gettext
catalogues in ``locale/``), :mod:`node.portal.pictograms` and
:mod:`node.portal.render` (Jinja2 templates in ``templates/``).
"""
