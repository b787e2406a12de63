"""Cron schedules as Knative Eventing's PingSource reads them: robfig/cron v3. Pure.

A PingSource hands ``CRON_TZ=<timezone> <schedule>`` to robfig/cron's parser (options
``SecondOptional | Minute | Hour | Dom | Month | Dow | Descriptor``) after refusing any schedule
that mentions ``@every``; :func:`parse_cron` accepts the same language, minus the optional seconds
field (a TaskSchedule has five fields, as ``clrk dev`` runs them):

- five fields, ``minute hour day-of-month month day-of-week``, each a comma list of ``*``, ``?``
  (same as ``*``), ``N``, ``N-M``, with an optional ``/STEP`` (``N/STEP`` means ``N-max/STEP``);
  months may be ``jan``-``dec``, days of week ``sun``-``sat`` (0-6: no 7), in any case;
- no ``L``, ``W`` or ``#`` (robfig has none of them);
- the descriptors ``@yearly``, ``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``
  and ``@hourly`` (``@every`` is refused by the PingSource);
- a ``CRON_TZ=Zone`` (or ``TZ=Zone``) prefix, which names the time zone the fields are read in.

Days follow robfig (and Vixie cron): when day-of-month and day-of-week are both restricted, a day
matching either runs; when one of them starts with ``*`` or ``?`` (without a step above 1), both
must match. :attr:`CronSchedule.expression` spells a parsed schedule as a plain five-field
expression of explicit values, which croniter evaluates the same way with ``day_or``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DESCRIPTORS", "CronSchedule", "parse_cron"]

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""robfig's descriptors, as five fields (robfig's own expansion, seconds left out)."""

_MONTHS = {
    name: number
    for number, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_DAYS = {name: number for number, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, _DAYS),
)
_INT = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.Atoi takes


@dataclass(frozen=True)
class CronSchedule:
    """A parsed schedule: the values each field allows."""

    fields: tuple[tuple[int, ...], ...]
    """Allowed minutes, hours, days of month, months and days of week, ascending."""
    day_or: bool
    """Whether a day runs when either of day-of-month and day-of-week matches (both restricted)."""
    location: str | None
    """The time zone of a ``CRON_TZ=``/``TZ=`` prefix, if the schedule had one."""
    cron: str
    """The schedule as written, without that prefix."""

    @property
    def expression(self) -> str:
        """Five fields of explicit values, for croniter (with :attr:`day_or`)."""
        return " ".join(",".join(str(value) for value in values) for values in self.fields)


def _number(text: str, names: dict[str, int], whole: str) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if not _INT.match(text):
        raise ValueError(f"{text!r} is not a number{' or a name' if names else ''} (in {whole!r})")
    value = int(text)
    if value < 0:
        raise ValueError(f"negative number ({value}) not allowed (in {whole!r})")
    return value


def _range(part: str, field: tuple[str, int, int, dict[str, int]]) -> tuple[set[int], bool]:
    """robfig's ``getRange``: the values of one comma-separated part, and whether it is a star."""
    name, low, high, names = field
    range_and_step = part.split("/")
    low_and_high = range_and_step[0].split("-")
    star = low_and_high[0] in ("*", "?")
    if star:
        start, end = low, high
    else:
        start = _number(low_and_high[0], names, part)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _number(low_and_high[1], names, part)
        else:
            raise ValueError(f"too many hyphens in {part!r}")
    step = 1
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], {}, part)
        if len(low_and_high) == 1:
            end = high  # "N/step" means "N-max/step"
        star = star and step <= 1
    elif len(range_and_step) > 2:
        raise ValueError(f"too many slashes in {part!r}")
    if start < low:
        raise ValueError(f"{name} {start} is below {low} (in {part!r})")
    if end > high:
        raise ValueError(f"{name} {end} is above {high} (in {part!r})")
    if start > end:
        raise ValueError(f"{name} range {start}-{end} runs backwards (in {part!r})")
    if step == 0:
        raise ValueError(f"a step must be a positive number (in {part!r})")
    return set(range(start, end + 1, step)), star


def _split_location(text: str) -> tuple[str | None, str]:
    if not text.startswith(("TZ=", "CRON_TZ=")):
        return None, text
    head, space, rest = text.partition(" ")
    if not space:
        raise ValueError(f"expected a schedule after {head!r}")
    return head.partition("=")[2], rest.strip()


def parse_cron(text: str) -> CronSchedule:
    """Parse ``text`` as a PingSource would, with five fields; :class:`ValueError` saying why not."""
    if not text:
        raise ValueError("empty schedule")
    if "@every" in text:
        raise ValueError("@every is not supported (Knative's PingSource refuses it): use five cron fields")
    location, cron = _split_location(text)
    spec = cron
    if cron.startswith("@"):
        if cron not in DESCRIPTORS:
            raise ValueError(f"unknown descriptor {cron!r} (known: {', '.join(DESCRIPTORS)})")
        spec = DESCRIPTORS[cron]
    parts = spec.split()
    if len(parts) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(parts)}"
            + (": a seconds field is not supported" if len(parts) == 6 else "")
        )
    values: list[tuple[int, ...]] = []
    stars: list[bool] = []
    for part_text, field in zip(parts, _FIELDS, strict=True):
        allowed: set[int] = set()
        star = False
        for part in part_text.split(","):
            found, is_star = _range(part, field)
            allowed |= found
            star = star or is_star
        values.append(tuple(sorted(allowed)))
        stars.append(star)
    day_or = not (stars[2] or stars[4])
    return CronSchedule(tuple(values), day_or, location, cron)
