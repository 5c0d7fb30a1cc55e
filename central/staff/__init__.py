"""Central's staff side: the pages and API that police, municipality and admins use.

One module per concern; :func:`install` (``central.app`` calls it) mounts them all.

- :mod:`central.staff.routes` — login, reports, nodes and audit routes, and ``install``;
- :mod:`central.staff.accounts` — staff accounts, sessions, logins, the audit trail;
- :mod:`central.staff.admin` — the admin's account pages;
- :mod:`central.staff.alarms` — the alarm desk (panic alarms, live stream);
- :mod:`central.staff.broadcasts` — area broadcast pages;
- :mod:`central.staff.db` — the staff tables;
- :mod:`central.staff.insight` — the insight pages and CSV export;
- :mod:`central.staff.web` — what every staff page shares: sessions, CSRF, forms,
  rendering, headers.

Nothing is imported here: ``central.handling`` and others import
:mod:`central.staff.accounts` while :mod:`central.staff.routes` imports them back.
"""

from __future__ import annotations

__all__ = ["accounts", "admin", "alarms", "broadcasts", "db", "insight", "routes", "web"]
