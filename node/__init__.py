"""The edge node: store, portal, alert flow (DESIGN.md §2)."""
