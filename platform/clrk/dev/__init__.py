"""``clrk dev``: the whole platform in one process on one machine."""

TRACES_PATH = "/_clrk/traces"
"""Where a running ``clrk dev`` serves its recent spans as JSON (``clrk traces``, ``clrk invoke -v``)."""
