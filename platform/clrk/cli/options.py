"""What the commands share in turning options into a settings object."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from clrk.errors import ClrkError

__all__ = ["settings_from"]


def settings_from[S: BaseSettings](cls: type[S], **options: Any) -> S:
    """``cls`` built from the options the user gave. An option left out is ``None`` (each such
    option defaults to ``None``, whatever the field's own default), and it is left out here too,
    so the field comes from the environment (``CLRK_*``) or its default, as if the option did not
    exist; an option given wins over both. A value that does not validate is one ``error:`` line
    naming the setting, not a traceback."""
    try:
        return cls(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(part) for part in first["loc"]) or cls.__name__
        prefix = str(cls.model_config.get("env_prefix") or "")
        raise ClrkError(f"invalid {setting} (its option, or {prefix}{setting.upper()}): {first['msg']}") from None
