"""The neighbourhood mesh on a node: discovery, sessions, relay, catch-up (docs/mesh.md)."""
