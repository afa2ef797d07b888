"""The export worker's actors (run with `dramatiq services.export.actors --queues export`), and the
retention job that periodiq schedules (`periodiq services.control.actors services.export.actors`)."""

from __future__ import annotations

import logging

import dramatiq
from periodiq import cron

from services import export
from services.export.exporter import ExportJob
from services.export.exports import Exports
from shared.kinds import task_actor
from shared.runtime import runtime

logger = logging.getLogger(__name__)

_rt = runtime()


# Exports the task's range from its checkpoint until it completes, pauses or is revoked.
run_export = task_actor(export.KIND_SPEC, lambda: ExportJob(_rt.db, _rt.settings.export_batch_rows,
                                                             _rt.settings.export_parallel_pages), _rt)


# Running it twice (two schedulers, periodiq has no lock) deletes nothing more: the second finds no files.
@dramatiq.actor(queue_name=export.QUEUE, periodic=cron("*/10 * * * *"), max_retries=0)
def delete_expired_export_files() -> None:
    """Delete the files of exports finished more than EXPORT_RETENTION_HOURS ago."""
    deleted = Exports(_rt.db, _rt.broker).delete_expired_files(_rt.settings.export_retention_hours)
    if deleted:
        logger.info("deleted the files of %d expired export(s)", len(deleted))
