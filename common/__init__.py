"""Plumbing that node and central both need and that is not protocol (DESIGN.md §2).

One copy, so that the two sides cannot drift. Imports no Bart package.
Today: the offline API docs page and the icon (:mod:`common.apidocs`),
password hashing (:mod:`common.passwords`), CSRF tokens and the same-origin
check (:mod:`common.csrf`) and atomic file writes (:mod:`common.files`);
issue "one house" moves the migration runner, language negotiation, the quiet
logger and the clocks here too.
"""
