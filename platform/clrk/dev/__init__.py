"""``clrk dev``: the whole platform in one process on one machine."""
