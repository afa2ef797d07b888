"""Retention: a completed export's file is kept EXPORT_RETENTION_HOURS after the export finished."""

from __future__ import annotations

import uuid

from services.export.exporter import FILE_PURPOSE

# Chunks go with their file (ON DELETE CASCADE); the task row stays, so its download can answer 410 Gone.
_DELETE_EXPIRED = """
DELETE FROM stored_files f USING tasks t
WHERE f.task_id = t.id AND f.purpose = %(purpose)s
  AND t.kind = %(kind)s AND t.state = 'completed'
  AND t.finished_at < now() - make_interval(hours => %(hours)s)
RETURNING f.task_id
"""


def delete_expired_exports(cur, kind: str, retention_hours: int) -> list[uuid.UUID]:
    """Delete the files of exports that completed more than `retention_hours` ago; returns their tasks."""
    cur.execute(_DELETE_EXPIRED, {"kind": kind, "purpose": FILE_PURPOSE, "hours": retention_hours})
    return [row["task_id"] for row in cur.fetchall()]
