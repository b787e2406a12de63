"""Telemetry helpers shared by clrk components (OpenTelemetry API only)."""
