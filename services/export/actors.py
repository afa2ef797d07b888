"""The export worker's actors (run with `dramatiq services.export.actors --queues export`), and the
retention job that periodiq schedules (`periodiq services.control.actors services.export.actors`)."""

from __future__ import annotations

import logging

import dramatiq
from periodiq import cron

from services import export
from services.export.exporter import ExportJob
from services.export.exports import Exports
from shared.batch_runner import BatchRunner
from shared.runtime import runtime

logger = logging.getLogger(__name__)

_rt = runtime()


@dramatiq.actor(queue_name=export.QUEUE, actor_name=export.ACTOR, max_retries=0,
                time_limit=7 * 24 * 3600 * 1000, controls_task=True)
def run_export(task_id: str) -> None:
    """Export the task's range from its checkpoint until it completes, pauses or is revoked."""
    BatchRunner(_rt.db, _rt.broker, _rt.settings).run(ExportJob(_rt.settings.export_batch_rows), task_id)


# Running it twice (two schedulers, periodiq has no lock) deletes nothing more: the second finds no files.
@dramatiq.actor(queue_name=export.QUEUE, periodic=cron("*/10 * * * *"), max_retries=0)
def delete_expired_export_files() -> None:
    """Delete the files of exports finished more than EXPORT_RETENTION_HOURS ago."""
    deleted = Exports(_rt.db, _rt.broker).delete_expired_files(_rt.settings.export_retention_hours)
    if deleted:
        logger.info("deleted the files of %d expired export(s)", len(deleted))
