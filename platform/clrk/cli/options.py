"""What the commands share in turning options into a settings object."""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings

__all__ = ["settings_from"]


def settings_from[S: BaseSettings](cls: type[S], **options: Any) -> S:
    """``cls`` built from the options the user gave. An option left out is ``None`` (each such
    option defaults to ``None``, whatever the field's own default), and it is left out here too,
    so the field comes from the environment (``CLRK_*``) or its default, as if the option did not
    exist; an option given wins over both."""
    return cls(**{name: value for name, value in options.items() if value is not None})
