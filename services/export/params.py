"""The export's query parameters: which responses (a submitted_at range, optionally one form) to export."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

PARAMETERS = ("from_date", "to_date", "form_id")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}.*")
# An unencoded '+' of a UTC offset arrives as a space ("...T10:00:00 05:30"): read it as the '+' it was.
_OFFSET_PLUS_AS_SPACE = re.compile(r"(.*[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?) (\d{2}(?::?\d{2})?)")
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9_.-]+")


class InvalidParameter(ValueError):
    """A query parameter is missing, malformed, repeated or unknown; `parameter` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class ExportRange:
    """Responses submitted from `submitted_from` through `submitted_to` (both inclusive, UTC)."""

    from_date: str
    to_date: str
    submitted_from: datetime
    submitted_to: datetime
    form_id: str | None = None

    def to_params(self) -> dict[str, Any]:
        """The task's params: what the caller asked for and the exact bounds the job uses."""
        return {
            "from_date": self.from_date,
            "to_date": self.to_date,
            "form_id": self.form_id,
            "submitted_from": self.submitted_from.isoformat(),
            "submitted_to": self.submitted_to.isoformat(),
            "filename": self.filename,
        }

    @property
    def filename(self) -> str:
        """export-[<form>-]<from>-<to>.csv, with whole days as YYYY-MM-DD and moments as UTC basic format."""
        parts = ["export"]
        if self.form_id:
            parts.append(_UNSAFE_IN_FILENAME.sub("_", self.form_id)[:40])
        parts.append(_filename_part(self.from_date, self.submitted_from))
        parts.append(_filename_part(self.to_date, self.submitted_to))
        return "-".join(parts) + ".csv"


def _filename_part(raw: str, moment: datetime) -> str:
    if _DAY.fullmatch(raw.strip()):
        return raw.strip()
    return moment.strftime("%Y%m%dT%H%M%S") + "Z"


def parse_export_query(query: Mapping[str, str | list[str]]) -> ExportRange:
    """The range the query asks for. A date (YYYY-MM-DD) means its whole UTC day; a date-time without an
    offset is UTC. Raises InvalidParameter for an unknown, repeated, missing or malformed parameter, or
    a range that ends before it starts."""
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown query parameter(s): {', '.join(unknown)}; "
                                           f"allowed: {', '.join(PARAMETERS)}")
    values = {}
    for name in PARAMETERS:
        value = query.get(name)
        if isinstance(value, list):
            raise InvalidParameter(name, f"{name} is given more than once")
        if value is not None and "\x00" in value:
            raise InvalidParameter(name, f"{name} must not contain NUL characters")
        values[name] = None if value is None else value.strip()
    for name in ("from_date", "to_date"):
        # The original API documented its URL as `?from_date={}&to_date={}/`: a trailing slash is tolerated.
        if values[name] and values[name].endswith("/"):
            values[name] = values[name][:-1]
        if not values[name]:
            raise InvalidParameter(name, f"{name} is required: a date (YYYY-MM-DD) or an ISO-8601 date-time")
    if values["form_id"] == "":
        raise InvalidParameter("form_id", "form_id must not be empty (leave it out to export every form)")
    start = _moment("from_date", values["from_date"], end_of_day=False)
    end = _moment("to_date", values["to_date"], end_of_day=True)
    if start > end:
        raise InvalidParameter("from_date",
                               f"from_date ({values['from_date']}) is after to_date ({values['to_date']})")
    return ExportRange(values["from_date"], values["to_date"], start, end, values["form_id"])


def _moment(name: str, value: str, *, end_of_day: bool) -> datetime:
    """The UTC moment `value` names; for a whole day, its first (or, with end_of_day, last) microsecond."""
    if _DAY.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise InvalidParameter(name, f"{name} {value!r} is not a calendar date") from None
        start = datetime.combine(day, time.min, tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end_of_day else start
    moment = None
    if _DATE_TIME.fullmatch(value):
        try:
            moment = datetime.fromisoformat(_OFFSET_PLUS_AS_SPACE.sub(r"\1+\2", value))
        except ValueError:
            pass
    if moment is None:
        raise InvalidParameter(name, f"{name} {value!r} is neither a date (YYYY-MM-DD) nor an ISO-8601 "
                                     "date-time (e.g. 2024-01-31T18:30:00+05:30; encode '+' as %2B)")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(name, f"{name} {value!r} is outside the years 1 to 9999 once in UTC") from None
