"""What the commands share: options turned into a settings object, and the servers' log lines."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from clrk.errors import ClrkError

__all__ = ["log_to_stderr", "settings_from"]


def log_to_stderr() -> None:
    """INFO and above to stderr, one line each, for the servers a cluster runs (``clrk ingress``,
    ``clrk egress``): what the pod's logs show."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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
