"""The upload worker's actor (run with `dramatiq services.upload.actors --queues upload`), and the retention
job that periodiq schedules (`periodiq services.control.actors services.export.actors services.upload.actors`)."""

from __future__ import annotations

import logging

import dramatiq
from periodiq import cron

from services import upload
from services.upload.importer import BatchLimits, UploadJob
from shared import storage
from shared.batch_runner import BatchRunner
from shared.runtime import runtime

logger = logging.getLogger(__name__)

_rt = runtime()


@dramatiq.actor(queue_name=upload.QUEUE, actor_name=upload.ACTOR, max_retries=0,
                time_limit=7 * 24 * 3600 * 1000, controls_task=True)
def run_upload(task_id: str) -> None:
    """Import the task's file from its checkpoint until it completes, pauses or is revoked."""
    job = UploadJob(_rt.db, BatchLimits.from_settings(_rt.settings))
    BatchRunner(_rt.db, _rt.broker, _rt.settings).run(job, task_id)


# Running it twice (two schedulers, periodiq has no lock) deletes nothing more: the second finds no files.
@dramatiq.actor(queue_name=upload.QUEUE, periodic=cron("*/10 * * * *"), max_retries=0)
def delete_expired_upload_files() -> None:
    """Delete the source files of uploads completed more than UPLOAD_FILE_RETENTION_HOURS ago."""
    with _rt.db.transaction() as cur:
        deleted = storage.delete_expired_files(cur, kind=upload.KIND, purpose=upload.FILE_PURPOSE,
                                               retention_hours=_rt.settings.upload_file_retention_hours)
    if deleted:
        logger.info("deleted the source files of %d expired upload(s)", len(deleted))
