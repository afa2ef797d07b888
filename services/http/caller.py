"""Who is calling: what the gateway's authentication puts in `req.context.caller` for every /api/ request,
and all a domain's resources may read of it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """The organization an API key belongs to, and the key's public prefix."""

    organization_id: uuid.UUID
    key_prefix: str

    @property
    def requested_by(self) -> str:
        """Who asked, as the task's events record it (their `actor` column): the API key's prefix."""
        return f"api:{self.key_prefix}"
