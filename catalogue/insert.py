"""Tools of the insert family (filled in by its issue)."""

TOOLS = ()
