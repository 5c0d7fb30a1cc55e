"""Plumbing that node and central both need and that is not protocol (DESIGN.md §2).

One copy, so that the two sides cannot drift. Imports no Bart package.
Today: the offline API docs page and the icon (:mod:`common.apidocs`); issue
"one house" moves password hashing, CSRF checks, atomic writes, the migration
runner, language negotiation and the quiet logger here.
"""
