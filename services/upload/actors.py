"""The upload worker's actor (run with `dramatiq services.upload.actors --queues upload`), and the retention
job that periodiq schedules (`periodiq services.control.actors services.export.actors services.upload.actors`)."""

from __future__ import annotations

import logging

import dramatiq
from periodiq import cron

from services import upload
from services.upload.copy_lines import BatchLimits
from services.upload.importer import UploadJob
from shared import storage
from shared.kinds import task_actor
from shared.runtime import runtime
from shared.tasks import TaskState

logger = logging.getLogger(__name__)

_rt = runtime()


# Imports the task's file from its checkpoint until it completes, pauses or is revoked.
run_upload = task_actor(upload.KIND_SPEC, lambda: UploadJob(_rt.db, BatchLimits.from_settings(_rt.settings),
                                                            streams=_rt.settings.upload_copy_streams), _rt)


# Running it twice (two schedulers, periodiq has no lock) deletes nothing more: the second finds no files.
@dramatiq.actor(queue_name=upload.QUEUE, periodic=cron("*/10 * * * *"), max_retries=0)
def delete_expired_upload_files() -> None:
    """Delete the source files of uploads completed more than UPLOAD_FILE_RETENTION_HOURS ago."""
    with _rt.db.transaction() as cur:
        deleted = storage.delete_files_of_finished_tasks(cur, purpose=upload.FILE_PURPOSE, kind=upload.KIND,
                                                         state=TaskState.COMPLETED,
                                                         hours=_rt.settings.upload_file_retention_hours)
    if deleted:
        logger.info("deleted the source files of %d expired upload(s)", len(deleted))
