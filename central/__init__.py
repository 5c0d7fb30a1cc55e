"""Central server for police and municipality (DESIGN.md §6).

The central-server issue fills this package; it imports only ``sync``.
"""
