"""Retention: a completed export's file is kept EXPORT_RETENTION_HOURS after the export finished."""

from __future__ import annotations

import uuid

from services.export.exporter import FILE_PURPOSE
from shared import storage


def delete_expired_exports(cur, kind: str, retention_hours: int) -> list[uuid.UUID]:
    """Delete the files of exports that completed more than `retention_hours` ago (the task row stays, so
    its download answers 410 Gone); returns their tasks."""
    return storage.delete_expired_files(cur, kind=kind, purpose=FILE_PURPOSE, retention_hours=retention_hours)
