"""Nodes of the insert family (filled in by its issue)."""

NODES = []
