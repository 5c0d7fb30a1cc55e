"""The ``bart`` command: the one front door (DESIGN.md §2)."""

from .cli import main

__all__ = ["main"]
