"""Tools of the tryon family (filled in by its issue)."""

TOOLS = ()
