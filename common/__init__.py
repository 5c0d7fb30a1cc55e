"""Plumbing that node and central both need and that is not protocol (DESIGN.md §2).

One copy, so that the two sides cannot drift. Imports no Bart package.
Today: the offline API docs page and the icon (:mod:`common.apidocs`),
password hashing (:mod:`common.passwords`), CSRF tokens and the same-origin
check (:mod:`common.csrf`), atomic file writes (:mod:`common.files`) and
the "loudly once, then quietly" logger (:mod:`common.quietlog`), backup
archives (:mod:`common.archive`: packed, encrypted, SQLite snapshots), one
running program per data directory (:mod:`common.datadir`); issue "one
house" moves the migration runner and the clocks here too.
"""
