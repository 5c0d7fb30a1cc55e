"""Plumbing that node and central both need and that is not protocol (DESIGN.md §2).

One copy, so that the two sides cannot drift. Imports no Bart package.

- :mod:`common.apidocs` — the offline API docs page and the icon;
- :mod:`common.archive` — backup archives (packed, encrypted, SQLite snapshots);
- :mod:`common.certs` — the certificate authority node and central make;
- :mod:`common.clock` — ``now_ms``: the wall clock in Unix milliseconds;
- :mod:`common.csrf` — CSRF tokens and the same-origin check;
- :mod:`common.datadir` — one running program per data directory;
- :mod:`common.files` — atomic file writes (file and directory fsynced);
- :mod:`common.i18n` — gettext catalogues, plurals, Accept-Language;
- :mod:`common.logins` — refused logins, session token hashes, the login gate;
- :mod:`common.metrics` — the separate ``/metrics`` listener;
- :mod:`common.migrations` — named, transactional SQLite migrations (node store, ``team.db``);
- :mod:`common.passwords` — password hashing and logins that cost the same;
- :mod:`common.quietlog` — the "loudly once, then quietly" logger;
- :mod:`common.ratelimit` — the abuse-limit policy: lookups, logins, connections;
- :mod:`common.server` — the uvicorn server class (a stop signal exits 0);
- :mod:`common.settings` — the settings base class (flags, then environment).
"""
