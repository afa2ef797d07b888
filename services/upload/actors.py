"""The upload worker's actor (run with `dramatiq services.upload.actors --queues upload`)."""

from __future__ import annotations

import dramatiq

from services import upload
from services.upload.importer import BatchLimits, UploadJob
from shared.batch_runner import BatchRunner
from shared.runtime import runtime

_rt = runtime()


@dramatiq.actor(queue_name=upload.QUEUE, actor_name=upload.ACTOR, max_retries=0,
                time_limit=7 * 24 * 3600 * 1000, controls_task=True)
def run_upload(task_id: str) -> None:
    """Import the task's file from its checkpoint until it completes, pauses or is revoked."""
    job = UploadJob(_rt.db, BatchLimits.from_settings(_rt.settings))
    BatchRunner(_rt.db, _rt.broker, _rt.settings).run(job, task_id)
