"""clrk: run a coding agent as an internal HTTP service, the API key kept in the egress gateway."""

__version__ = "0.1.0"
